"""The GPU quota of a tenant: the GPUs its live allocations hold.

Admission reserves an allocation's GPUs here and settlement frees them, each in the same
transaction as the allocation's own event (handlers/unit_of_work.py). Two requests racing for
the last GPUs of a quota therefore race on this aggregate's version: one saves, the other
reloads, decides again and is refused. A read model could only give a soft limit.

The limit is the platform's default (a setting) unless ops set one for the tenant
(``set_limit``). Lowering it below what is in use releases nothing: new requests are refused
until enough is freed.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, ValidationFailedError

T = "gpucloud.compute.GpuQuota."
_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/quota")
MAX_LIMIT = 100_000  # GPUs: far beyond any one tenant, a guard against typos


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
        self.limit: int | None = None  # None: the platform's default

    @property
    def in_use(self) -> int:
        return sum(self.held.values())

    def limit_or(self, default: int) -> int:
        """The tenant's limit: the one ops set, else ``default``."""
        return default if self.limit is None else self.limit

    def set_limit(self, gpus: int | None) -> bool:
        """Ops set the tenant's limit (None: back to the default). True if it changed."""
        if gpus is not None and (
            isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_LIMIT
        ):
            raise ValidationFailedError(f"gpus must be an integer from 0 to {MAX_LIMIT}")
        if gpus == self.limit:
            return False
        self._limit_set(self.tenant_id, gpus)
        return True

    def reserve(self, allocation_id: UUID, gpus: int, default_limit: int) -> None:
        """Hold ``gpus`` for the allocation, within the tenant's limit (``default_limit``
        unless ops set one); again for the same allocation: nothing."""
        if allocation_id in self.held:
            return
        limit = self.limit_or(default_limit)
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

    @event("LimitSet", topic=T + "LimitSet")
    def _limit_set(self, tenant_id: UUID, gpus: int | None) -> None:
        self.limit = gpus


def standing(quota: GpuQuota | None, default_limit: int) -> tuple[int, int, bool]:
    """(limit, GPUs in use, whether the limit is the default) of a tenant's quota; None: a
    tenant that never had one."""
    limit = quota.limit if quota is not None else None
    in_use = quota.in_use if quota is not None else 0
    return (default_limit if limit is None else limit), in_use, limit is None
