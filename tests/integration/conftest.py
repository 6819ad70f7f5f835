"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from infra.bootstrap import System
from infra.db import conninfo, migrate
from infra.memory import build_memory_write_side
from tests.clock import TestClock
from tests.integration.allocation_world import NOW, WriteSide, write_side


@pytest.fixture
def clocked_system(database_url: str, schema: str) -> Iterator[System]:
    """The write side of this test's database on a test clock started at ``NOW`` (no read
    pool opened): what the allocation, saga and reconciler tests stage their world on."""
    built = write_side(database_url, schema)
    yield built
    built.close_write_side()


@pytest.fixture(params=["postgres", "memory"])
def each_write_side(request: pytest.FixtureRequest) -> Iterator[WriteSide]:
    """The same tests on both write sides: PostgreSQL (``clocked_system``) and the in-memory
    one (infra/memory.py), so the saga's and reconciler's rules are checked on each."""
    if request.param == "memory":
        yield build_memory_write_side(TestClock(NOW))
        return
    yield request.getfixturevalue("clocked_system")


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection to this test's migrated schema."""
    migrate(database_url, schema)
    async with await connect(database_url, schema) as conn:
        yield conn


async def connect(database_url: str, schema: str) -> AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(database_url, schema), autocommit=True)
