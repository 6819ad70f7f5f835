"""Ports the handlers need from the outside world, implemented in ``infra/``.

A node driver turns an allocation into an instance on a node and back. Every call is
idempotent, keyed by the allocation id: provisioning an allocation that already has an
instance returns that instance, releasing one that has none confirms at once. That is what lets
the provisioning saga repeat any step after a crash without a second instance or a lost
release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent

Clock = Callable[[], datetime]
"""What time it is (timezone-aware UTC). One clock is built into the System and handed to
everything that asks the time, so a test drives them all from the same instant."""


class DriverError(Exception):
    """The node refused or failed the call (a ``provider_error`` when provisioning)."""


class DriverTimeoutError(DriverError):
    """The node did not answer within the call's deadline."""


@dataclass(frozen=True)
class InstanceSpec:
    """What to run for one allocation, and where."""

    allocation_id: UUID
    tenant_id: UUID
    node_id: UUID
    address: str | None  # host:port of an ssh node; None for the local node
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class Instance:
    """An instance a driver runs: ``handle`` is the driver's own name for it (a process group
    id, a container id)."""

    allocation_id: UUID
    node_id: UUID
    handle: str


class NodeDriver(Protocol):
    """One kind of node (``local``, ``ssh``). ``timeout`` bounds each call, in seconds."""

    async def provision(self, spec: InstanceSpec, timeout: float) -> Instance:
        """Start the allocation's instance (or return the one already running)."""
        ...

    async def healthy(self, spec: InstanceSpec, timeout: float) -> bool:
        """Whether the allocation's instance exists and passes its health check."""
        ...

    async def release(self, spec: InstanceSpec, timeout: float) -> None:
        """Stop the instance and confirm it is gone; raise DriverError when the node does not
        confirm. An allocation without an instance is released already."""
        ...

    async def instances(self, node_id: UUID, address: str | None, timeout: float) -> set[UUID]:
        """The allocation ids of every instance present on the node (for the reconciler)."""
        ...


class StoreReads(Protocol):
    """The store reads an application needs beyond the library's repository: many
    aggregates' events and latest snapshots at once, and dropping the snapshots no load will
    read again. ``recorder`` is the application's (or its snapshot store's) recorder. The
    PostgreSQL implementation (infra/store_reads.py) does each in one query; ``OneByOne``
    (handlers/base.py) uses only the library's recorder API, so it serves any store."""

    def events_after(
        self, recorder: object, starts: Sequence[tuple[UUID, int]]
    ) -> list[StoredEvent]:
        """Every aggregate's events after its version, in version order."""
        ...

    def latest_snapshots(self, recorder: object, ids: Sequence[UUID]) -> list[StoredEvent]:
        """Each aggregate's latest snapshot, for those that have one."""
        ...

    def drop_older_snapshots(self, recorder: object, latest: Sequence[tuple[UUID, int]]) -> None:
        """Forget each aggregate's snapshots older than the version given."""
        ...

    def stream_rows(self, recorder: object, ids: Sequence[UUID]) -> list[tuple[Any, ...]]:
        """(position in ``ids`` from 1, version, topic, state bytes) of every event of each
        aggregate, aggregate by aggregate in version order: the auditor's batched read."""
        ...
