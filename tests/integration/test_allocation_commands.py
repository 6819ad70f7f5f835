"""Allocation commands against real PostgreSQL: admission, placement, settlement, billing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from domain.allocation import Allocation
from domain.errors import IdempotencyKeyReusedError
from domain.ledger_terms import InsufficientFundsError
from domain.quota import QuotaExceededError
from handlers.base import Written, id_for_key
from handlers.billing import bill
from infra.bootstrap import System
from tests.integration.allocation_world import NOW, PRICE, World, stage

pytestmark = pytest.mark.integration


def test_same_key_gives_one_allocation_and_one_hold(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000)
    first, again = world.request("k1"), world.request("k1")
    assert (first.id, first.created) == (again.id, True) and not again.created
    balances = clocked_system.ledgers.balances(world.tenant)
    assert balances.held == PRICE * 10 // 60  # ten minutes of one GPU


def test_same_key_with_another_body_is_refused(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000)
    world.request("k1")
    with pytest.raises(IdempotencyKeyReusedError):
        world.request("k1", count=2)


@pytest.mark.parametrize("round_", range(5))
def test_twenty_concurrent_retries_with_one_key_all_get_the_one_allocation(
    clocked_system: System, round_: int
) -> None:
    world = stage(clocked_system, credit=10_000_000)
    barrier = threading.Barrier(20)

    def retry(_: int) -> Any:
        barrier.wait()
        try:  # each retry arrives at its own moment, as over HTTP
            return world.request(f"same-{round_}")
        except Exception as refused:
            return refused

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(retry, range(20)))
    assert [a for a in answers if not isinstance(a, Written)] == []
    assert len({a.id for a in answers}) == 1 and sum(a.created for a in answers) == 1
    assert clocked_system.ledgers.balances(world.tenant).held == PRICE * 10 // 60  # one hold


def test_an_operators_key_cannot_name_the_key_that_voids_a_runway_hold(
    clocked_system: System,
) -> None:
    world = stage(clocked_system, credit=10_000_000)
    a = world.request("k1").id
    clocked_system.ledgers.adjust(world.tenant, f"runway-void:{a}", 1_000, "collide", world.clock())
    assert world.compute.place(a, world.nodes, world.clock()) == "reserved"
    world.compute.start_provisioning(a, world.clock())
    assert world.compute.mark_running(a, world.clock()).state == "running"  # voids the hold
    assert clocked_system.ledgers.balances(world.tenant).held == 0


def test_an_operators_key_cannot_take_a_future_allocations_hold_key(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000)
    predicted = id_for_key(f"allocation:{world.tenant}", "k2")  # ids are derived, so guessable
    clocked_system.ledgers.adjust(
        world.tenant, f"runway:{predicted}", 1_000, "collide", world.clock()
    )
    admitted = world.request("k2")
    assert (admitted.id, admitted.created) == (predicted, True)
    assert clocked_system.ledgers.balances(world.tenant).held == PRICE * 10 // 60


def test_no_runway_refuses_and_records_nothing(clocked_system: System) -> None:
    world = stage(clocked_system, credit=100)
    with pytest.raises(InsufficientFundsError):
        world.request("k1")
    assert clocked_system.ledgers.balances(world.tenant).held == 0


def admit(world: World, key: str, count: int, quota: int) -> Written:
    return world.compute.request(
        tenant_id=world.tenant, sku_id=world.sku, region="eu-west-1", count=count, name=None,
        key=key, now=NOW, quota_gpus=quota, runway_minutes=1,
    )  # fmt: skip


def test_the_quota_counts_live_allocations_and_frees_ended_ones(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000, node_gpus=(1,))
    big = admit(world, "big", 2, quota=2)
    with pytest.raises(QuotaExceededError):
        admit(world, "small", 1, quota=2)
    assert world.compute.place(big.id, world.nodes, NOW) == "failed"  # no node has 2 GPUs
    assert admit(world, "small", 1, quota=2).created  # the failure gave its GPUs back


def test_racing_requests_never_exceed_the_quota(clocked_system: System) -> None:
    world = stage(clocked_system, credit=100_000_000)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda k: _try(world, f"race-{k}"), range(8)))
    assert outcomes.count("admitted") == 3 and outcomes.count("refused") == 5


def _try(world: World, key: str) -> str:
    try:
        admit(world, key, 1, quota=3)
    except QuotaExceededError:
        return "refused"
    return "admitted"


def test_no_capacity_fails_and_voids_the_hold(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000, node_gpus=(1,))
    written = world.request("k1", count=2)
    assert world.compute.place(written.id, world.nodes, NOW) == "failed"
    allocation = world.compute.allocation(written.id)
    assert (allocation.failure, allocation.settled) == ("no_capacity", True)
    assert clocked_system.ledgers.balances(world.tenant).held == 0


def test_lifecycle_bills_each_window_once_and_settles(clocked_system: System) -> None:
    world = stage(clocked_system, credit=10_000_000, node_gpus=(2, 4))
    a = world.request("k1", count=2).id
    assert world.compute.place(a, world.nodes, NOW) == "reserved"
    node = clocked_system.inventory.get_node(world.nodes[0])
    assert len(node.free_gpus) == 0  # best fit: the 2-GPU node
    world.compute.start_provisioning(a, NOW)
    started = NOW + timedelta(seconds=30)
    world.compute.mark_running(a, started)
    assert (
        clocked_system.ledgers.balances(world.tenant).held == 0
    )  # runway released when billing starts
    first = bill(world.compute, [a], NOW + timedelta(minutes=3, seconds=10))
    again = bill(world.compute, [a], NOW + timedelta(minutes=3, seconds=20))
    assert (first.windows, again.windows) == (3, 0)  # 12:00:30-12:01, 12:01-12:02, 12:02-12:03
    assert first.debited == 2 * 1000 * 150
    world.compute.release(a, "done", NOW + timedelta(minutes=3, seconds=40))
    last = bill(world.compute, [a], NOW + timedelta(minutes=5))
    assert (last.windows, last.debited) == (1, 2 * 1000 * 40)
    world.compute.confirm_released(a, NOW + timedelta(minutes=4))
    allocation = world.compute.allocation(a)
    assert (allocation.state, allocation.settled, allocation.cost) == ("released", True, 380_000)
    assert len(clocked_system.inventory.get_node(world.nodes[0]).free_gpus) == 2
    assert clocked_system.ledgers.balances(world.tenant).posted == 10_000_000 - 380_000


def test_a_short_window_takes_what_is_left_and_forces_the_release(clocked_system: System) -> None:
    world = stage(
        clocked_system, credit=200_000
    )  # 200 GPU-seconds; the hold needs 600,000: skip it
    a = world.compute.request(
        tenant_id=world.tenant, sku_id=world.sku, region="eu-west-1", count=1, name=None,
        key="k", now=NOW, quota_gpus=16, runway_minutes=0, deadline_seconds=300,
    ).id  # fmt: skip
    world.compute.place(a, world.nodes, NOW)
    world.compute.start_provisioning(a, NOW)
    world.compute.mark_running(a, NOW)
    done = bill(world.compute, [a], NOW + timedelta(minutes=5))
    assert done.forced == [a] and done.debited == 200_000
    assert world.compute.allocation(a).state == "force_releasing"
    assert clocked_system.ledgers.balances(world.tenant).available == 0


def test_many_allocations_load_in_one_go_from_their_snapshots(clocked_system: System) -> None:
    """A long-running allocation is snapshotted as windows pile up; the batch load (snapshot
    plus later events) gives exactly what a one-by-one replay gives."""
    world = stage(clocked_system, credit=10_000_000_000)
    long_run, fresh = world.request("long").id, world.request("fresh").id
    for a in (long_run, fresh):
        world.compute.place(a, world.nodes, NOW)
        world.compute.start_provisioning(a, NOW)
        world.compute.mark_running(a, NOW)
    bill(world.compute, [long_run], NOW + timedelta(minutes=70))  # 60 windows (one pass's cap)
    bill(world.compute, [long_run], NOW + timedelta(minutes=70))  # and the 10 after them
    snapshots = clocked_system.compute.snapshots
    assert snapshots is not None and list(snapshots.get(long_run))  # taken at version 50

    loaded = world.compute.find_many(Allocation, [long_run, fresh, world.sku])
    replayed: dict[UUID, Any] = {a: world.compute.repository.get(a) for a in (long_run, fresh)}
    assert set(loaded) == {long_run, fresh}  # the SKU's id is not an allocation here
    for a, allocation in loaded.items():
        assert allocation.version == replayed[a].version
        assert (allocation.cost, allocation.billed_through) == (
            replayed[a].cost, replayed[a].billed_through
        )  # fmt: skip
    assert loaded[long_run].billed_through == NOW + timedelta(minutes=70)
