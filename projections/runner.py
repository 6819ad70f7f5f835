"""Applies batches of events to a read model: effects, dedupe marks and offsets commit together.

Exactly-once in effect: the relay may deliver an event twice (at-least-once), and a projection
killed before its commit sees the batch again; the (subject, sequence) mark written in the same
transaction as the effect makes the second delivery a no-op. An event whose subject has an event
in quarantine is kept there too, unapplied (``projections/isolation.py`` finds the event that
fails a batch and quarantines it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, sql

from projections import quarantine
from projections.envelope import Envelope

Apply = Callable[[AsyncCursor[Any], Sequence[Envelope]], Awaitable[None]]
"""Applies a run of consecutive new events of one type: one statement for all of them."""


@dataclass
class Projection:
    """A read model: its name, the topics it reads, and one apply function per event type.
    An apply function gets consecutive events of its type as a list, in log order."""

    name: str
    topics: tuple[str, ...]
    tables: tuple[str, ...] = ()
    handlers: dict[str, Apply] = field(default_factory=dict)
    every_event: Apply | None = None  # for event types without a handler of their own

    def on(self, ce_type: str) -> Callable[[Apply], Apply]:
        def register(fn: Apply) -> Apply:
            self.handlers[ce_type] = fn
            return fn

        return register


async def apply_batch(
    conn: AsyncConnection[Any],
    projection: Projection,
    epoch: str,
    batch: Sequence[Envelope],
    before_commit: Callable[[], None] = lambda: None,
) -> int:
    """Apply ``batch`` in one transaction; returns how many events were new."""
    async with conn.transaction(), conn.cursor() as cur:
        seen = await _current_sequences(cur, projection.name, {e.subject for e in batch})
        fresh = await _hold_back(cur, projection.name, _new_events(batch, seen))
        await apply_events(cur, projection, fresh)
        await save_marks(cur, projection.name, seen)
        await save_offsets(cur, projection.name, epoch, batch)
        before_commit()
    return len(fresh)


async def apply_events(cur: AsyncCursor[Any], projection: Projection, envs: list[Envelope]) -> None:
    """Run the handlers over ``envs``: each run of one event type in one call, in order."""
    for ce_type, run in groupby(envs, key=attrgetter("ce_type")):
        handler = projection.handlers.get(ce_type, projection.every_event)
        if handler is not None:
            await handler(cur, list(run))


async def _hold_back(
    cur: AsyncCursor[Any], projection: str, fresh: list[Envelope]
) -> list[Envelope]:
    """Keep back the events of subjects blocked in quarantine; returns the rest."""
    if not fresh:
        return fresh
    blocked = await quarantine.open_subjects(cur, projection, {e.subject for e in fresh})
    for env in (e for e in fresh if e.subject in blocked):
        await quarantine.keep(cur, projection, env, quarantine.HELD, 0, held=True)
    return [e for e in fresh if e.subject not in blocked]


def _new_events(batch: Sequence[Envelope], seen: dict[str, int]) -> list[Envelope]:
    """The events past each subject's mark, in order; ``seen`` moves to the new marks."""
    fresh = []
    for env in batch:
        if env.sequence > seen.get(env.subject, 0):
            fresh.append(env)
            seen[env.subject] = env.sequence
    return fresh


async def _current_sequences(
    cur: AsyncCursor[Any], projection: str, subjects: set[str]
) -> dict[str, int]:
    await cur.execute(
        "SELECT subject, sequence FROM projection_subjects "
        "WHERE projection=%s AND subject = ANY(%s) FOR UPDATE",
        (projection, list(subjects)),
    )
    return {row[0]: int(row[1]) for row in await cur.fetchall()}


async def save_marks(cur: AsyncCursor[Any], projection: str, seen: dict[str, int]) -> None:
    """One statement for the whole batch: the marks travel as two arrays."""
    await cur.execute(
        "INSERT INTO projection_subjects (projection, subject, sequence) "
        "SELECT %s, s, q FROM unnest(%s::text[], %s::bigint[]) AS m(s, q) "
        "ON CONFLICT (projection, subject) DO UPDATE SET sequence = EXCLUDED.sequence "
        "WHERE projection_subjects.sequence < EXCLUDED.sequence",
        (projection, list(seen), list(seen.values())),
    )


async def save_offsets(
    cur: AsyncCursor[Any], projection: str, epoch: str, batch: Sequence[Envelope]
) -> None:
    await save_positions(cur, projection, epoch, [(e.topic, e.partition, e.offset) for e in batch])


async def save_positions(
    cur: AsyncCursor[Any], projection: str, epoch: str, read: Sequence[tuple[str, int, int]]
) -> None:
    """Move the saved offsets past the (topic, partition, offset) positions ``read``."""
    nexts: dict[tuple[str, int], int] = {}
    for topic, partition, offset in read:
        if partition < 0:  # replayed from the event store, not read from Kafka
            continue
        nexts[(topic, partition)] = max(nexts.get((topic, partition), 0), offset + 1)
    await cur.executemany(
        "INSERT INTO projection_offsets (projection, broker_epoch, topic, kafka_partition, "
        "next_offset) VALUES (%s, %s, %s, %s, %s) ON CONFLICT "
        "(projection, broker_epoch, topic, kafka_partition) DO UPDATE "
        "SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset)",
        [(projection, epoch, t, p, o) for (t, p), o in nexts.items()],
    ) if nexts else None


async def saved_offsets(
    conn: AsyncConnection[Any], projection: str, epoch: str
) -> dict[tuple[str, int], int]:
    cur = await conn.execute(
        "SELECT topic, kafka_partition, next_offset FROM projection_offsets "
        "WHERE projection=%s AND broker_epoch=%s",
        (projection, epoch),
    )
    return {(r[0], int(r[1])): int(r[2]) for r in await cur.fetchall()}


async def forget_other_epochs(conn: AsyncConnection[Any], projection: str, epoch: str) -> None:
    await conn.execute(
        "DELETE FROM projection_offsets WHERE projection=%s AND broker_epoch<>%s",
        (projection, epoch),
    )


async def reached(conn: AsyncConnection[Any], projection: str, subject: str, sequence: int) -> bool:
    """Read-your-writes: has this read model applied ``subject`` up to ``sequence``?"""
    cur = await conn.execute(
        "SELECT sequence FROM projection_subjects WHERE projection=%s AND subject=%s",
        (projection, subject),
    )
    row = await cur.fetchone()
    return row is not None and int(row[0]) >= sequence


async def rebuild(conn: AsyncConnection[Any], projection: Projection) -> None:
    """Forget the read model, its marks and offsets, and close its quarantine (the replay from
    0 meets those events again)."""
    async with conn.transaction(), conn.cursor() as cur:
        await quarantine.resolve_projection(cur, projection.name, "rebuilt")
        for table in projection.tables:
            await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        for bookkeeping in ("projection_subjects", "projection_offsets"):
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE projection = %s").format(sql.Identifier(bookkeeping)),
                (projection.name,),
            )
