"""The process managers' inboxes, kept from the write side.

The provisioning saga, billing and the force-release policy take their triggers from tables
that the worker fills by following its contexts' notification logs in PostgreSQL, the way
eventsourcing's process applications do: each follow reads the next notifications after the
inbox's saved position and writes their rows and the new position in one transaction. Neither
the relay, the broker nor the projector is on the way, and no read-model rebuild touches these
tables (ARCHITECTURE section 5).

- ``allocation_work``: one row per allocation with its state, whether the saga has a step to
  take (``due_at``), the worker's lease and backoff, and what billing selects on.
- ``tenant_depletions``: one row per ledger ``BalanceDepleted``, until the policy handled it.

Following is safe with several workers: the inbox's position row is locked for the follow
(another worker skips it, never waits), every row carries the aggregate version it was
written from, and an older version never overwrites a newer one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import Notification
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from domain.allocation import RUNNING, Allocation
from domain.allocation import T as ALLOCATION_TOPICS
from domain.ledger_events import BalanceDepleted
from handlers.base import ContextApplication

FOLLOW_BATCH = 5000
SAGA, DEPLETIONS = "saga", "depletions"


@dataclass(frozen=True)
class WorkRow:
    """What the process managers need of one allocation, from the aggregate itself."""

    allocation_id: UUID
    tenant_id: UUID
    state: str
    version: int
    due: bool
    started_at: datetime | None
    billing_ends_at: datetime | None
    billed_through: datetime | None

    @classmethod
    def of(cls, a: Allocation) -> WorkRow:
        ends = a.billing_ends_at and a.billing_ends_at.replace(microsecond=0)  # windows: whole s
        return cls(
            a.id, a.tenant_id, a.state, a.version, a.wants_saga, a.started_at, ends,
            a.billed_through,
        )  # fmt: skip


UPSERT_WORK = (
    "INSERT INTO allocation_work AS w (allocation_id, tenant_id, state, version, due_at, "
    "started_at, billing_ends_at, billed_through) SELECT id, tenant, state, version, "
    "CASE WHEN due THEN now() END, started, ends, billed FROM unnest(%s::uuid[], %s::uuid[], "
    "%s::text[], %s::bigint[], %s::bool[], %s::timestamptz[], %s::timestamptz[], "
    "%s::timestamptz[]) AS u(id, tenant, state, version, due, started, ends, billed) "
    "ON CONFLICT (allocation_id) DO UPDATE SET state = EXCLUDED.state, "
    "version = EXCLUDED.version, started_at = EXCLUDED.started_at, "
    "billing_ends_at = EXCLUDED.billing_ends_at, billed_through = EXCLUDED.billed_through, "
    "due_at = CASE WHEN EXCLUDED.due_at IS NULL THEN NULL "
    "WHEN w.state = EXCLUDED.state THEN COALESCE(w.due_at, EXCLUDED.due_at) "
    "ELSE EXCLUDED.due_at END, "
    "attempts = CASE WHEN w.state = EXCLUDED.state THEN w.attempts ELSE 0 END, "
    "last_error = CASE WHEN w.state = EXCLUDED.state THEN w.last_error END "
    "WHERE w.version < EXCLUDED.version"
)
"""Within one state the worker's lease or backoff (``due_at``) and its attempts stand; a new
state is due at once (if it wants a step) with attempts reset. Never back to an older version."""


async def record_work(conn: AsyncConnection[Any], rows: Sequence[WorkRow]) -> None:
    columns = [list(c) for c in zip(*(astuple(r) for r in rows), strict=True)]
    if columns:
        await conn.execute(UPSERT_WORK, columns)


async def record_depletions(
    conn: AsyncConnection[Any], depletions: Sequence[tuple[UUID, int, datetime]]
) -> None:
    """(tenant, ledger version, at) of each depletion; the version names it, so a second
    follow of the same notification adds nothing."""
    if depletions:
        await conn.execute(
            "INSERT INTO tenant_depletions (tenant_id, ledger_version, at) SELECT * FROM "
            "unnest(%s::uuid[], %s::bigint[], %s::timestamptz[]) ON CONFLICT DO NOTHING",
            [list(c) for c in zip(*depletions, strict=True)],
        )


Write = Callable[[AsyncConnection[Any], Sequence[Notification]], Awaitable[None]]


async def follow(
    pool: AsyncConnectionPool,
    inbox: str,
    app: ContextApplication,
    write: Write,
    topics: Sequence[str] = (),
    batch: int = FOLLOW_BATCH,
) -> int:
    """One step of ``inbox`` along ``app``'s notification log (only ``topics``, if given):
    ``write`` the next notifications' rows and save the new position, in one transaction.
    Returns how many notifications were read (0: caught up, or another worker is following).

    With ``topics`` the read stops at the log's head as it was before the read, so the
    position passes over everything read, matching or not: a notification id at or below a
    committed head is itself committed (the store assigns ids under its table lock)."""
    async with pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "SELECT position FROM inbox_positions WHERE inbox = %s FOR UPDATE SKIP LOCKED",
                (inbox,),
            )
        ).fetchone()
        if row is None:
            return 0
        start = int(row[0])
        head = await asyncio.to_thread(app.recorder.max_notification_id) if topics else None
        notes = await asyncio.to_thread(
            app.recorder.select_notifications, start + 1, batch, head, topics
        )
        if notes:
            await write(conn, notes)
        end = notes[-1].id if notes else start
        if head is not None and len(notes) < batch:
            end = max(end, head)
        if end != start:
            await conn.execute(
                "UPDATE inbox_positions SET position = %s, updated_at = now() WHERE inbox = %s",
                (end, inbox),
            )
        return len(notes)


async def follow_all(follow_once: Callable[[], Awaitable[int]], batch: int = FOLLOW_BATCH) -> int:
    """Follow until caught up (a step that reads less than a whole batch)."""
    total = 0
    while (read := await follow_once()) >= batch:
        total += read
    return total + read


def saga_inbox(
    pool: AsyncConnectionPool, compute: ContextApplication
) -> Callable[[], Awaitable[int]]:
    """The follow of the compute log into ``allocation_work``."""

    async def write(conn: AsyncConnection[Any], notes: Sequence[Notification]) -> None:
        ids = [UUID(str(n.originator_id)) for n in notes if n.topic.startswith(ALLOCATION_TOPICS)]
        found = await asyncio.to_thread(compute.find_many, Allocation, ids)
        await record_work(conn, [WorkRow.of(a) for a in found.values()])

    return lambda: follow_all(lambda: follow(pool, SAGA, compute, write))


def depletions_inbox(
    pool: AsyncConnectionPool, ledgers: ContextApplication
) -> Callable[[], Awaitable[int]]:
    """The follow of the ledger log's ``BalanceDepleted`` into ``tenant_depletions``."""

    async def write(conn: AsyncConnection[Any], notes: Sequence[Notification]) -> None:
        events = [cast(BalanceDepleted, ledgers.mapper.to_domain_event(n)) for n in notes]
        await record_depletions(conn, [(e.tenant_id, e.originator_version, e.at) for e in events])

    topics = (BalanceDepleted.TOPIC,)
    return lambda: follow_all(lambda: follow(pool, DEPLETIONS, ledgers, write, topics))


# What the process managers read. These are hints, never the truth: each worker loads the
# aggregate and decides there, so a row behind the event store costs a wasted step at worst.


async def take_due_work(
    conn: AsyncConnection[Any], limit: int, lease_seconds: float
) -> list[tuple[UUID, str]]:
    """Lease up to ``limit`` due saga rows, longest due first: each is not due again for
    ``lease_seconds`` (unless its state moves on), so another worker skips it. Rows another
    taker holds locked are skipped, never waited for."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH due AS (SELECT allocation_id FROM allocation_work WHERE due_at <= now() "
            "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE allocation_work AS w SET due_at = now() + %s * interval '1 second', "
            "attempts = w.attempts + 1 FROM due WHERE w.allocation_id = due.allocation_id "
            "RETURNING w.allocation_id, w.state",
            (limit, lease_seconds),
        )
        return [(row[0], row[1]) for row in await cur.fetchall()]


async def back_off_work(
    conn: AsyncConnection[Any], allocation_id: UUID, state: str, error: str, cap_seconds: float
) -> None:
    """A failed step: due again after 2^attempts seconds (at most ``cap_seconds``), if the row
    is still in ``state``."""
    await conn.execute(
        "UPDATE allocation_work SET last_error = %s, due_at = now() + "
        "least(power(2, attempts), %s) * interval '1 second' "
        "WHERE allocation_id = %s AND due_at IS NOT NULL AND state = %s",
        (error, cap_seconds, allocation_id, state),
    )


async def running_allocations(conn: AsyncConnection[Any], tenant_id: UUID | None) -> list[UUID]:
    """The tenant's running allocations (every tenant's when None), oldest first."""
    cur = await conn.execute(
        "SELECT allocation_id FROM allocation_work WHERE state = %s "
        "AND (%s::uuid IS NULL OR tenant_id = %s::uuid) ORDER BY started_at, allocation_id",
        (RUNNING, tenant_id, tenant_id),
    )
    return [row[0] for row in await cur.fetchall()]


async def billable_allocations(
    conn: AsyncConnection[Any],
    limit: int,
    now: datetime,
    after: tuple[UUID, UUID] | None = None,
) -> list[tuple[UUID, UUID]]:
    """(tenant, allocation) of allocations with a window to bill at ``now``: running ones with a
    closed minute not billed yet, ended ones not billed up to their end. Ordered by tenant, so
    a batch touches few ledgers; keyset after the last pair of the previous page."""
    tenant, last = after or (None, None)
    cur = await conn.execute(
        "SELECT tenant_id, allocation_id FROM allocation_work WHERE started_at IS NOT NULL AND ("
        "(billing_ends_at IS NULL AND COALESCE(billed_through, started_at) "
        "< date_trunc('minute', %s::timestamptz)) OR (billing_ends_at IS NOT NULL AND "
        "(billed_through IS NULL OR billed_through < billing_ends_at))) "
        "AND (%s::uuid IS NULL OR (tenant_id, allocation_id) > (%s::uuid, %s::uuid)) "
        "ORDER BY tenant_id, allocation_id LIMIT %s",
        (now, tenant, tenant, last, limit),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def pending_depletions(
    conn: AsyncConnection[Any], limit: int = 500
) -> list[tuple[UUID, int]]:
    """(tenant, ledger version) of each depletion not handled yet, oldest first."""
    cur = await conn.execute(
        "SELECT tenant_id, ledger_version FROM tenant_depletions WHERE handled_at IS NULL "
        "ORDER BY at, tenant_id, ledger_version LIMIT %s",
        (limit,),
    )
    return [(row[0], int(row[1])) for row in await cur.fetchall()]


async def mark_depletion_handled(
    conn: AsyncConnection[Any], tenant_id: UUID, ledger_version: int
) -> None:
    await conn.execute(
        "UPDATE tenant_depletions SET handled_at = now() "
        "WHERE tenant_id = %s AND ledger_version = %s AND handled_at IS NULL",
        (tenant_id, ledger_version),
    )
