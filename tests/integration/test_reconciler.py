"""The reconciler on both write sides (PostgreSQL and in memory): orphans released, lost
instances failed."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from handlers.ports import DriverError, InstanceSpec
from handlers.reconciler import Reconciler
from tests.integration.allocation_world import WriteSide, stage
from tests.integration.fake_node import FakeNode
from tests.integration.test_provisioning_saga import drive, saga

pytestmark = pytest.mark.integration


async def test_an_instance_without_a_live_allocation_is_released(
    each_write_side: WriteSide,
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    kept = world.request().id
    await drive(saga(world, node), kept, "running")
    orphan = InstanceSpec(uuid4(), world.tenant, world.nodes[0], None, (3,))
    await node.provision(orphan, 1)

    drift = await Reconciler(world.compute, lambda kind: node, world.system.clock).reconcile(
        world.nodes, [kept]
    )

    assert drift.orphans == [orphan.allocation_id] and drift.lost == []
    assert set(node.running) == {kept}


async def test_a_running_allocation_whose_instance_vanished_fails_and_stops_billing(
    each_write_side: WriteSide,
) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    lost, fine = world.request().id, world.request().id
    for a in (lost, fine):
        await drive(saga(world, node), a, "running")
    node.running.pop(lost)  # the node rebooted, say

    drift = await Reconciler(world.compute, lambda kind: node, world.system.clock).reconcile(
        world.nodes, [lost, fine]
    )

    allocation = world.compute.allocation(lost)
    assert drift.lost == [lost] and drift.orphans == []
    assert (allocation.state, allocation.failure, allocation.settled) == (
        "failed", "instance_lost", True
    )  # fmt: skip
    assert allocation.billing_ends_at is not None
    assert allocation.billing_ends_at <= world.clock()
    assert world.compute.allocation(fine).state == "running"


async def test_an_unreachable_node_fails_nobody(each_write_side: WriteSide) -> None:
    world, node = stage(each_write_side, credit=10_000_000), FakeNode()
    a = world.request().id
    await drive(saga(world, node), a, "running")

    class Unreachable(FakeNode):
        async def instances(self, node_id: UUID, address: str | None, timeout: float) -> set[UUID]:
            raise DriverError("connection refused")

    drift = await Reconciler(
        world.compute, lambda kind: Unreachable(), world.system.clock
    ).reconcile(world.nodes, [a])
    assert drift.unreachable == [world.nodes[0]] and drift.lost == []
    assert world.compute.allocation(a).state == "running"
