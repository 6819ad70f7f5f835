"""The projector process: FastStream subscribers that feed the read models.

Each projection reads its topics' partitions by explicit assignment (no consumer group, so no
rebalance pauses) and, once started, seeks to the offsets it saved with its last commit. The
offsets are kept per broker epoch: on a new broker nothing saved is trusted and reading starts
from 0, where already-applied events are skipped by their (subject, sequence) marks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka import TopicPartition as Assigned
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.subscriber.usecase import BatchSubscriber
from opentelemetry.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool

from infra import metrics
from infra.settings import Settings
from projections.allocations import ALLOCATIONS, DEPLETIONS
from projections.catalog import NODES, SKUS
from projections.envelope import Envelope, MalformedEventError, from_record
from projections.identity import API_KEYS, AUDIT, USERS
from projections.ledger import LEDGER
from projections.runner import Projection, apply_batch, forget_other_epochs, saved_offsets
from projections.tenants import TENANTS

log = logging.getLogger("gpucloud.projector")
PROJECTIONS: tuple[Projection, ...] = (
    TENANTS, USERS, API_KEYS, AUDIT, SKUS, NODES, LEDGER, ALLOCATIONS, DEPLETIONS,
)  # fmt: skip


class Fault:
    """Test hook: GPUCLOUD_FAULT=projection.before_commit kills the process mid-transaction."""

    def __init__(self, name: str | None) -> None:
        self.name = name

    def before_commit(self) -> None:
        if self.name == "projection.before_commit":
            os._exit(17)


def _envelopes(records: tuple[Any, ...]) -> tuple[list[Envelope], list[Any]]:
    good, bad = [], []
    for r in records:
        try:
            good.append(from_record(r.topic, r.partition, r.offset, dict(r.headers), r.value))
        except MalformedEventError:
            bad.append(r)
    return good, bad


def bind(
    broker: KafkaBroker,
    projection: Projection,
    partitions: dict[str, int],
    pool: AsyncConnectionPool,
    settings: Settings,
) -> BatchSubscriber:
    tps = [Assigned(t, p, declare=False) for t in projection.topics for p in range(partitions[t])]
    subscriber = broker.subscriber(
        partitions=tps,
        batch=True,
        max_records=1000,
        auto_offset_reset="earliest",
        # No consumer group, so nothing to commit to Kafka: the offsets live in PostgreSQL.
        # MANUAL keeps FastStream from calling commit(); a failed batch is nacked (rewound).
        ack_policy=AckPolicy.MANUAL,
        title=f"gpucloud.projection.{projection.name}",
    )
    fault = Fault(settings.fault)

    @subscriber
    async def project(message: KafkaMessage) -> None:
        good, bad = _envelopes(message.raw_message)
        for record in bad:
            metrics.CONSUMER_ERRORS.labels(projection.name).inc()
            await broker.publish(record.value, f"{record.topic}.dlq", headers=dict(record.headers))
        if not good:
            return
        try:
            async with pool.connection() as conn:
                applied = await apply_batch(
                    conn, projection, settings.broker_epoch, good, fault.before_commit
                )
        except Exception:
            metrics.CONSUMER_ERRORS.labels(projection.name).inc()
            log.exception("projection %s: batch failed; it will be redelivered", projection.name)
            await message.nack()
            await asyncio.sleep(0.5)  # do not spin on a database that is down
            return
        metrics.PROJECTION_APPLIED.labels(projection.name).inc(applied)
        metrics.PROJECTION_SKIPPED.labels(projection.name).inc(len(good) - applied)
        _report_lag(subscriber, projection.name, good)

    return subscriber


def _report_lag(subscriber: Any, name: str, batch: list[Envelope]) -> None:
    consumer = subscriber.consumer
    if consumer is None:
        return
    for env in batch:
        tp = TopicPartition(env.topic, env.partition)
        high = consumer.highwater(tp)
        if high is not None:
            metrics.PROJECTION_LAG.labels(name, env.topic, str(env.partition)).set(
                max(0, high - env.offset - 1)
            )


async def load_saved(
    projection: Projection, pool: AsyncConnectionPool, epoch: str
) -> dict[tuple[str, int], int]:
    async with pool.connection() as conn:
        await forget_other_epochs(conn, projection.name, epoch)
        return await saved_offsets(conn, projection.name, epoch)


def seek(subscriber: Any, offsets: dict[tuple[str, int], int]) -> None:
    """Synchronous on purpose: no await between the consumer's start and its seek, so the
    first fetch already starts at the saved offsets (a fetch in flight is discarded)."""
    for (topic, partition), offset in offsets.items():
        subscriber.consumer.seek(TopicPartition(topic, partition), offset)


def build_broker(settings: Settings, tracer_provider: TracerProvider | None = None) -> KafkaBroker:
    assert settings.kafka_bootstrap_servers, "resolve the stack before building the broker"
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider)],
        logger=log,
    )


def build_projector(
    settings: Settings,
    pool: AsyncConnectionPool,
    partitions: dict[str, int],
    tracer_provider: TracerProvider | None = None,
) -> FastStream:
    broker = build_broker(settings, tracer_provider)
    subs = [(bind(broker, p, partitions, pool, settings), p) for p in PROJECTIONS]
    app = FastStream(broker, logger=log)
    saved: dict[str, dict[tuple[str, int], int]] = {}

    @app.on_startup
    async def load() -> None:
        for _, projection in subs:
            saved[projection.name] = await load_saved(projection, pool, settings.broker_epoch)

    for sub, projection in subs:
        _seek_when_started(sub, partial(saved.__getitem__, projection.name))
    return app


def _seek_when_started(subscriber: Any, offsets: Callable[[], dict[tuple[str, int], int]]) -> None:
    """Seek the moment this subscriber's consumer has started, before its consume loop runs.

    FastStream offers no hook between a subscriber's start and its first fetch, and a seek in
    `after_startup` comes after the first subscribers already fetched from 0 while the later
    ones were starting; so the subscriber's `start` is wrapped.
    """
    start = subscriber.start

    async def start_then_seek() -> None:
        await start()
        seek(subscriber, offsets())

    subscriber.start = start_then_seek
