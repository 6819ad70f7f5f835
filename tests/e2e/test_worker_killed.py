"""A worker process killed (exit 137, no clean-up) right after any saga step: a new worker
finishes the allocation exactly once: one instance, one claim released once, the hold voided
once, no process left behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from uuid import UUID

import pytest

from infra.bootstrap import System
from infra.settings import Settings
from tests.support import eventually, role_env, roles

pytestmark = pytest.mark.e2e


@contextmanager
def worker(settings: Settings, fault: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    extra = {
        "GPUCLOUD_DATA_DIR": str(settings.data_dir.resolve()),
        "GPUCLOUD_SAGA_POLL_SECONDS": "0.05",
        "GPUCLOUD_RECONCILE_SECONDS": "3600",
        "GPUCLOUD_FAULT": fault or "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateways.cli", "worker"], env=role_env(settings, **extra)
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("step", ["requested", "reserved", "provisioning", "releasing"])
async def test_a_worker_killed_after_a_step_leaves_nothing_done_twice(
    settings: Settings, direct_system: System, step: str
) -> None:
    async with roles(settings, "relay", "projector"):
        allocation, node = await _requested(direct_system)
        with worker(settings, fault=f"saga.after:{step}") as doomed:
            if step == "releasing":
                await eventually(
                    lambda: _state_is(direct_system, allocation, "running"), timeout=30
                )
                direct_system.compute.release(allocation, "done", datetime.now(UTC))
            assert await asyncio.to_thread(doomed.wait, 60) == 137  # the loop runs the relay
        with worker(settings):
            if step != "releasing":
                await eventually(
                    lambda: _state_is(direct_system, allocation, "running"), timeout=30
                )
                direct_system.compute.release(allocation, "done", datetime.now(UTC))
            await eventually(lambda: _state_is(direct_system, allocation, "released"), timeout=30)
    final = direct_system.compute.allocation(allocation)
    kinds = [type(e).__name__ for e in direct_system.inventory.repository.event_store.get(node)]
    assert final.settled and kinds.count("CapacityClaimed") == kinds.count("ClaimReleased") == 1
    ledger = direct_system.ledgers.ledger(final.tenant_id)
    assert ledger.held == 0 and sum(h.state == "voided" for h in ledger.holds.values()) == 1
    workspace = settings.data_dir.resolve() / "instances" / str(allocation)
    assert (workspace / "instance.released.json").exists()
    assert not (workspace / "instance.json").exists()


async def _requested(system: System) -> tuple[UUID, UUID]:
    now = datetime.now(UTC)
    tenant = system.identity.create_tenant("Acme", None, now).tenant.id
    system.ledgers.credit(tenant, "topup-1", 10_000_000, now)
    sku = system.inventory.create_sku(
        name="1x H100", gpu_model="H100", gpus=1, vcpus=8, ram_gib=64, disk_gib=100,
        regions=["eu-west-1"], price_per_gpu_hour=3_600_000,
    ).id  # fmt: skip
    node = system.inventory.register_node(region="eu-west-1", gpu_model="H100", gpu_count=2).id

    async def node_visible() -> bool:
        async with system.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM nodes WHERE id = %s", (node,))
            return await cur.fetchone() is not None

    await eventually(node_visible)
    allocation = system.compute.request(
        tenant_id=tenant, sku_id=sku, region="eu-west-1", count=1, name=None, key="k",
        now=now, quota_gpus=16, runway_minutes=10,
    ).id  # fmt: skip
    return allocation, node


async def _state_is(system: System, allocation: UUID, state: str) -> bool:
    return system.compute.allocation(allocation).state == state
