"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.bootstrap import System
from tests.integration.allocation_world import write_side


@pytest.fixture
def clocked_system(database_url: str, schema: str) -> Iterator[System]:
    """The write side of this test's database on a test clock started at ``NOW`` (no read
    pool opened): what the allocation, saga and reconciler tests stage their world on."""
    built = write_side(database_url, schema)
    yield built
    built.close_write_side()
