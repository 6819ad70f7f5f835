"""The process managers do not wait for Kafka: with the relay and the projector stopped, the
worker role still takes an allocation from requested to running to released and settled, and
billing still charges its windows. Their inboxes follow the write side in PostgreSQL.

The node is registered while the projector runs (placement still picks nodes from the catalog's
read model; see the README), then everything but the worker is stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from infra.bootstrap import System
from infra.settings import Settings
from tests.e2e.fleet import one_node_fleet
from tests.support import eventually, roles
from workers import allocations as jobs

pytestmark = pytest.mark.e2e


async def test_an_allocation_runs_is_billed_and_is_released_with_the_projector_stopped(
    settings: Settings, direct_system: System
) -> None:
    tenant, sku = await _a_node_the_catalog_knows(settings, direct_system)
    async with direct_system.pool.connection() as conn:  # the read model stops here
        projected = await (await conn.execute("SELECT count(*) FROM allocations")).fetchone()

    async with roles(settings, "worker"):
        now = datetime.now(UTC)
        allocation = direct_system.compute.request(
            tenant_id=tenant, sku_id=sku, region="eu-west-1", count=1, name=None, key="one",
            now=now, quota_gpus=16, runway_minutes=10, deadline_seconds=60,
        ).id  # fmt: skip
        await eventually(lambda: _running(direct_system, allocation), timeout=30)

        started = direct_system.compute.allocation(allocation).started_at
        assert started is not None
        billed = await jobs.billing_pass(direct_system, started + timedelta(minutes=2))
        assert billed.windows >= 2 and direct_system.compute.allocation(allocation).cost > 0

        direct_system.compute.release(allocation, "done", datetime.now(UTC), tenant_id=tenant)
        await eventually(lambda: _released(direct_system, allocation), timeout=30)

    assert _state(direct_system, allocation) == "released"
    async with (
        direct_system.pool.connection() as conn
    ):  # no projector ran: the read model never knew
        assert (await (await conn.execute("SELECT count(*) FROM allocations")).fetchone()) == (
            projected
        )


async def _a_node_the_catalog_knows(settings: Settings, system: System) -> tuple[UUID, UUID]:
    async with roles(settings, "relay", "projector"):
        return await one_node_fleet(system, credit=100_000_000)


def _state(system: System, allocation_id: UUID) -> str:
    return system.compute.allocation(allocation_id).state


async def _running(system: System, allocation_id: UUID) -> bool:
    return _state(system, allocation_id) == "running"


async def _released(system: System, allocation_id: UUID) -> bool:
    allocation = system.compute.allocation(allocation_id)
    return allocation.state == "released" and allocation.settled
