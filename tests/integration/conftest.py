"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from infra.bootstrap import System
from infra.db import conninfo, migrate
from tests.integration.allocation_world import write_side


@pytest.fixture
def clocked_system(database_url: str, schema: str) -> Iterator[System]:
    """The write side of this test's database on a test clock started at ``NOW`` (no read
    pool opened): what the allocation, saga and reconciler tests stage their world on."""
    built = write_side(database_url, schema)
    yield built
    built.close_write_side()


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection to this test's migrated schema."""
    migrate(database_url, schema)
    async with await connect(database_url, schema) as conn:
        yield conn


async def connect(database_url: str, schema: str) -> AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(database_url, schema), autocommit=True)
