"""The projector process: FastStream subscribers that feed the read models.

Each projection reads its topics' partitions by explicit assignment (no consumer group, so no
rebalance pauses) and, once started, seeks to the offsets it saved with its last commit. The
offsets are kept per broker epoch: on a new broker nothing saved is trusted and reading starts
from 0, where already-applied events are skipped by their (subject, sequence) marks.

An event a projection cannot apply is quarantined (``projections/isolation.py``): kept in
``projection_quarantine``, copied to ``<topic>.dlq``, counted in
``gpucloud_projection_quarantined_total``, and the projection goes on. Only a database that is
down stops a batch: it is rewound and retried after a pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
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
from projections.allocations import ALLOCATIONS
from projections.catalog import NODES, SKUS
from projections.envelope import Envelope, MalformedEventError, from_record
from projections.identity import API_KEYS, AUDIT, USERS
from projections.isolation import Isolator, Quarantined, quarantine_unparseable
from projections.ledger import LEDGER
from projections.payments import PAYMENTS
from projections.quarantine import printable
from projections.runner import Projection, forget_other_epochs, saved_offsets
from projections.tenants import TENANTS

log = logging.getLogger("gpucloud.projector")
PROJECTIONS: tuple[Projection, ...] = (
    TENANTS, USERS, API_KEYS, AUDIT, SKUS, NODES, LEDGER, ALLOCATIONS, PAYMENTS,
)  # fmt: skip


class Fault:
    """Test hook: GPUCLOUD_FAULT=projection.before_commit kills the process mid-transaction."""

    def __init__(self, name: str | None) -> None:
        self.name = name

    def before_commit(self) -> None:
        if self.name == "projection.before_commit":
            os._exit(17)


def _envelopes(records: tuple[Any, ...]) -> tuple[list[Envelope], list[tuple[Any, str]]]:
    good, bad = [], []
    for r in records:
        try:
            good.append(from_record(r.topic, r.partition, r.offset, dict(r.headers), r.value))
        except MalformedEventError as malformed:
            bad.append((r, str(malformed)))
    return good, bad


def dead_letters(broker: KafkaBroker) -> Callable[[Quarantined], Awaitable[None]]:
    """What happens to a quarantined event besides its row: the alert's counter, and a copy on
    ``<topic>.dlq`` for downstream tools (best effort: the table is the record)."""

    async def publish(kept: Quarantined) -> None:
        metrics.PROJECTION_QUARANTINED.labels(kept.projection).inc()
        env = kept.envelope
        headers = _dead_letter_headers(kept.projection, kept.id, kept.error)
        headers |= {"ce_type": env.ce_type, "ce_subject": env.subject}
        headers["ce_sequence"] = str(env.sequence)
        await _publish_dead_letter(broker, json.dumps(env.data).encode(), env.topic, headers)

    return publish


def _dead_letter_headers(projection: str, qid: int, error: str) -> dict[str, str]:
    return {
        "gpucloud_projection": projection,
        "gpucloud_quarantine_id": str(qid),
        "gpucloud_error": printable(error, 500),
    }


async def _publish_dead_letter(
    broker: KafkaBroker, value: bytes | None, topic: str, headers: dict[str, Any]
) -> None:
    try:
        await broker.publish(value, f"{topic}.dlq", headers=headers)
    except Exception:
        log.warning("could not copy a quarantined event to %s.dlq; it is kept in the table", topic)


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
    isolator = Isolator(
        projection,
        settings.broker_epoch,
        dead_letters(broker),
        before_commit=Fault(settings.fault).before_commit,
    )

    @subscriber
    async def project(message: KafkaMessage) -> None:
        good, bad = _envelopes(message.raw_message)
        try:
            async with pool.connection() as conn:
                for record, error in bad:
                    await _quarantine_unparseable(conn, broker, isolator, record, error)
                tally = await isolator.apply(conn, good) if good else None
        except Exception:
            metrics.CONSUMER_ERRORS.labels(projection.name).inc()
            log.exception("projection %s: the database failed; batch rewound", projection.name)
            await message.nack()
            await asyncio.sleep(0.5)  # do not spin on a database that is down
            return
        if tally is not None:
            metrics.PROJECTION_APPLIED.labels(projection.name).inc(tally.applied)
            skipped = len(good) - tally.applied - tally.quarantined
            metrics.PROJECTION_SKIPPED.labels(projection.name).inc(max(0, skipped))
            _report_lag(subscriber, projection.name, good)

    return subscriber


async def _quarantine_unparseable(
    conn: Any, broker: KafkaBroker, isolator: Isolator, record: Any, error: str
) -> None:
    name = isolator.projection.name
    where = (record.topic, record.partition, record.offset)
    headers = dict(record.headers)
    qid = await quarantine_unparseable(
        conn, name, isolator.epoch, where, headers, record.value, error
    )
    metrics.PROJECTION_QUARANTINED.labels(name).inc()
    log.error("projection %s quarantined an unparseable message (id %d): %s", name, qid, error)
    dead = dict(headers) | _dead_letter_headers(name, qid, error)
    await _publish_dead_letter(broker, record.value, record.topic, dead)


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
