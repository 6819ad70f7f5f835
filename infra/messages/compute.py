"""Wire contract of the compute context: every Allocation event, in order, on one topic.

Each payload names its allocation and its tenant. The request's hash (what makes an
Idempotency-Key replay comparable) stays inside the aggregate; the runway hold's id is public,
as it is in the ledger's own events. Money is integer micro-dollars.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain.allocation import Allocation
from domain.quota import GpuQuota
from infra.messages import names as n
from infra.messages.names import ALLOCATION_TOPIC, QUOTA_TOPIC
from infra.messages.wire import WireEvent, WireModel, published

FailureReason = Literal[
    "no_capacity", "provisioning_timeout", "provider_error", "insufficient_funds", "instance_lost"
]  # domain.allocation.FAILURE_REASONS (a unit test keeps them equal)
Amount = Field(ge=0, le=10**15, description="integer micro-dollars (1e-6 USD)")


class AllocationEvent(WireModel):
    schema_version: Literal[1] = 1
    allocation_id: UUID
    tenant_id: UUID
    at: datetime


class AllocationRequestedV1(AllocationEvent):
    """A tenant asked for GPUs; a runway hold (``hold_id``) covers the first minutes."""

    model_config = ConfigDict(title="AllocationRequested")
    sku_id: UUID
    region: str
    gpus: int = Field(ge=1, description="GPUs in all (the SKU's GPUs x count)")
    price_per_gpu_hour: int = Field(
        ge=1, description="integer micro-dollars (1e-6 USD) per GPU-hour, fixed at request"
    )
    name: str = Field(min_length=1, max_length=64)
    deadline_seconds: int = Field(ge=1, description="how long provisioning may take")
    hold_id: str | None


class AllocationReservedV1(AllocationEvent):
    """GPUs were claimed on a node."""

    model_config = ConfigDict(title="AllocationReserved")
    node_id: UUID
    gpu_indices: list[int]


class AllocationStepV1(AllocationEvent):
    """A step with nothing more to say than when: provisioning started, running, released,
    settled (claim and hold given back). The ce_type says which."""

    model_config = ConfigDict(title="AllocationStep")


class AllocationFailedV1(AllocationEvent):
    model_config = ConfigDict(title="AllocationFailed")
    reason: FailureReason
    detail: str


class AllocationReleaseRequestedV1(AllocationEvent):
    """A release was asked for by the tenant (releasing) or forced when its credit ran out
    (force_releasing); billing stops here."""

    model_config = ConfigDict(title="AllocationReleaseRequested")
    state: Literal["releasing", "force_releasing"]
    reason: str


class AllocationReleaseFailedV1(AllocationEvent):
    """The node did not confirm the release; it is retried."""

    model_config = ConfigDict(title="AllocationReleaseFailed")
    error: str


class AllocationWindowBilledV1(AllocationEvent):
    """One usage window [start, end) was charged: ``taken`` of its ``amount`` could be
    debited (less when the credit ran out)."""

    model_config = ConfigDict(title="AllocationWindowBilled")
    start: datetime
    end: datetime
    seconds: int = Field(ge=0, le=60)
    amount: int = Amount
    taken: int = Amount
    posting_key: str | None


class GpuQuotaChangeV1(WireModel):
    """GPUs of a tenant's quota were reserved for an allocation (admission) or freed by it
    (settlement); ``opened`` starts a tenant's quota with nothing in use (ce_type says which)."""

    model_config = ConfigDict(title="GpuQuotaChange")
    schema_version: Literal[1] = 1
    quota_id: UUID
    tenant_id: UUID
    allocation_id: UUID | None = None
    gpus: int = Field(default=0, ge=0)
    at: datetime


class GpuQuotaLimitV1(WireModel):
    """Ops set a tenant's GPU limit; ``gpus`` null: back to the platform's default."""

    model_config = ConfigDict(title="GpuQuotaLimit")
    schema_version: Literal[1] = 1
    quota_id: UUID
    tenant_id: UUID
    gpus: int | None = Field(ge=0)
    at: datetime


def _quota(ce_type: str, model: type[WireModel] = GpuQuotaChangeV1) -> WireEvent:
    return published(ce_type, QUOTA_TOPIC, model, "quota_id", lambda e: e.tenant_id)


def _on(ce_type: str, model: type[WireModel]) -> WireEvent:
    return published(ce_type, ALLOCATION_TOPIC, model, "allocation_id", lambda e: e.tenant_id, None)


_allocation: Any = Allocation
_quota_class: Any = GpuQuota
ALLOCATION_WIRE: dict[type[Any], WireEvent] = {
    _allocation.Requested: _on(n.ALLOCATION_REQUESTED, AllocationRequestedV1),
    _allocation.Reserved: _on(n.ALLOCATION_RESERVED, AllocationReservedV1),
    _allocation.ProvisioningStarted: _on(n.ALLOCATION_PROVISIONING_STARTED, AllocationStepV1),
    _allocation.Running: _on(n.ALLOCATION_RUNNING, AllocationStepV1),
    _allocation.Failed: _on(n.ALLOCATION_FAILED, AllocationFailedV1),
    _allocation.ReleaseRequested: _on(n.ALLOCATION_RELEASE_REQUESTED, AllocationReleaseRequestedV1),
    _allocation.Released: _on(n.ALLOCATION_RELEASED, AllocationStepV1),
    _allocation.ReleaseFailed: _on(n.ALLOCATION_RELEASE_FAILED, AllocationReleaseFailedV1),
    _allocation.WindowBilled: _on(n.ALLOCATION_WINDOW_BILLED, AllocationWindowBilledV1),
    _allocation.Settled: _on(n.ALLOCATION_SETTLED, AllocationStepV1),
}
QUOTA_WIRE: dict[type[Any], WireEvent] = {
    _quota_class.Opened: _quota(n.QUOTA_OPENED),
    _quota_class.Reserved: _quota(n.QUOTA_RESERVED),
    _quota_class.Freed: _quota(n.QUOTA_FREED),
    _quota_class.LimitSet: _quota(n.QUOTA_LIMIT_SET, GpuQuotaLimitV1),
}
COMPUTE_WIRE = {**ALLOCATION_WIRE, **QUOTA_WIRE}
