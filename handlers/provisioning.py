"""The provisioning saga: moves one allocation one step on from the state it is in.

The saga keeps no state of its own. Each call reads the allocation and does the next step:

    requested      -> claim GPUs on a node (or fail no_capacity, compensated at once)
    reserved       -> record that provisioning started
    provisioning   -> ask the node's driver for the instance; running when it answers, and
                      past the SKU's deadline or on a driver error: release whatever the driver
                      may have started, then fail (claim and hold given back in that same
                      transaction)
    releasing, force_releasing, release_failed
                   -> ask the driver to release; released when it confirms, else
                      release_failed and a retry later (with backoff, by the caller)
    failed, released (not settled) -> settle

Because every step is decided from the stored state and every command and driver call is
idempotent, a worker killed anywhere re-runs the step it was in and finishes the allocation
exactly once: the claim id is per allocation, the hold key is per allocation, the driver keys
instances by allocation id. Duplicate or reordered trigger events only cause a step to be
looked at again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from domain.allocation import (
    PROVISIONING,
    RELEASING_STATES,
    REQUESTED,
    RESERVED,
    TERMINAL,
    Allocation,
)
from domain.catalog import Node
from handlers.allocations import Allocations
from handlers.ports import Clock, DriverError, DriverTimeoutError, InstanceSpec, NodeDriver

R = TypeVar("R")
Candidates = Callable[[Allocation], Awaitable[list[UUID]]]


class StepFailedError(Exception):
    """The step could not finish now (a node did not confirm); the caller retries later."""


class ReleaseNotConfirmedError(StepFailedError):
    """The node did not confirm a release: GPUs may still be in use (alert on these)."""


@dataclass
class Provisioning:
    """The saga's steps over the allocations application and the node drivers."""

    allocations: Allocations
    drivers: Callable[[str], NodeDriver]
    candidates: Candidates
    clock: Clock
    call_timeout: float = 30.0

    async def advance(self, allocation_id: UUID) -> str:
        """Do the next step; returns the state the allocation is in afterwards."""
        allocation = await self._run(self.allocations.allocation, allocation_id)
        step = STEPS.get(allocation.state)
        if step is None or allocation.settled:  # settled: terminal, nothing left to give back
            return str(allocation.state)
        after: Allocation | str = await step(self, allocation)
        return after if isinstance(after, str) else str(after.state)

    async def _place(self, allocation: Allocation) -> str:
        nodes = await self.candidates(allocation)
        return await self._run(self.allocations.place, allocation.id, nodes, self.clock())

    async def _start(self, allocation: Allocation) -> Allocation:
        return await self._run(self.allocations.start_provisioning, allocation.id, self.clock())

    async def _provision(self, allocation: Allocation) -> Allocation:
        driver, spec = await self._driver_and_spec(allocation)
        remaining = (allocation.deadline - self.clock()).total_seconds()
        if remaining <= 0:
            return await self._give_up(allocation, "provisioning_timeout", "deadline passed")
        try:
            await driver.provision(spec, min(remaining, self.call_timeout))
        except DriverTimeoutError as slow:
            if allocation.past_deadline(self.clock()):
                return await self._give_up(allocation, "provisioning_timeout", str(slow))
            raise StepFailedError(f"node slow to provision: {slow}") from slow
        except DriverError as refused:
            return await self._give_up(allocation, "provider_error", str(refused))
        return await self._run(self.allocations.mark_running, allocation.id, self.clock())

    async def _give_up(self, allocation: Allocation, reason: str, detail: str) -> Allocation:
        """Compensate: nothing may be left running on the node before the claim is freed."""
        driver, spec = await self._driver_and_spec(allocation)
        try:
            await driver.release(spec, self.call_timeout)
        except DriverError as stuck:
            raise ReleaseNotConfirmedError(f"could not clean up after {reason}: {stuck}") from stuck
        fail = self.allocations.fail
        return await self._run(fail, allocation.id, reason, detail[:500], self.clock())

    async def _release(self, allocation: Allocation) -> Allocation:
        if allocation.node_id is not None:
            driver, spec = await self._driver_and_spec(allocation)
            try:
                await driver.release(spec, self.call_timeout)
            except DriverError as stuck:
                error = str(stuck)[:500] or type(stuck).__name__
                await self._run(self.allocations.release_failed, allocation.id, error, self.clock())
                raise ReleaseNotConfirmedError(f"release not confirmed: {error}") from stuck
        return await self._run(self.allocations.confirm_released, allocation.id, self.clock())

    async def _settle(self, allocation: Allocation) -> Allocation:
        return await self._run(self.allocations.settle, allocation.id, self.clock())

    async def _driver_and_spec(self, allocation: Allocation) -> tuple[NodeDriver, InstanceSpec]:
        assert allocation.node_id is not None  # reserved before provisioning, by the states
        node = await self._run(self.allocations.inventory.get, Node, allocation.node_id)
        spec = InstanceSpec(
            allocation.id, allocation.tenant_id, node.id, node.address, allocation.gpu_indices
        )
        return self.drivers(node.driver), spec

    @staticmethod
    async def _run(call: Callable[..., R], *args: Any) -> R:
        """eventsourcing is synchronous: its calls run in a worker thread."""
        return await asyncio.to_thread(partial(call, *args))


Step = Callable[[Provisioning, Allocation], Awaitable[Allocation | str]]
STEPS: dict[str, Step] = {
    REQUESTED: Provisioning._place,
    RESERVED: Provisioning._start,
    PROVISIONING: Provisioning._provision,
    **dict.fromkeys(RELEASING_STATES, Provisioning._release),
    **dict.fromkeys(TERMINAL, Provisioning._settle),
}
"""A step for every state that wants one (``SAGA_STATES`` and the unsettled ends)."""
