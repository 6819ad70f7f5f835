"""Keyset pagination against real PostgreSQL: stable under inserts, sorts, filters, scoping."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import AsyncConnection

from infra.db import conninfo, migrate
from projections.pagination import (
    InvalidCursorError,
    ListSpec,
    PageRequest,
    fetch_page,
)

pytestmark = pytest.mark.integration

SPEC = ListSpec("items", ("id", "tenant_id", "created_at", "name", "state"), ("created_at", "name"))
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
Row = tuple[UUID, UUID, datetime, str, str]


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[AsyncConnection[Any]]:
    migrate(database_url, schema)  # the signing secret lives in server_secrets
    async with await psycopg.AsyncConnection.connect(
        conninfo(database_url, schema), autocommit=True
    ) as conn:
        await conn.execute(
            "CREATE TABLE items (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, "
            "created_at timestamptz NOT NULL, name text NOT NULL, state text NOT NULL)"
        )
        yield conn


def make_rows(tenant: UUID, count: int, rng: random.Random, offset_days: int = 0) -> list[Row]:
    """Few distinct timestamps and names, so many rows tie and ``id`` has to break the ties."""
    return [
        (
            uuid4(),
            tenant,
            EPOCH + timedelta(days=offset_days, minutes=rng.randrange(40)),
            f"item-{rng.randrange(30):02d}",
            rng.choice(("ready", "busy")),
        )
        for _ in range(count)
    ]


async def insert(conn: AsyncConnection[Any], rows: list[Row]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s)", rows)


async def page_all(
    conn: AsyncConnection[Any], request: PageRequest, between: Any = None
) -> list[dict[str, Any]]:
    """Follow ``next_cursor`` to the end; ``between()`` runs after each page."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await fetch_page(conn, SPEC, replace(request, cursor=cursor))
        assert len(page.items) <= request.limit
        seen.extend(page.items)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
        if between is not None:
            await between()


def keys(items: list[dict[str, Any]], sort: str = "created_at") -> list[tuple[Any, UUID]]:
    return [(item[sort], item["id"]) for item in items]


async def test_paging_while_rows_are_inserted_sees_each_original_row_exactly_once(
    conn: AsyncConnection[Any], database_url: str, schema: str
) -> None:
    rng, tenant = random.Random(7), uuid4()
    original = make_rows(tenant, 500, rng)
    await insert(conn, original)
    inserted: list[Row] = []
    turns: asyncio.Queue[asyncio.Future[None] | None] = asyncio.Queue()

    async def writer() -> None:
        """Another connection inserts rows in the past, among ties, and in the future."""
        async with await psycopg.AsyncConnection.connect(
            conninfo(database_url, schema), autocommit=True
        ) as other:
            while (turn := await turns.get()) is not None:
                batch = [r for days in (-1, 0, 1) for r in make_rows(tenant, 3, rng, days)]
                await insert(other, batch)
                inserted.extend(batch)
                turn.set_result(None)

    async def between() -> None:
        """Hand the writer a turn and wait until its rows are committed."""
        turn = asyncio.get_running_loop().create_future()
        await turns.put(turn)
        await turn

    task = asyncio.create_task(writer())
    seen = await page_all(conn, PageRequest(tenant_id=tenant, limit=37), between)
    await turns.put(None)
    await task

    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)), "a row appeared twice"
    assert {row[0] for row in original} <= set(ids), "an original row was skipped"
    assert set(ids) <= {row[0] for row in original + inserted}
    assert keys(seen) == sorted(keys(seen)), "pages went backwards"
    assert len(inserted) >= 9 * 13  # the writer ran between every page (500 / 37 -> 14 pages)


async def test_descending_pages_are_the_whole_list_in_reverse(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    rows = make_rows(tenant, 120, random.Random(1))
    await insert(conn, rows)
    seen = await page_all(conn, PageRequest(tenant_id=tenant, direction="desc", limit=37))
    expected = sorted(((r[2], r[0]) for r in rows), reverse=True)
    assert keys(seen) == expected


async def test_sorting_by_another_field_ties_on_id(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    rows = make_rows(tenant, 120, random.Random(2))
    await insert(conn, rows)
    seen = await page_all(conn, PageRequest(tenant_id=tenant, sort="name", limit=11))
    assert keys(seen, "name") == sorted((r[3], r[0]) for r in rows)


async def test_an_equality_filter_pages_through_matching_rows_only(
    conn: AsyncConnection[Any],
) -> None:
    tenant = uuid4()
    rows = make_rows(tenant, 150, random.Random(3))
    await insert(conn, rows)
    request = PageRequest(tenant_id=tenant, filters={"state": "ready"}, limit=13)
    seen = await page_all(conn, request)
    assert {i["state"] for i in seen} == {"ready"}
    assert sorted(i["id"] for i in seen) == sorted(r[0] for r in rows if r[4] == "ready")


async def test_rows_of_another_tenant_never_appear_and_ops_lists_see_all(
    conn: AsyncConnection[Any],
) -> None:
    mine, theirs = uuid4(), uuid4()
    rng = random.Random(4)
    await insert(conn, make_rows(mine, 60, rng) + make_rows(theirs, 60, rng))
    seen = await page_all(conn, PageRequest(tenant_id=mine, limit=7))
    assert len(seen) == 60 and {i["tenant_id"] for i in seen} == {mine}
    everyone = await page_all(conn, PageRequest(tenant_id=None, limit=50))
    assert len(everyone) == 120


async def test_the_last_page_has_no_next_cursor(conn: AsyncConnection[Any]) -> None:
    tenant = uuid4()
    await insert(conn, make_rows(tenant, 10, random.Random(5)))
    page = await fetch_page(conn, SPEC, PageRequest(tenant_id=tenant, limit=10))
    assert len(page.items) == 10 and page.next_cursor is None
    empty = await fetch_page(conn, SPEC, PageRequest(tenant_id=uuid4()))
    assert empty.items == [] and empty.next_cursor is None


async def test_a_cursor_with_other_filters_or_tampered_is_refused(
    conn: AsyncConnection[Any],
) -> None:
    tenant = uuid4()
    await insert(conn, make_rows(tenant, 30, random.Random(6)))
    request = PageRequest(tenant_id=tenant, filters={"state": "ready"}, limit=3)
    cursor = (await fetch_page(conn, SPEC, request)).next_cursor
    assert cursor is not None
    others = [
        PageRequest(tenant_id=tenant, filters={"state": "busy"}, limit=3, cursor=cursor),
        PageRequest(tenant_id=tenant, limit=3, cursor=cursor),
        PageRequest(tenant_id=uuid4(), filters={"state": "ready"}, cursor=cursor),
        PageRequest(tenant_id=tenant, filters={"state": "ready"}, sort="name", cursor=cursor),
        PageRequest(tenant_id=tenant, filters={"state": "ready"}, cursor=cursor[:-2] + "xx"),
    ]
    for other in others:
        with pytest.raises(InvalidCursorError):
            await fetch_page(conn, SPEC, other)
    same_query_other_limit = replace(request, limit=50, cursor=cursor)
    assert (await fetch_page(conn, SPEC, same_query_other_limit)).items
