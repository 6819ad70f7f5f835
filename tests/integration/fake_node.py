"""A node driver double for the saga tests: a shared in-memory node, with failures on demand.

The real drivers (infra/drivers) have their own tests against real processes and a real SSH
server; here the subject is the saga, so the node must be able to refuse, hang, or let the
test "kill the worker" right after it acted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from uuid import UUID

from handlers.ports import DriverError, DriverTimeoutError, Instance, InstanceSpec


class Crash(BaseException):
    """The worker died here (BaseException: no handler of the code under test catches it)."""


@dataclass
class FakeNode:
    running: dict[UUID, InstanceSpec] = field(default_factory=dict)
    starts: int = 0
    stops: int = 0
    refuse: str | None = None  # "provision" or "release": that call fails
    hang: str | None = None  # that call never answers
    crash_after: str | None = None  # the worker dies right after that call acted (once)

    async def provision(self, spec: InstanceSpec, timeout: float) -> Instance:
        await self._trouble("provision", timeout)
        if spec.allocation_id not in self.running:
            self.running[spec.allocation_id] = spec
            self.starts += 1
        self._maybe_crash("provision")
        return Instance(spec.allocation_id, spec.node_id, f"fake-{spec.allocation_id}")

    async def healthy(self, spec: InstanceSpec, timeout: float) -> bool:
        return spec.allocation_id in self.running

    async def release(self, spec: InstanceSpec, timeout: float) -> None:
        await self._trouble("release", timeout)
        if self.running.pop(spec.allocation_id, None) is not None:
            self.stops += 1
        self._maybe_crash("release")

    async def instances(self, node_id: UUID, address: str | None, timeout: float) -> set[UUID]:
        return {a for a, s in self.running.items() if s.node_id == node_id}

    async def _trouble(self, call: str, timeout: float) -> None:
        if self.hang == call:
            await asyncio.sleep(timeout)
            raise DriverTimeoutError(f"{call}: no answer in {timeout:.2f} s")
        if self.refuse == call:
            raise DriverError(f"{call}: the node refused (exit status 1)")

    def _maybe_crash(self, call: str) -> None:
        if self.crash_after == call:
            self.crash_after = None
            raise Crash(call)
