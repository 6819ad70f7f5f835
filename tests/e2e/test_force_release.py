"""Credit runs out: every running allocation of the tenant is force-released in the window
where it ran out, the ledger never goes below its floor, and `ledger verify` passes.

The relay and projector run as in production (the policy's inbox follows the ledger log in
PostgreSQL, not Kafka); the instances are real process groups of the local driver; the test runs
the worker's passes itself so that billing can be asked about minutes that have not happened
yet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from domain.allocation import Allocation
from infra import inboxes as work
from infra.bootstrap import System
from infra.settings import Settings
from tests.e2e.fleet import one_node_fleet
from tests.support import eventually, gpucloud, roles
from workers import allocations as jobs

pytestmark = pytest.mark.e2e
CREDIT = 2 * 3 * 60 * 1000  # three minutes of two one-GPU allocations


async def test_both_allocations_are_released_in_the_window_the_credit_runs_out(
    settings: Settings, direct_system: System
) -> None:
    async with roles(settings, "relay", "projector"):
        tenant, allocations = await _two_running(direct_system)
        drivers = jobs.drivers_of(jobs.driver_config(direct_system))
        provisioning = jobs.provisioning_of(direct_system, drivers)
        start = max(_get(direct_system, a).started_at or datetime.now(UTC) for a in allocations)
        depleted_at = None
        for minute in range(1, 6):
            now = start + timedelta(minutes=minute)
            await jobs.billing_pass(direct_system, now)
            assert direct_system.ledgers.balances(tenant).available >= 0  # never below the floor
            if direct_system.ledgers.ledger(tenant).depleted and depleted_at is None:
                depleted_at = now
                await eventually(lambda: _depletion_arrived(direct_system))
                await jobs.depletion_pass(direct_system, now)
            states = {_get(direct_system, a).state for a in allocations}
            assert states == ({"running"} if depleted_at is None else {"force_releasing"})
        assert depleted_at is not None and depleted_at <= start + timedelta(minutes=4)
        for a in allocations:  # billing stopped inside the window where the credit ran out
            ends = _get(direct_system, a).billing_ends_at
            assert ends is not None and depleted_at - timedelta(minutes=1) < ends <= depleted_at
        await eventually(
            lambda: _all_released(direct_system, provisioning, allocations), timeout=20
        )
        await jobs.billing_pass(direct_system, depleted_at + timedelta(minutes=5))
        direct_system.ledgers.credit(tenant, "topup-2", 10_000_000, datetime.now(UTC))
    final = [_get(direct_system, a) for a in allocations]
    assert all(f.state == "released" and f.release_reason == "credit exhausted" for f in final)
    later = depleted_at + timedelta(days=1)
    assert all(f.settled and f.due_windows(later) == [] for f in final)  # no resurrection
    assert sum(f.cost for f in final) == CREDIT
    verified = gpucloud(settings, "ledger", "verify", "--tenant", str(tenant), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def _two_running(system: System) -> tuple[UUID, list[UUID]]:
    tenant, sku = await one_node_fleet(system, CREDIT)
    now = datetime.now(UTC)
    allocations = [
        system.compute.request(
            tenant_id=tenant, sku_id=sku, region="eu-west-1", count=1, name=None, key=key,
            now=now, quota_gpus=16, runway_minutes=1, deadline_seconds=60,
        ).id
        for key in ("a", "b")
    ]  # fmt: skip
    provisioning = jobs.provisioning_of(system, jobs.drivers_of(jobs.driver_config(system)))

    async def running() -> bool:
        await jobs.saga_pass(system, provisioning)
        return all(_get(system, a).state == "running" for a in allocations)

    await eventually(running, timeout=20)

    async def billable() -> bool:  # the biller finds them in its inbox
        await jobs.follow_compute(system)
        async with system.pool.connection() as conn:
            return len(await work.running_allocations(conn, tenant)) == 2

    await eventually(billable)
    return tenant, allocations


def _get(system: System, allocation_id: UUID) -> Allocation:
    return system.compute.allocation(allocation_id)


async def _depletion_arrived(system: System) -> bool:
    await jobs.follow_depletions(system)
    async with system.pool.connection() as conn:
        return bool(await work.pending_depletions(conn))


async def _all_released(system: System, provisioning: object, allocations: list[UUID]) -> bool:
    await jobs.saga_pass(system, provisioning)  # type: ignore[arg-type]
    return all(_get(system, a).state == "released" for a in allocations)
