"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.bootstrap import System, build_system
from infra.settings import Settings


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[System]:
    """The write side and an open read pool of this test's system, for driving the worker's
    passes or the handlers directly beside the roles under test."""
    built = build_system(settings)
    await built.open()
    yield built
    await built.close()
