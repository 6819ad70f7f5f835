"""The provisioning saga on both write sides (PostgreSQL and in memory): failures, deadlines,
and a worker killed between any two steps finish every allocation exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from domain.allocation import Allocation
from handlers.provisioning import Provisioning, StepFailedError
from tests.integration.allocation_world import World, WriteSide, stage
from tests.integration.fake_node import Crash, FakeNode

pytestmark = pytest.mark.integration
SETTLED_STATES = ("failed", "released")


def saga(world: World, node: FakeNode) -> Provisioning:
    async def candidates(allocation: Allocation) -> list[UUID]:
        return list(world.nodes)

    return Provisioning(world.compute, lambda kind: node, candidates, world.system.clock, 0.2)


async def drive(provisioning: Provisioning, allocation_id: UUID, until: str, steps: int = 8) -> str:
    """Step as the worker does: a step that could not finish now is tried again."""
    state = ""
    for _ in range(steps):
        try:
            state = await provisioning.advance(allocation_id)
        except StepFailedError:
            continue
        if state == until:
            return state
    return state


def settled_once(world: World, allocation_id: UUID) -> None:
    """One claim and one release on the node; one hold and one void (or nothing) on the ledger."""
    node_events = world.system.inventory.repository.event_store.get(world.nodes[0])
    kinds = [type(e).__name__ for e in node_events]
    assert kinds.count("CapacityClaimed") == kinds.count("ClaimReleased") <= 1
    ledger = world.system.ledgers.ledger(world.tenant)
    assert ledger.held == 0
    assert sum(1 for h in ledger.holds.values() if h.state != "open") <= 1
    allocation = world.compute.allocation(allocation_id)
    assert allocation.settled and allocation.state in SETTLED_STATES


async def test_a_driver_error_fails_with_provider_error_and_compensates(
    each_write_side: WriteSide,
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode(refuse="provision")
    a = world.request().id
    assert await drive(saga(world, node), a, "failed") == "failed"
    allocation = world.compute.allocation(a)
    assert allocation.failure == "provider_error" and "refused" in (allocation.detail or "")
    settled_once(world, a)
    assert node.running == {}


async def test_a_driver_hanging_past_the_deadline_fails_with_provisioning_timeout(
    each_write_side: WriteSide,
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode(hang="provision")
    a = world.request(now=world.clock() - timedelta(seconds=299.5)).id  # deadline 300 s
    provisioning = saga(world, node)
    assert await drive(provisioning, a, "failed") == "failed"
    assert world.compute.allocation(a).failure == "provisioning_timeout"
    settled_once(world, a)


async def test_a_release_the_node_does_not_confirm_is_retried_until_it_does(
    each_write_side: WriteSide,
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    a = world.request().id
    provisioning = saga(world, node)
    await drive(provisioning, a, "running")
    world.compute.release(a, "done", world.clock())
    node.refuse = "release"
    for _ in range(2):
        with pytest.raises(StepFailedError):
            await provisioning.advance(a)
    stuck = world.compute.allocation(a)
    assert (stuck.state, stuck.release_attempts) == ("release_failed", 2)
    node.refuse = None
    assert await drive(provisioning, a, "released") == "released"
    settled_once(world, a)
    assert node.running == {}


CRASH_POINTS = [
    "place", "start_provisioning", "driver:provision", "mark_running", "release",
    "driver:release", "confirm_released",
]  # fmt: skip


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_worker_killed_after_any_step_finishes_the_allocation_once(
    each_write_side: WriteSide, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    a = world.request().id
    if point.startswith("driver:"):
        node.crash_after = point.removeprefix("driver:")
    else:
        _crash_once_after(monkeypatch, world, point)
    first = saga(world, node)
    with pytest.raises(Crash):
        await _lifecycle(first, world, a)
    restarted = saga(world, node)  # a new worker: nothing carried over but the stores
    await _lifecycle(restarted, world, a)
    assert node.starts == 1 and node.stops == 1 and node.running == {}
    settled_once(world, a)


async def test_duplicate_and_reordered_triggers_change_nothing(each_write_side: WriteSide) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    a = world.request().id
    provisioning = saga(world, node)
    await drive(provisioning, a, "running")
    for _ in range(3):  # the saga is woken again by old events: still running, one instance
        assert await provisioning.advance(a) == "running"
    assert node.starts == 1


async def _lifecycle(provisioning: Provisioning, world: World, a: UUID) -> None:
    await drive(provisioning, a, "running")
    if "release" in world.compute.allocation(a).allowed_actions:
        world.compute.release(a, "done", world.clock())
    await drive(provisioning, a, "released")
    await provisioning.advance(a)  # settled already: a no-op


def _crash_once_after(monkeypatch: pytest.MonkeyPatch, world: World, name: str) -> None:
    real = getattr(world.compute, name)
    crashed: list[str] = []

    def then_crash(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if not crashed:
            crashed.append(name)
            raise Crash(name)
        return result

    monkeypatch.setattr(world.compute, name, then_crash)
