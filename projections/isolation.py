"""One bad event never stops a projection for everyone.

A batch that fails is split in halves until the event that fails is found; that event is tried
again a bounded number of times and then quarantined (with its dedupe mark and offset, in one
transaction), and the projection goes on with the rest. Errors that say the database itself is
unwell (a lost connection, a missing table) are not the event's fault: they propagate, and the
caller rewinds the whole batch and retries later.

Ops replay quarantined events after a fix (``replay``) or discard them (``discard``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors

from projections import quarantine
from projections.envelope import Envelope
from projections.runner import (
    Projection,
    apply_batch,
    apply_events,
    save_marks,
    save_offsets,
    save_positions,
)

log = logging.getLogger("gpucloud.projector")
SYSTEMIC = (
    psycopg.OperationalError,  # connection lost, server shutting down, deadlock, serialization
    psycopg.InterfaceError,
    errors.UndefinedTable,
    errors.UndefinedColumn,
    errors.InsufficientPrivilege,
)


@dataclass(frozen=True)
class Quarantined:
    """What was quarantined, for the dead-letter topic and the alert."""

    id: int
    projection: str
    envelope: Envelope
    error: str


OnQuarantine = Callable[[Quarantined], Awaitable[None]]


async def _nothing(_: Quarantined) -> None:
    return None


@dataclass(frozen=True)
class Tally:
    applied: int = 0
    quarantined: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.applied + other.applied, self.quarantined + other.quarantined)


@dataclass(frozen=True)
class Isolator:
    """Applies batches to one projection, quarantining what cannot be applied."""

    projection: Projection
    epoch: str
    on_quarantine: OnQuarantine = _nothing
    attempts: int = 3  # tries of a lone failing event before it is quarantined
    pause: float = 0.05  # seconds before the second try; doubled for each later one
    before_commit: Callable[[], None] = lambda: None

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Tally:
        try:
            applied = await apply_batch(
                conn, self.projection, self.epoch, batch, self.before_commit
            )
            return Tally(applied)
        except SYSTEMIC:
            raise
        except Exception as failure:
            if len(batch) == 1:
                return await self._retry_or_quarantine(conn, batch[0], failure)
        middle = len(batch) // 2
        return await self.apply(conn, batch[:middle]) + await self.apply(conn, batch[middle:])

    async def _retry_or_quarantine(
        self, conn: AsyncConnection[Any], env: Envelope, failure: Exception
    ) -> Tally:
        for attempt in range(1, self.attempts):
            await asyncio.sleep(self.pause * 2 ** (attempt - 1))
            try:
                applied = await apply_batch(conn, self.projection, self.epoch, [env])
                return Tally(applied)
            except SYSTEMIC:
                raise
            except Exception as again:
                failure = again
        error = f"{type(failure).__name__}: {failure}"
        qid = await self._quarantine(conn, env, error)
        log.error(
            "projection %s quarantined %s %s@%d (quarantine id %d): %s",
            self.projection.name, quarantine.printable(env.ce_type, 200),
            quarantine.printable(env.subject, 200), env.sequence, qid, quarantine.printable(error),
        )  # fmt: skip
        await self.on_quarantine(Quarantined(qid, self.projection.name, env, error))
        return Tally(quarantined=1)

    async def _quarantine(self, conn: AsyncConnection[Any], env: Envelope, error: str) -> int:
        """Keep the event, and move its mark and offset past it, in one transaction."""
        async with conn.transaction(), conn.cursor() as cur:
            qid = await quarantine.keep(cur, self.projection.name, env, error, self.attempts, False)
            await save_marks(cur, self.projection.name, {env.subject: env.sequence})
            await save_offsets(cur, self.projection.name, self.epoch, [env])
        return qid


class ReplayRaceError(RuntimeError):
    """Two ops replaying the same rows: the second leaves them to the first."""


async def quarantine_unparseable(
    conn: AsyncConnection[Any],
    projection: str,
    epoch: str,
    where: tuple[str, int, int],
    headers: dict[str, bytes],
    value: bytes | None,
    error: str,
) -> int:
    """Keep a message that is no event at all, and move the offset past it."""
    async with conn.transaction(), conn.cursor() as cur:
        qid = await quarantine.keep_raw(cur, projection, where, headers, value, error)
        await save_positions(cur, projection, epoch, [where])
    return qid


@dataclass(frozen=True)
class Replayed:
    replayed: list[int]
    still_failing: dict[int, str]  # quarantine id -> error


async def replay(
    conn: AsyncConnection[Any], projection: Projection, ids: Sequence[int] | None = None
) -> Replayed:
    """Apply quarantined events again (after a fix), a subject's in sequence, each subject in
    its own transaction: those that apply are resolved; a subject that fails again stays."""
    async with conn.transaction(), conn.cursor() as cur:
        rows = await quarantine.open_events(cur, projection.name, ids)
    done: list[int] = []
    failing: dict[int, str] = {}
    for _, run in groupby(rows, key=lambda row: row[1]):
        subject_rows = list(run)
        try:
            await _replay_subject(conn, projection, subject_rows)
            done.extend(qid for qid, _, _ in subject_rows)
        except SYSTEMIC:
            raise
        except Exception as failure:
            failing[subject_rows[0][0]] = quarantine.printable(
                f"{type(failure).__name__}: {failure}"
            )
    return Replayed(done, failing)


async def _replay_subject(
    conn: AsyncConnection[Any], projection: Projection, rows: list[tuple[int, str | None, bytes]]
) -> None:
    if rows[0][1] is None:
        raise ValueError("not an event (it could not be parsed): discard it")
    async with conn.transaction(), conn.cursor() as cur:
        ids = [qid for qid, _, _ in rows]
        if await quarantine.resolve(cur, ids, "replayed") != len(ids):  # locks the rows
            raise ReplayRaceError("another replay or discard took some of these rows")
        await apply_events(cur, projection, [quarantine.decode(event) for _, _, event in rows])


async def discard(conn: AsyncConnection[Any], ids: Sequence[int]) -> int:
    """Give up on quarantined events: their subjects' later events apply again as they come
    (the read model may then miss what the discarded event would have changed)."""
    async with conn.transaction(), conn.cursor() as cur:
        return await quarantine.resolve(cur, ids, "discarded")
