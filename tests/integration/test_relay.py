"""The relay against real PostgreSQL and Tansu: order, at-least-once, hot standby."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from uuid import uuid4

import pytest

from domain.tenant import Tenant
from gateways.processes import relays_for, run_relay
from infra.bootstrap import System, build_system
from infra.relay import RelayPositions
from infra.settings import Settings
from tests.support import eventually, read_topic, role_env

pytestmark = pytest.mark.integration
TOPIC = "identity.tenant.v1"


def store_tenants(system: System, count: int) -> list[str]:
    tenants = [Tenant.register(uuid4(), f"t{i}", "h") for i in range(count)]
    system.identity.save(*tenants)
    return [str(t.id) for t in tenants]


async def test_the_relay_publishes_every_event_in_log_order_per_partition(
    settings: Settings,
) -> None:
    system = build_system(settings)
    await system.open()
    ids = store_tenants(system, 120)
    relay = relays_for(system)[0]  # identity
    while await relay.publish_pending():
        pass
    await relay.close()
    await system.close()

    records = await read_topic(settings.kafka_bootstrap_servers or "", TOPIC, 3, 120)

    assert sorted(r.key.decode() for r in records) == sorted(ids)
    for partition in {r.partition for r in records}:
        positions = [
            int(dict(r.headers)["ce_position"]) for r in records if r.partition == partition
        ]
        assert positions == sorted(positions)


class CrashAfterSend(RelayPositions):
    """Positions whose first save fails, as if the relay died right after the broker's ack."""

    crashed = False

    async def advance(self, old: int, new: int) -> bool:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("relay died before saving its position")
        return await super().advance(old, new)


async def test_a_crash_before_saving_the_position_republishes_not_loses(
    settings: Settings,
) -> None:
    system = build_system(settings)
    await system.open()
    ids = store_tenants(system, 10)
    relay = relays_for(system)[0]  # identity
    relay.positions = CrashAfterSend(system.pool, relay.positions.name, settings.broker_epoch)
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert await relay.publish_pending() == 10
    assert await relay.publish_pending() == 0
    await relay.close()
    await system.close()

    records = await read_topic(settings.kafka_bootstrap_servers or "", TOPIC, 3, 20)

    assert len(records) == 20  # at-least-once: the batch went out twice
    assert sorted({r.key.decode() for r in records}) == sorted(ids)


async def test_a_standby_relay_takes_over_when_the_active_one_stops(settings: Settings) -> None:
    system = build_system(settings)
    await system.open()
    relay = relays_for(system)[0]  # identity

    async def position_is(n: int) -> bool:
        return await relay.positions.load() == n

    first_stop, second_stop = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(run_relay(settings, first_stop))
    store_tenants(system, 1)
    await eventually(lambda: position_is(1))
    second = asyncio.create_task(run_relay(settings, second_stop))
    await asyncio.sleep(1.0)  # the standby is now polling for the lock
    first_stop.set()
    await first
    store_tenants(system, 1)
    await eventually(lambda: position_is(2), timeout=20)
    assert not second.done()
    second_stop.set()
    await second
    await system.close()

    records = await read_topic(settings.kafka_bootstrap_servers or "", TOPIC, 3, 2)
    assert len(records) == 2


async def test_a_new_broker_epoch_republishes_from_the_start(settings: Settings) -> None:
    system = build_system(settings)
    await system.open()
    store_tenants(system, 5)
    relay = relays_for(system)[0]  # identity
    assert await relay.publish_pending() == 5

    fresh = settings.with_(broker_epoch="another-broker")
    again = relays_for(
        System(
            fresh,
            system.identity,
            system.inventory,
            system.ledgers,
            system.compute,
            system.payments,
            system.pool,
        )
    )[0]

    assert await again.publish_pending() == 5
    await relay.close()
    await again.close()
    await system.close()


async def test_republish_from_n_sends_the_log_again_from_there(settings: Settings) -> None:
    system = build_system(settings)
    await system.open()
    store_tenants(system, 3)
    relay = relays_for(system)[0]  # identity
    assert await relay.publish_pending() == 3
    await relay.close()
    await system.close()

    answer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateways.cli", "relay", "republish", "--from", "2", "--json"],
        env=role_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert answer.returncode == 0, answer.stderr[-2000:]
    assert json.loads(answer.stdout) == {
        "republish_from": 2,
        "published": 2,
        "by": "this command",
    }
    records = await read_topic(settings.kafka_bootstrap_servers or "", TOPIC, 3, 5)
    assert sorted(int(dict(r.headers)["ce_position"]) for r in records) == [1, 2, 2, 3, 3]
