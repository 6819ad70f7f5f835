"""Applies batches of events to a read model: effects, dedupe marks and offsets commit together.

Exactly-once in effect: the relay may deliver an event twice (at-least-once), and a projection
killed before its commit sees the batch again; the (subject, sequence) mark written in the same
transaction as the effect makes the second delivery a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, sql

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
        fresh = _new_events(batch, seen)
        for ce_type, run in groupby(fresh, key=attrgetter("ce_type")):
            handler = projection.handlers.get(ce_type, projection.every_event)
            if handler is not None:
                await handler(cur, list(run))
        await _save_marks(cur, projection.name, seen)
        await _save_offsets(cur, projection.name, epoch, batch)
        before_commit()
    return len(fresh)


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


async def _save_marks(cur: AsyncCursor[Any], projection: str, seen: dict[str, int]) -> None:
    """One statement for the whole batch: the marks travel as two arrays."""
    await cur.execute(
        "INSERT INTO projection_subjects (projection, subject, sequence) "
        "SELECT %s, s, q FROM unnest(%s::text[], %s::bigint[]) AS m(s, q) "
        "ON CONFLICT (projection, subject) DO UPDATE SET sequence = EXCLUDED.sequence "
        "WHERE projection_subjects.sequence < EXCLUDED.sequence",
        (projection, list(seen), list(seen.values())),
    )


async def _save_offsets(
    cur: AsyncCursor[Any], projection: str, epoch: str, batch: Sequence[Envelope]
) -> None:
    nexts: dict[tuple[str, int], int] = {}
    for env in batch:
        if env.partition < 0:  # replayed from the event store, not read from Kafka
            continue
        key = (env.topic, env.partition)
        nexts[key] = max(nexts.get(key, 0), env.offset + 1)
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
    """Forget the read model and its marks and offsets; it is then replayed from 0."""
    async with conn.transaction():
        for table in projection.tables:
            await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        for bookkeeping in ("projection_subjects", "projection_offsets"):
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE projection = %s").format(sql.Identifier(bookkeeping)),
                (projection.name,),
            )
