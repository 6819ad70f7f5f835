"""The relay: follows an application's notification log in order and publishes it to Kafka.

At-least-once: the position is saved only after the broker acknowledged every message of the
batch, so a crash republishes at most one batch (consumers dedupe by subject and sequence).
One relay per application holds a PostgreSQL advisory lock; a second one waits as hot standby.
Positions are kept per broker epoch: a new (empty) broker starts from the beginning of the log.
A stored event that cannot become a message is quarantined with the later events of its
aggregate (``infra/relay_quarantine.py``), and the relay goes on with the rest of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from eventsourcing.application import Application
from psycopg_pool import AsyncConnectionPool

from infra import metrics
from infra import relay_quarantine as quarantine
from infra.cloudevents import OutboundMessage, to_message
from infra.relay_quarantine import Blocked, Sorted, sort_batch

log = logging.getLogger("gpucloud.relay")


STATE = (
    "SELECT (SELECT position FROM relay_positions WHERE relay_name = %(n)s "
    "AND broker_epoch = %(e)s), (SELECT json_object_agg(subject, first) FROM "
    "(SELECT subject, min(sequence) AS first FROM relay_quarantine "
    "WHERE relay_name = %(n)s AND resolved_at IS NULL GROUP BY subject) AS o)"
)
ADVANCE = (
    "INSERT INTO relay_positions (relay_name, broker_epoch, position) "
    "VALUES (%s, %s, %s) ON CONFLICT (relay_name, broker_epoch) DO UPDATE "
    "SET position = EXCLUDED.position, updated_at = now() "
    "WHERE relay_positions.position = %s"
)


class RelayPositions:
    """The relay's saved position, per relay name and broker epoch."""

    def __init__(self, pool: AsyncConnectionPool, name: str, epoch: str) -> None:
        self.pool, self.name, self.epoch = pool, name, epoch

    async def load(self) -> int:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT position FROM relay_positions WHERE relay_name=%s AND broker_epoch=%s",
                    (self.name, self.epoch),
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def state(self) -> tuple[int, Blocked]:
        """The position and the subjects held in quarantine, in one round trip."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(STATE, {"n": self.name, "e": self.epoch})
            row = await cur.fetchone()
        assert row is not None  # SELECT without FROM: always one row
        return int(row[0] or 0), {k: int(v) for k, v in (row[1] or {}).items()}

    async def advance(self, old: int, new: int) -> bool:
        """Compare-and-set, so a concurrent ``relay republish`` reset is never overwritten."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(ADVANCE, (self.name, self.epoch, new, old))
            return cur.rowcount == 1

    async def advance_keeping(
        self, old: int, new: int, context: str, batch: Sorted
    ) -> dict[int, int] | None:
        """Advance and store the batch's kept events in one transaction, under the lock a
        retry or discard takes. Saves nothing (None: read the batch again) when a republish
        moved the position, or when a subject held because of earlier rows is no longer
        held as it was (a retry or discard ran meanwhile). Returns the new poisoned rows'
        ids by notification id."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(quarantine.LOCK, (self.name,))
            held = batch.held_on
            if held and await quarantine.open_subjects(cur, self.name, list(held)) != held:
                return None
            await cur.execute(ADVANCE, (self.name, self.epoch, new, old))
            if cur.rowcount != 1:
                return None
            return await quarantine.keep(cur, self.name, context, batch.kept)

    async def reset(self, position: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO relay_positions (relay_name, broker_epoch, position) "
                "VALUES (%s, %s, %s) ON CONFLICT (relay_name, broker_epoch) DO UPDATE "
                "SET position = EXCLUDED.position, updated_at = now()",
                (self.name, self.epoch, position),
            )

    async def forget_other_epochs(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM relay_positions WHERE relay_name=%s AND broker_epoch<>%s",
                (self.name, self.epoch),
            )


class AdvisoryLock:
    """A session-level PostgreSQL advisory lock held on its own connection."""

    def __init__(self, conninfo: str, key: str) -> None:
        self.conninfo, self.key = conninfo, key
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self, poll: float = 0.5) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        while True:
            cur = await self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,))
            row = await cur.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(poll)

    async def release(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


class Relay:
    def __init__(
        self,
        app: Application[Any],
        positions: RelayPositions,
        producer: Callable[[], AIOKafkaProducer],
        batch: int = 500,
        poll: float = 0.05,
        prepare: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.app, self.positions, self.make_producer = app, positions, producer
        self.batch, self.poll, self.prepare = batch, poll, prepare
        self.producer: AIOKafkaProducer | None = None

    async def publish_pending(self) -> int:
        """Publish the next batch after the saved position; returns how many were read."""
        start, blocked = await self.positions.state()
        notes = await asyncio.to_thread(
            self.app.recorder.select_notifications, start + 1, self.batch
        )
        if not notes:
            return 0
        # to_message by this module's name: the tests' event contract check wraps it here
        batch = sort_batch(self.app.name, self.app.mapper, notes, blocked, to_message)
        await self._send_all(batch.messages)
        if not batch.kept:
            if await self.positions.advance(start, notes[-1].id):
                metrics.RELAY_PUBLISHED.labels(self.app.name).inc(len(notes))
            return len(notes)
        saved = await self.positions.advance_keeping(start, notes[-1].id, self.app.name, batch)
        if saved is not None:
            metrics.RELAY_PUBLISHED.labels(self.app.name).inc(len(batch.messages))
            await self._quarantined(batch, saved)
        return len(notes)

    async def _quarantined(self, batch: Sorted, ids: dict[int, int]) -> None:
        """The alert's counter, a log line, and the dead-letter copies of new poisoned rows."""
        metrics.RELAY_QUARANTINED.labels(self.app.name).inc(len(ids))
        for kept in batch.poisoned:
            if kept.note.id in ids:
                log.error(
                    "relay %s quarantined notification %d (%s@%d, quarantine id %d): %s",
                    self.app.name, kept.note.id, kept.subject, kept.note.originator_version,
                    ids[kept.note.id], quarantine.printable(kept.error or ""),
                )  # fmt: skip
        await quarantine.dead_letter_copies(
            await self._producer(), self.app.name, batch.poisoned, ids
        )

    async def _send_all(self, messages: list[OutboundMessage]) -> None:
        """Queue the whole batch, then wait for every acknowledgement (or the first failure)."""
        producer = await self._producer()
        futures: list[asyncio.Future[Any]] = []
        try:
            for m in messages:
                futures.append(
                    await producer.send(m.topic, value=m.value, key=m.key, headers=m.headers)
                )
        finally:
            results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            if self.prepare is not None:
                await self.prepare()  # e.g. create topics on a broker that just came back
            producer = self.make_producer()
            await producer.start()
            self.producer = producer
        return self.producer

    async def lag(self) -> int:
        head = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
        return head - await self.positions.load()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; broker or database trouble backs off and retries."""
        backoff = self.poll
        idle_polls = 0
        while not stop.is_set():
            try:
                sent = await self.publish_pending()
                idle_polls = 0 if sent else idle_polls + 1
                if sent or idle_polls % 20 == 1:  # keep the lag gauge fresh, not every poll
                    metrics.RELAY_LAG.labels(self.app.name).set(await self.lag())
                backoff = self.poll
            except Exception as exc:
                sent = 0
                metrics.RELAY_ERRORS.labels(self.app.name).inc()
                log.warning("relay %s: %s; retrying in %.1fs", self.app.name, exc, backoff)
                await self._drop_producer()
                backoff = min(backoff * 2 + 0.1, 5.0)
            if not sent:
                await _wait(stop, backoff)

    async def _drop_producer(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                await producer.stop()
            except Exception:  # already broken; nothing more to release
                log.debug("producer stop failed", exc_info=True)

    async def close(self) -> None:
        await self._drop_producer()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
