"""HTTP routes of allocations: request (202: provisioning goes on in the saga), read, release,
and the usage windows they were billed.

A request needs an ``Idempotency-Key``: the same key and body give the same allocation, however
often the client retries. The quota, the runway hold and the allocation are decided and written
together by the compute context.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Query, Request, Response

from domain.allocation import Allocation, InvalidTransitionError, SkuUnavailableError
from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import Principal
from domain.ledger_terms import InsufficientFundsError
from domain.quota import GpuQuota, QuotaExceededError, standing
from domain.tenant import Tenant
from gateways.http.auth import ANY_ROLE, OPS_ONLY, Guard, own_tenant, readable_tenant
from gateways.http.models.allocations import (
    AllocationOut,
    AllocationPage,
    AllocationQuery,
    AllocationUsageQuery,
    QuotaOut,
    ReleaseAllocation,
    RequestAllocation,
    SetQuota,
    UsagePage,
    UsageQuery,
    UsageWindowOut,
)
from gateways.http.plumbing import (
    PositionToken,
    RequiredIdempotencyKey,
    Wrote,
    command,
    read_model,
    write_model,
)
from gateways.http.responses import raises
from infra.bootstrap import System
from projections import allocations as read

router = APIRouter(prefix="/v1")
Anyone = Annotated[Principal, Depends(ANY_ROLE)]
Users = Annotated[Principal, Depends(Guard("owner", "member"))]
QuotaReaders = Annotated[Principal, Depends(Guard("owner", "billing", "auditor", "ops"))]
ADMISSION = raises(
    ValidationFailedError,
    SkuUnavailableError,
    QuotaExceededError,
    InsufficientFundsError,
    IntegrityError,
)
READ = raises(NotFoundError)


def _at(allocation: Allocation) -> Wrote:
    location = f"/v1/allocations/{allocation.id}"
    return Wrote(location, read.ALLOCATIONS.name, allocation.id, allocation.version)


def _view(allocation: Allocation) -> AllocationOut:
    """The answer to a command, from the write model (the read model may not have it yet)."""
    return AllocationOut.of(
        dict(
            id=allocation.id, tenant_id=allocation.tenant_id, sku_id=allocation.sku_id,
            region=allocation.region, name=allocation.name, state=allocation.state,
            failure_reason=allocation.failure, failure_detail=allocation.detail,
            release_reason=allocation.release_reason, node_id=allocation.node_id,
            gpu_count=allocation.gpus, gpu_indices=list(allocation.gpu_indices) or None,
            price_per_gpu_hour=allocation.price_per_gpu_hour,
            created_at=allocation.requested_at, updated_at=allocation.modified_on,
            started_at=allocation.started_at, released_at=allocation.released_at,
            billed_through=allocation.billed_through, cost_micro=allocation.cost,
            version=allocation.version,
        )
    )  # fmt: skip


@router.post(
    "/allocations",
    status_code=202,
    response_model=AllocationOut,
    operation_id="requestAllocation",
    responses=ADMISSION,
)
async def request_allocation(
    body: RequestAllocation,
    request: Request,
    response: Response,
    caller: Users,
    idempotency_key: RequiredIdempotencyKey,
) -> AllocationOut:
    """Admit an allocation: the SKU is offered in the region, the tenant's quota holds, and a
    runway hold fits the balance. Provisioning then runs asynchronously: follow ``Location``."""
    tenant = own_tenant(caller)
    return await command(
        request, response, caller, "allocation.request",
        lambda s: s.compute.request(
            tenant_id=tenant, sku_id=body.sku_id, region=body.region, count=body.count,
            name=body.name, key=idempotency_key, now=s.clock(),
        ),
        lambda s, written: _view(s.compute.allocation(written.id)),
        lambda w: Wrote(f"/v1/allocations/{w.id}", read.ALLOCATIONS.name, w.id, w.version),
    )  # fmt: skip


@router.post(
    "/allocations/{allocation_id}/release",
    status_code=202,
    response_model=AllocationOut,
    operation_id="releaseAllocation",
    responses=raises(NotFoundError, InvalidTransitionError, IntegrityError),
)
async def release_allocation(
    allocation_id: UUID,
    request: Request,
    response: Response,
    caller: Users,
    body: ReleaseAllocation | None = None,
) -> AllocationOut:
    """Stop the allocation: billing stops now, the node releases it asynchronously. Releasing
    one that is releasing already is accepted again; a released or failed one is a 409."""
    tenant, reason = own_tenant(caller), (body or ReleaseAllocation()).reason
    return await command(
        request, response, caller, "allocation.release",
        lambda s: s.compute.release(allocation_id, reason, s.clock(), tenant),
        lambda s, allocation: _view(allocation), _at,
    )  # fmt: skip


@router.get(
    "/allocations", response_model=AllocationPage, operation_id="listAllocations", responses=READ
)
async def list_allocations(
    request: Request,
    caller: Anyone,
    query: Annotated[AllocationQuery, Query()],
    position: PositionToken = None,
) -> AllocationPage:
    """The caller's tenant's allocations; ops see every tenant's, or one with ``tenant_id``."""
    tenant = readable_tenant(caller, query.tenant_id)
    async with read_model(request, position) as conn:
        page = await read.list_allocations(conn, query.page(tenant))
    items = [AllocationOut.of(i) for i in page.items]
    return AllocationPage(items=items, next_cursor=page.next_cursor)


@router.get(
    "/allocations/{allocation_id}",
    response_model=AllocationOut,
    operation_id="getAllocation",
    responses=READ,
)
async def read_allocation(
    allocation_id: UUID, request: Request, caller: Anyone, position: PositionToken = None
) -> AllocationOut:
    """State, typed failure reason, times, node, cost so far and the allowed actions. Another
    tenant's allocation answers 404, as one that does not exist."""
    async with read_model(request, position) as conn:
        row = await read.get_allocation(conn, allocation_id, readable_tenant(caller))
    if row is None:
        raise NotFoundError("allocation not found")
    return AllocationOut.of(row)


@router.get(
    "/allocations/{allocation_id}/usage",
    response_model=UsagePage,
    operation_id="listAllocationUsage",
    responses=READ,
)
async def allocation_usage(
    allocation_id: UUID,
    request: Request,
    caller: Anyone,
    query: Annotated[AllocationUsageQuery, Query()],
    position: PositionToken = None,
) -> UsagePage:
    """The allocation's billed windows, oldest first."""
    tenant = readable_tenant(caller)
    async with read_model(request, position) as conn:
        if await read.get_allocation(conn, allocation_id, tenant) is None:
            raise NotFoundError("allocation not found")
        pinned = replace(query.page(tenant), filters={"allocation_id": allocation_id})
        page = await read.list_usage(conn, pinned)
    return UsagePage(items=[UsageWindowOut(**i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/usage", response_model=UsagePage, operation_id="listUsage", responses=READ)
async def usage(
    request: Request,
    caller: Anyone,
    query: Annotated[UsageQuery, Query()],
    position: PositionToken = None,
) -> UsagePage:
    """Every billed window of the tenant (ops: of every tenant, or one with ``tenant_id``)."""
    tenant = readable_tenant(caller, query.tenant_id)
    async with read_model(request, position) as conn:
        page = await read.list_usage(conn, query.page(tenant))
    return UsagePage(items=[UsageWindowOut(**i) for i in page.items], next_cursor=page.next_cursor)


def _quota_view(sys: System, tenant_id: UUID, quota: GpuQuota | None) -> QuotaOut:
    limit, in_use, is_default = standing(quota, sys.compute.admission.quota_gpus)
    return QuotaOut(tenant_id=tenant_id, gpus_limit=limit, gpus_in_use=in_use, default=is_default)


@router.get(
    "/quota",
    response_model=QuotaOut,
    operation_id="getQuota",
    responses=raises(NotFoundError, ValidationFailedError),
)
async def get_quota(
    request: Request,
    caller: QuotaReaders,
    tenant_id: Annotated[UUID | None, Query(description="ops only: whose quota")] = None,
    position: PositionToken = None,
) -> QuotaOut:
    """The tenant's GPU limit and what its live allocations hold, from the write model (the
    same numbers admission decides on)."""
    tenant = readable_tenant(caller, tenant_id)
    if tenant is None:
        raise ValidationFailedError("ops name the tenant: ?tenant_id=<uuid>")
    return await write_model(
        request, position, lambda s: _quota_view(s, tenant, s.compute.quota(tenant))
    )


@router.put(
    "/admin/tenants/{tenant_id}/quota",
    response_model=QuotaOut,
    operation_id="setQuota",
    responses=raises(NotFoundError, ValidationFailedError, IntegrityError),
)
async def set_quota(
    tenant_id: UUID,
    body: SetQuota,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(OPS_ONLY)],
) -> QuotaOut:
    """Ops set a tenant's GPU limit (``null``: the platform's default). A limit below what is
    in use frees nothing: new requests are refused until enough is released. Setting the same
    limit again changes nothing (PUT)."""

    def change(s: System) -> GpuQuota:
        s.identity.get(Tenant, tenant_id)  # an unknown tenant is a 404
        return s.compute.set_quota(tenant_id, body.gpus)

    return await command(
        request, response, caller, "quota.set", change,
        lambda s, quota: _quota_view(s, tenant_id, quota),
    )  # fmt: skip
