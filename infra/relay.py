"""The relay: follows an application's notification log in order and publishes it to Kafka.

At-least-once: the position is saved only after the broker acknowledged every message of the
batch, so a crash republishes at most one batch (consumers dedupe by subject and sequence).
One relay per application holds a PostgreSQL advisory lock; a second one waits as hot standby.
Positions are kept per broker epoch: a new (empty) broker starts from the beginning of the log.
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
from infra.cloudevents import OutboundMessage, to_message

log = logging.getLogger("gpucloud.relay")


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

    async def advance(self, old: int, new: int) -> bool:
        """Compare-and-set, so a concurrent ``relay republish`` reset is never overwritten."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO relay_positions (relay_name, broker_epoch, position) "
                "VALUES (%s, %s, %s) ON CONFLICT (relay_name, broker_epoch) DO UPDATE "
                "SET position = EXCLUDED.position, updated_at = now() "
                "WHERE relay_positions.position = %s",
                (self.name, self.epoch, new, old),
            )
            return cur.rowcount == 1

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
        """Publish the next batch after the saved position; returns how many went out."""
        start = await self.positions.load()
        notes = await asyncio.to_thread(
            self.app.recorder.select_notifications, start + 1, self.batch
        )
        if not notes:
            return 0
        messages = [to_message(self.app.name, self.app.mapper, n) for n in notes]
        await self._send_all(messages)
        if await self.positions.advance(start, notes[-1].id):
            metrics.RELAY_PUBLISHED.labels(self.app.name).inc(len(notes))
        return len(notes)

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
