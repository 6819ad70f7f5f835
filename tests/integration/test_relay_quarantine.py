"""The relay's quarantine against real PostgreSQL and Tansu: a stored event that cannot become a
message is kept (table, .dlq, metric), the relay goes on, and ops retry or discard it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer
from eventsourcing.utils import register_topic

from domain.tenant import Tenant
from gateways.processes import relays_for
from infra import metrics, relay_retry
from infra.bootstrap import System, build_system, producer_factory
from infra.messages import WIRE
from infra.messages.names import TENANT_TOPIC
from infra.messages.wire import WireModel, published
from infra.relay import Relay
from infra.relay_quarantine import sort_batch
from infra.settings import Settings
from tests.support import gpucloud, read_topic

pytestmark = pytest.mark.integration
DLQ = f"{TENANT_TOPIC}.dlq"


class Renamed(Tenant.Event):
    """An event type no wire entry publishes (until a test deploys the fix)."""

    TOPIC = "gpucloud.identity.Tenant.RenamedInTests"
    name: str


register_topic(Renamed.TOPIC, Renamed)


class RenamedV1(WireModel):
    tenant_id: UUID
    name: str


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[System]:
    built = build_system(settings)
    await built.open()
    yield built
    await built.close()


def quarantined_total() -> float:
    return float(metrics.RELAY_QUARANTINED.labels("identity")._value.get())


def refused_by_the_wire_model() -> Tenant:
    """Below the domain's check: a name longer than the wire model's 100 characters."""
    return Tenant(id=uuid4(), name="x" * 150, request_hash="h")


async def drain(relay: Relay) -> None:
    while await relay.publish_pending():
        pass


async def kept(system: System) -> list[dict[str, Any]]:
    async with system.pool.connection() as conn:
        return await relay_retry.listing(conn, resolved=True)


def by_position(records: list[Any]) -> list[Any]:
    return sorted(records, key=lambda r: int(dict(r.headers)["ce_position"]))


async def test_a_poisoned_event_between_two_good_ones_is_quarantined_and_the_relay_moves_on(
    settings: Settings, system: System
) -> None:
    first, last = Tenant.register(uuid4(), "first", "h"), Tenant.register(uuid4(), "last", "h")
    bad = refused_by_the_wire_model()
    for tenant in (first, bad, last):
        system.identity.save(tenant)
    before = quarantined_total()
    relay = relays_for(system)[0]  # identity

    await drain(relay)
    await relay.close()

    bootstrap = settings.kafka_bootstrap_servers or ""
    published = by_position(await read_topic(bootstrap, TENANT_TOPIC, 3, 3))
    assert [r.key.decode() for r in published] == [str(first.id), str(last.id)]
    assert await relay.positions.load() == 3  # past the poisoned one
    [row] = await kept(system)
    assert (row["notification_id"], row["subject"], row["held"]) == (2, str(bad.id), False)
    assert row["error"].startswith("ValidationError") and row["dead_letter_topic"] == DLQ
    [letter] = await read_topic(bootstrap, DLQ, 3, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert (letter.key.decode(), headers["ce_sequence"]) == (str(bad.id), "1")
    assert headers["gpucloud_quarantine_id"] == str(row["id"])
    assert json.loads(letter.value)["name"] == "x" * 150  # the stored state, as it is
    assert quarantined_total() == before + 1


async def test_later_events_of_the_aggregate_wait_and_a_retry_publishes_them_once_in_order(
    settings: Settings, system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = Tenant.register(uuid4(), "acme", "h")
    system.identity.save(tenant)
    for name in ("acme two", "acme three"):  # v2 has no wire entry; v3 waits behind it
        tenant.trigger_event(Renamed, name=name)
        system.identity.save(tenant)
    other = Tenant.register(uuid4(), "other", "h")
    system.identity.save(other)
    relay = relays_for(system)[0]
    await drain(relay)
    bootstrap = settings.kafka_bootstrap_servers or ""
    rows = await kept(system)
    assert [(r["sequence"], r["held"]) for r in rows] == [(2, False), (3, True)]
    assert rows[0]["error"].startswith("KeyError")
    assert (await relay.positions.state())[1] == {str(tenant.id): 2}

    fix = published("cloud.gpu.tenant.renamed.v1", TENANT_TOPIC, RenamedV1, "tenant_id",
                    lambda e: e.originator_id, None)  # fmt: skip
    monkeypatch.setitem(WIRE, cast(type[Any], Renamed), fix)  # the fix, deployed
    apps = {app.name: app for app in system.applications}
    producer = await started(settings)
    try:
        done = await relay_retry.retry(system.pool, apps, producer, None, "ops@test")
        again = await relay_retry.retry(system.pool, apps, producer, None, "ops@test")
    finally:
        await producer.stop()
        await relay.close()

    assert (done.published, done.still_failing) == ([r["id"] for r in rows], {})
    assert (again.published, again.still_failing) == ([], {})
    records = await read_topic(bootstrap, TENANT_TOPIC, 3, 5)
    mine = sorted((r for r in records if r.key == str(tenant.id).encode()), key=lambda r: r.offset)
    assert [dict(r.headers)["ce_sequence"] for r in mine] == [b"1", b"2", b"3"]
    assert {(r["resolution"], r["resolved_by"]) for r in await kept(system)} == {
        ("retried", "ops@test")
    }
    assert (await relay.positions.state())[1] == {}  # its later events go out as they come


async def started(settings: Settings) -> AIOKafkaProducer:
    producer = producer_factory(settings)
    await producer.start()
    return producer


async def test_a_retry_or_discard_meanwhile_makes_the_relay_read_its_batch_again(
    system: System,
) -> None:
    tenant = Tenant.register(uuid4(), "acme", "h")
    system.identity.save(tenant)
    tenant.trigger_event(Renamed, name="two")
    system.identity.save(tenant)
    relay = relays_for(system)[0]
    await drain(relay)
    tenant.trigger_event(Renamed, name="three")
    system.identity.save(tenant)
    start, blocked = await relay.positions.state()
    notes = system.identity.recorder.select_notifications(start + 1, 10)
    batch = sort_batch("identity", system.identity.mapper, notes, blocked)
    assert batch.held_on == {str(tenant.id): 2}

    [row] = await kept(system)
    assert await relay_retry.discard(system.pool, [row["id"]], "ops@test") == 1
    saved = await relay.positions.advance_keeping(start, notes[-1].id, "identity", batch)

    assert saved is None and await relay.positions.load() == start  # nothing saved
    await drain(relay)  # read again: v3 is no longer held but fails on its own
    await relay.close()
    rows = await kept(system)
    assert [(r["sequence"], r["held"], r["resolution"]) for r in rows] == [
        (2, False, "discarded"),
        (3, False, None),
    ]
    assert rows[0]["resolved_by"] == "ops@test" and rows[0]["resolved_at"]


async def test_ops_list_retry_and_discard_with_the_cli(settings: Settings, system: System) -> None:
    bad = refused_by_the_wire_model()
    system.identity.save(bad)
    relay = relays_for(system)[0]
    await drain(relay)
    await relay.close()

    listed = await asyncio.to_thread(gpucloud, settings, "relay", "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["quarantined"]
    assert (row["subject"], row["held"], row["resolution"]) == (str(bad.id), False, None)

    retried = await asyncio.to_thread(gpucloud, settings, "relay", "quarantine", "retry", "--json")
    assert retried.returncode == 1, retried.stderr  # the payload is still refused
    failing = json.loads(retried.stdout)["still_failing"]
    assert list(failing) == [str(row["id"])] and "ValidationError" in failing[str(row["id"])]

    discarded = await asyncio.to_thread(
        gpucloud, settings, "relay", "quarantine", "discard", str(row["id"]), "--by", "alice",
        "--json",
    )  # fmt: skip
    assert discarded.returncode == 0, discarded.stderr
    assert json.loads(discarded.stdout) == {"discarded": 1}
    [after] = await kept(system)
    assert (after["resolution"], after["resolved_by"], after["attempts"]) == (
        "discarded", "alice", 2,
    )  # fmt: skip
    assert after["resolved_at"] is not None
