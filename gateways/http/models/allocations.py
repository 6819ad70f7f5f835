"""HTTP shapes of allocations and usage. Money is integer micro-dollars; counts are strict
integers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StrictInt

from domain.allocation import ACTIONS
from domain.quota import MAX_LIMIT as MAX_QUOTA
from gateways.http.models.common import ListQuery, Region, Strict
from gateways.http.text import text


class RequestAllocation(Strict):
    sku_id: UUID
    region: Region
    count: Annotated[StrictInt, Field(ge=1, le=64, description="how many of the SKU, one node")] = 1
    name: str | None = text(64, min_length=1, default=None)


class ReleaseAllocation(Strict):
    reason: str = text(200, min_length=1, default="released by the tenant")


class AllocationOut(BaseModel):
    id: UUID
    tenant_id: UUID
    sku_id: UUID
    region: str
    name: str | None
    state: str
    allowed_actions: list[str] = Field(description="what POST /v1/allocations/{id}/... accepts now")
    failure_reason: str | None = Field(
        description="no_capacity, provisioning_timeout, provider_error, insufficient_funds "
        "or instance_lost when state is failed"
    )
    failure_detail: str | None = None
    release_reason: str | None = None
    node_id: UUID | None
    gpu_count: int
    gpu_indices: list[int] | None = None
    price_per_gpu_hour: int | None = Field(default=None, description="micro-dollars")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    released_at: datetime | None = None
    billed_through: datetime | None = None
    cost_micro: int = Field(description="integer micro-dollars billed so far")
    version: int
    step_attempts: int | None = Field(
        default=None, description="tries of the current provisioning or release step"
    )
    step_error: str | None = Field(
        default=None, description="why the last try of the current step failed (it is retried)"
    )

    @classmethod
    def of(cls, row: dict[str, Any]) -> AllocationOut:
        return cls(**row, allowed_actions=list(ACTIONS.get(row["state"], ())))


class AllocationPage(BaseModel):
    items: list[AllocationOut]
    next_cursor: str | None


class AllocationQuery(ListQuery):
    sort: Literal["created_at"] = "created_at"
    tenant_id: UUID | None = Field(default=None, description="ops only: whose allocations")
    state: str | None = Field(default=None, max_length=40)
    region: Region | None = None
    sku_id: UUID | None = None

    def filters(self) -> dict[str, Any]:
        return {"state": self.state, "region": self.region, "sku_id": self.sku_id}


class UsageWindowOut(BaseModel):
    allocation_id: UUID
    window_start: datetime
    window_end: datetime
    seconds: int
    gpus: int
    price_per_gpu_hour: int = Field(description="micro-dollars per GPU-hour")
    amount: int = Field(description="micro-dollars owed for the window")
    taken: int = Field(description="micro-dollars the ledger debited (less when credit ran out)")
    posting_key: str | None = Field(description="the ledger posting's idempotency key")


class UsagePage(BaseModel):
    items: list[UsageWindowOut]
    next_cursor: str | None


class AllocationUsageQuery(ListQuery):
    """One allocation's windows: the allocation is the path's, so not a query parameter."""

    sort: Literal["window_start"] = "window_start"


class UsageQuery(AllocationUsageQuery):
    tenant_id: UUID | None = Field(default=None, description="ops only: whose usage")
    allocation_id: UUID | None = None

    def filters(self) -> dict[str, Any]:
        return {"allocation_id": self.allocation_id}


class SetQuota(Strict):
    gpus: Annotated[StrictInt, Field(ge=0, le=MAX_QUOTA)] | None = Field(
        description="the tenant's GPU limit; null: back to the platform's default",
        examples=[16],
    )


class QuotaOut(BaseModel):
    tenant_id: UUID
    gpus_limit: int = Field(description="the most GPUs the tenant's live allocations may hold")
    gpus_in_use: int
    default: bool = Field(description="true: the platform's default limit applies")
