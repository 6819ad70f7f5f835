"""The GPU quota of a tenant: the GPUs its live allocations hold.

Admission reserves an allocation's GPUs here and settlement frees them, each in the same
transaction as the allocation's own event (handlers/unit_of_work.py). Two requests racing for
the last GPUs of a quota therefore race on this aggregate's version: one saves, the other
reloads, decides again and is refused. A read model could only give a soft limit.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError

T = "gpucloud.compute.GpuQuota."
_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/quota")


class QuotaExceededError(DomainError):
    """The tenant would hold more GPUs than its quota allows."""


class GpuQuota(Aggregate):
    TOPIC = "gpucloud.compute.GpuQuota"

    class Event(Aggregate.Event):
        TOPIC = T + "Event"

    @staticmethod
    def create_id(tenant_id: UUID) -> UUID:
        return uuid5(_NAMESPACE, str(tenant_id))

    @event("Opened", topic=T + "Opened")
    def __init__(self, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.held: dict[UUID, int] = {}

    @property
    def in_use(self) -> int:
        return sum(self.held.values())

    def reserve(self, allocation_id: UUID, gpus: int, limit: int) -> None:
        """Hold ``gpus`` for the allocation, within ``limit``; again for the same one: nothing."""
        if allocation_id in self.held:
            return
        if self.in_use + gpus > limit:
            raise QuotaExceededError(
                f"{gpus} more GPUs would exceed the tenant's quota of {limit} ({self.in_use} in "
                "use): release an allocation or ask ops to raise the quota"
            )
        self._reserved(self.tenant_id, allocation_id, gpus)

    def free(self, allocation_id: UUID) -> None:
        """Give the allocation's GPUs back; one that holds none: nothing."""
        if allocation_id in self.held:
            self._freed(self.tenant_id, allocation_id, self.held[allocation_id])

    @event("Reserved", topic=T + "Reserved")
    def _reserved(self, tenant_id: UUID, allocation_id: UUID, gpus: int) -> None:
        self.held[allocation_id] = gpus

    @event("Freed", topic=T + "Freed")
    def _freed(self, tenant_id: UUID, allocation_id: UUID, gpus: int) -> None:
        del self.held[allocation_id]
