"""The Stripe webhook's inbox in PostgreSQL (migration 0012): store a verified event once,
lease the due ones to the payments process manager, and record what became of each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

LEASE = timedelta(seconds=30)  # a taker that died lets its rows be taken again after this


@dataclass(frozen=True)
class Due:
    id: str
    livemode: bool
    payload: dict[str, Any]
    attempts: int


async def store(conn: AsyncConnection[Any], event: dict[str, Any], now: datetime) -> bool:
    """Keep a verified event (True when it is new; a redelivery is only counted)."""
    created = datetime.fromtimestamp(_int(event.get("created")), UTC)
    cur = await conn.execute(
        "INSERT INTO stripe_events (id, type, livemode, created, payload, received_at, due_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
        "SET deliveries = stripe_events.deliveries + 1 RETURNING deliveries",
        (
            str(event["id"]), str(event.get("type", "")), event.get("livemode") is True,
            created, Jsonb(event), now, now,
        ),
    )  # fmt: skip
    row = await cur.fetchone()
    return row is not None and row[0] == 1


async def take_due(conn: AsyncConnection[Any], now: datetime, limit: int) -> list[Due]:
    """Lease up to ``limit`` due events, oldest first (as Stripe made them); rows another
    taker holds are skipped, never waited for."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH due AS (SELECT id FROM stripe_events WHERE state = 'pending' AND due_at <= %s "
            "ORDER BY created, received_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE stripe_events AS e SET due_at = %s, attempts = e.attempts + 1 FROM due "
            "WHERE e.id = due.id RETURNING e.id, e.livemode, e.payload, e.attempts, e.created",
            (now, limit, now + LEASE),
        )
        rows = sorted(await cur.fetchall(), key=lambda r: r[4])
    return [Due(r[0], r[1], r[2], r[3]) for r in rows]


async def finish(
    conn: AsyncConnection[Any], event_id: str, state: str, reason: str, now: datetime,
    payment_id: object = None,
) -> None:  # fmt: skip
    await conn.execute(
        "UPDATE stripe_events SET state = %s, reason = %s, finished_at = %s, payment_id = %s "
        "WHERE id = %s",
        (state, reason[:500], now, payment_id, event_id),
    )


async def defer(conn: AsyncConnection[Any], event_id: str, reason: str, due: datetime) -> None:
    await conn.execute(
        "UPDATE stripe_events SET reason = %s, due_at = %s WHERE id = %s AND state = 'pending'",
        (reason[:500], due, event_id),
    )


async def payments_since(conn: AsyncConnection[Any], since: datetime) -> list[Any]:
    """The payments that events made since ``since`` were applied to."""
    cur = await conn.execute(
        "SELECT DISTINCT payment_id FROM stripe_events WHERE state = 'applied' "
        "AND created >= %s AND payment_id IS NOT NULL",
        (since,),
    )
    return [row[0] for row in await cur.fetchall()]


async def counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT state, count(*) FROM stripe_events GROUP BY state")
    return {state: n for state, n in await cur.fetchall()}


def _int(value: object) -> int:
    return value if type(value) is int and 0 <= value < 2**40 else 0
