"""The reconciler: compares what the node drivers report with the allocations, and fixes drift.

- An instance whose allocation is unknown, failed or released is an orphan: it is released
  (it would otherwise hold GPUs nobody pays for).
- A RUNNING allocation whose node reports no instance, and whose instance fails a direct
  health check too, is lost: it fails with ``instance_lost``, which stops its billing at that
  moment and gives back its claim.

Only the write model decides: the read model proposes, the reconciler re-reads each candidate
from the event store before acting, so a lagging read model cannot fail a healthy allocation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from uuid import UUID

from domain.allocation import RUNNING, TERMINAL, Allocation
from domain.catalog import Node
from handlers.allocations import Allocations
from handlers.ports import Clock, DriverError, InstanceSpec, NodeDriver


@dataclass
class Drift:
    orphans: list[UUID] = field(default_factory=list)  # allocation ids of released orphans
    lost: list[UUID] = field(default_factory=list)
    unreachable: list[UUID] = field(default_factory=list)  # nodes that did not answer


@dataclass
class Reconciler:
    allocations: Allocations
    drivers: Callable[[str], NodeDriver]
    clock: Clock
    timeout: float = 30.0

    async def reconcile(self, nodes: Iterable[UUID], running: Iterable[UUID]) -> Drift:
        """``nodes`` to ask; ``running``: the allocations the read model shows running."""
        drift, reported = Drift(), set[UUID]()
        for node_id in nodes:
            node = await asyncio.to_thread(self.allocations.inventory.get, Node, node_id)
            try:
                present = await self.drivers(node.driver).instances(
                    node.id, node.address, self.timeout
                )
            except DriverError:
                drift.unreachable.append(node.id)
                continue
            reported |= present
            for allocation_id in present:
                await self._check_orphan(node, allocation_id, drift)
        for allocation_id in set(running) - reported:
            await self._check_lost(allocation_id, drift, drift.unreachable)
        return drift

    async def _check_orphan(self, node: Node, allocation_id: UUID, drift: Drift) -> None:
        found = await asyncio.to_thread(self.allocations.find, Allocation, allocation_id)
        if found is not None and found.state not in TERMINAL:
            return
        tenant = found.tenant_id if found else UUID(int=0)
        spec = InstanceSpec(allocation_id, tenant, node.id, node.address, ())
        try:
            await self.drivers(node.driver).release(spec, self.timeout)
        except DriverError:
            return  # still there: counted again on the next pass
        drift.orphans.append(allocation_id)

    async def _check_lost(self, allocation_id: UUID, drift: Drift, unreachable: list[UUID]) -> None:
        allocation = await asyncio.to_thread(self.allocations.allocation, allocation_id)
        node_id = allocation.node_id
        if allocation.state != RUNNING or node_id is None or node_id in unreachable:
            return
        node = await asyncio.to_thread(self.allocations.inventory.get, Node, node_id)
        spec = InstanceSpec(
            allocation.id, allocation.tenant_id, node.id, node.address, allocation.gpu_indices
        )
        try:
            if await self.drivers(node.driver).healthy(spec, self.timeout):
                return
        except DriverError:
            return  # cannot tell: do not fail a tenant's allocation on a flaky node
        now = self.clock()
        detail = f"node {node.id} reports no instance for it"
        await asyncio.to_thread(
            partial(self.allocations.fail, allocation.id, "instance_lost", detail, now)
        )
        drift.lost.append(allocation.id)
