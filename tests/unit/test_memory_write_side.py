"""The write side in memory (infra/memory.py): the handlers' rules run on it in milliseconds,
and its joint save keeps the PostgreSQL one's promise, all of several applications' events
or none. Billing runs here too: its batched loads go through the library API in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain.errors import IdempotencyKeyReusedError
from domain.ledger_terms import InsufficientFundsError
from handlers.base import Written
from handlers.billing import bill
from infra.memory import MemoryWriteSide, build_memory_write_side, save_together_in_memory

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the write side is given every instant
PRICE = 3_600_000  # 1,000 micro-dollars per GPU-second


@pytest.fixture
def memory() -> MemoryWriteSide:
    return build_memory_write_side(lambda: NOW)


def staged(w: MemoryWriteSide, credit: int, gpus: int = 1) -> tuple[UUID, UUID, UUID]:
    tenant = w.identity.create_tenant("acme", None, NOW).tenant.id
    if credit:
        w.ledgers.credit(tenant, "topup-1", credit, NOW)
    sku = w.inventory.create_sku(
        name="h100", gpu_model="H100", gpus=1, vcpus=8, ram_gib=64, disk_gib=100,
        regions=["eu-west-1"], price_per_gpu_hour=PRICE,
    ).id  # fmt: skip
    node = w.inventory.register_node(region="eu-west-1", gpu_model="H100", gpu_count=gpus).id
    return tenant, sku, node


def request(w: MemoryWriteSide, tenant: UUID, sku: UUID, key: str, count: int = 1) -> Written:
    return w.compute.request(
        tenant_id=tenant, sku_id=sku, region="eu-west-1", count=count, name=None, key=key,
        now=NOW, quota_gpus=64, runway_minutes=10, deadline_seconds=300,
    )  # fmt: skip


def test_an_allocation_runs_and_is_released_with_its_claim_and_hold_given_back(
    memory: MemoryWriteSide,
) -> None:
    tenant, sku, node = staged(memory, credit=10_000_000)
    a = request(memory, tenant, sku, "k1").id
    assert memory.ledgers.balances(tenant).held == PRICE * 10 // 60  # ten minutes' runway
    assert memory.compute.place(a, [node], NOW) == "reserved"
    memory.compute.start_provisioning(a, NOW)
    assert memory.compute.mark_running(a, NOW).state == "running"
    assert memory.ledgers.balances(tenant).held == 0  # billing takes over from the hold
    memory.compute.release(a, "done", NOW, tenant_id=tenant)
    memory.compute.confirm_released(a, NOW + timedelta(seconds=5))

    allocation = memory.compute.allocation(a)
    assert (allocation.state, allocation.settled) == ("released", True)
    assert len(memory.inventory.get_node(node).free_gpus) == 1


def test_no_capacity_fails_and_voids_the_hold_in_one_save(memory: MemoryWriteSide) -> None:
    tenant, sku, node = staged(memory, credit=10_000_000, gpus=1)
    a = request(memory, tenant, sku, "k1", count=2).id
    assert memory.compute.place(a, [node], NOW) == "failed"
    assert (memory.compute.allocation(a).failure, memory.ledgers.balances(tenant).held) == (
        "no_capacity", 0
    )  # fmt: skip


def test_a_key_again_gives_the_same_allocation_and_another_body_is_refused(
    memory: MemoryWriteSide,
) -> None:
    tenant, sku, _ = staged(memory, credit=10_000_000)
    first, again = request(memory, tenant, sku, "k1"), request(memory, tenant, sku, "k1")
    assert (again.id, again.created) == (first.id, False)
    with pytest.raises(IdempotencyKeyReusedError):
        request(memory, tenant, sku, "k1", count=2)
    with pytest.raises(InsufficientFundsError):  # a tenant with no credit has no runway
        request(memory, staged(memory, credit=0)[0], sku, "k2")


def test_a_joint_save_that_lost_a_race_records_nothing(memory: MemoryWriteSide) -> None:
    tenant, _, node = staged(memory, credit=10_000_000)
    stale, fresh = memory.ledgers.ledger(tenant), memory.ledgers.ledger(tenant)
    fresh.debit("use-1", 1_000, NOW)
    memory.ledgers.save(fresh)  # another writer saved the ledger first
    stale.debit("use-2", 1_000, NOW)
    claimed = memory.inventory.get_node(node)
    before = claimed.version
    claimed.claim("claim:1", uuid4(), 1)

    with pytest.raises(IntegrityError):  # Inventory's events come first, Ledgers' lose the race
        save_together_in_memory([(memory.inventory, [claimed]), (memory.ledgers, [stale])])

    assert memory.inventory.get_node(node).version == before  # the node's part is not recorded
    assert memory.ledgers.ledger(tenant).version == fresh.version


def test_billing_charges_each_window_once_and_a_short_one_forces_the_release(
    memory: MemoryWriteSide,
) -> None:
    tenant, sku, node = staged(memory, credit=10_000_000)
    a = request(memory, tenant, sku, "k1").id
    memory.compute.place(a, [node], NOW)
    memory.compute.start_provisioning(a, NOW)
    memory.compute.mark_running(a, NOW + timedelta(seconds=30))
    first = bill(memory.compute, [a], NOW + timedelta(minutes=3, seconds=10))
    again = bill(memory.compute, [a], NOW + timedelta(minutes=3, seconds=20))
    assert (first.windows, first.debited, again.windows) == (3, 1000 * 150, 0)

    poor, _, other = staged(memory, credit=200_000)  # 200 GPU-seconds, no runway hold
    b = memory.compute.request(
        tenant_id=poor, sku_id=sku, region="eu-west-1", count=1, name=None, key="k",
        now=NOW, quota_gpus=16, runway_minutes=0, deadline_seconds=300,
    ).id  # fmt: skip
    memory.compute.place(b, [other], NOW)
    memory.compute.start_provisioning(b, NOW)
    memory.compute.mark_running(b, NOW)
    done = bill(memory.compute, [b], NOW + timedelta(minutes=5))
    assert done.forced == [b] and done.debited == 200_000
    assert memory.compute.allocation(b).state == "force_releasing"
    assert memory.ledgers.balances(poor).available == 0
