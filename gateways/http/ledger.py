"""HTTP routes of the ledger: balances, postings and holds for the tenant's billing people and
auditors; adjustments for ops. Money is integer micro-dollars, as a string in request bodies."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Query, Request, Response

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import Principal
from domain.ledger_hash import ledger_id_of
from domain.ledger_terms import InsufficientFundsError, Receipt
from domain.tenant import Tenant
from gateways.http.auth import OPS_ONLY, Guard, tenant_scope
from gateways.http.models.common import Instant
from gateways.http.models.ledger import (
    Adjustment,
    BalancesOut,
    HoldItem,
    HoldPage,
    HoldState,
    Kind,
    PlatformAccount,
    PostingItem,
    PostingPage,
    ReceiptOut,
)
from gateways.http.plumbing import (
    Cursor,
    Direction,
    Limit,
    PositionToken,
    RequiredIdempotencyKey,
    Wrote,
    command,
    read_model,
)
from gateways.http.problems import ProblemError
from gateways.http.responses import raises
from infra.bootstrap import System
from projections import ledger as read
from projections.pagination import DEFAULT_LIMIT, ListSpec, PageRequest, fetch_page

router = APIRouter(prefix="/v1")
TENANT_REQUIRED = (400, "tenant-required")
LEDGER_READERS = Guard("owner", "billing", "auditor", "ops")
Readers = Annotated[Principal, Depends(LEDGER_READERS)]
POSTINGS = ListSpec(
    "ledger_postings",
    ("id", "tenant_id", "version", "kind", "key", "debit_account", "credit_account", "amount",
     "hold_id", "at", "hash"),
    ("at",),
)  # fmt: skip
HOLDS = ListSpec(
    "ledger_holds",
    ("id", "tenant_id", "amount", "state", "expires_at", "placed_at", "closed_at"),
    ("placed_at",),
)


def _tenant(caller: Principal, tenant_id: UUID | None) -> UUID:
    """Tenant roles read their own ledger; ops name the tenant."""
    wanted = tenant_id or caller.tenant_id
    if wanted is None:
        raise ProblemError(*TENANT_REQUIRED, "ops must pass ?tenant_id= to read a ledger")
    return tenant_scope(caller, wanted, "ledger")


TenantParam = Annotated[UUID | None, Query(description="ops only: whose ledger")]
LEDGER_READ = raises(TENANT_REQUIRED, NotFoundError)


@router.get("/ledger", response_model=BalancesOut, operation_id="getLedger", responses=LEDGER_READ)
async def get_ledger(
    request: Request, caller: Readers, tenant_id: TenantParam = None, position: PositionToken = None
) -> BalancesOut:
    tenant = _tenant(caller, tenant_id)
    async with read_model(request, position) as conn:
        row = await read.balances(conn, tenant)
    if row is None:  # no money ever moved: an empty ledger with the default floor
        row = {"posted": 0, "held": 0, "available": 0, "floor": 0, "depleted": False}
    return BalancesOut(tenant_id=tenant, **{k: v for k, v in row.items() if k != "updated_at"})


@router.get(
    "/ledger/postings",
    response_model=PostingPage,
    operation_id="listPostings",
    responses=LEDGER_READ,
)
async def list_postings(
    request: Request,
    caller: Readers,
    tenant_id: TenantParam = None,
    kind: Kind | None = None,
    since: Annotated[Instant | None, Query(description="at >= since")] = None,
    until: Annotated[Instant | None, Query(description="at < until")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "asc",
    position: PositionToken = None,
) -> PostingPage:
    tenant = _tenant(caller, tenant_id)
    filters = {"kind": kind} if kind else {}
    page = PageRequest(tenant, filters, None, direction, limit, cursor, since, until)
    async with read_model(request, position) as conn:
        found = await fetch_page(conn, POSTINGS, page)
    return PostingPage(items=[PostingItem(**i) for i in found.items], next_cursor=found.next_cursor)


@router.get(
    "/ledger/holds", response_model=HoldPage, operation_id="listHolds", responses=LEDGER_READ
)
async def list_holds(
    request: Request,
    caller: Readers,
    tenant_id: TenantParam = None,
    state: HoldState | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "asc",
    position: PositionToken = None,
) -> HoldPage:
    tenant = _tenant(caller, tenant_id)
    page = PageRequest(tenant, {"state": state} if state else {}, None, direction, limit, cursor)
    async with read_model(request, position) as conn:
        found = await fetch_page(conn, HOLDS, page)
    return HoldPage(items=[HoldItem(**i) for i in found.items], next_cursor=found.next_cursor)


@router.post(
    "/admin/tenants/{tenant_id}/ledger/adjustments",
    status_code=201,
    response_model=ReceiptOut,
    operation_id="adjustLedger",
    responses=raises(NotFoundError, ValidationFailedError, InsufficientFundsError, IntegrityError),
)
async def adjust(
    tenant_id: UUID,
    body: Adjustment,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(OPS_ONLY)],
    idempotency_key: RequiredIdempotencyKey,
) -> ReceiptOut:
    """Ops correct a balance with a reason; the same key again answers the same receipt. A
    first adjustment opens the tenant's ledger (the handler's rule)."""

    location = f"/v1/ledger?tenant_id={tenant_id}"

    def run(s: System) -> Receipt:
        s.identity.get(Tenant, tenant_id)  # 404 for a tenant that does not exist
        return s.ledgers.adjust(
            tenant_id, idempotency_key, int(body.amount), body.reason, s.clock()
        )

    return await command(
        request, response, caller, "ledger.adjust", run,
        lambda s, receipt: ReceiptOut.of(receipt),
        lambda r: Wrote(location, read.LEDGER.name, ledger_id_of(tenant_id), r.version),
        created=lambda receipt: not receipt.replayed,
    )  # fmt: skip


@router.get(
    "/admin/ledger/platform-accounts",
    response_model=list[PlatformAccount],
    operation_id="listPlatformAccounts",
)
async def platform_accounts(
    request: Request,
    caller: Annotated[Principal, Depends(OPS_ONLY)],
    position: PositionToken = None,
) -> list[PlatformAccount]:
    """The platform's side of every posting (revenue, payment clearing, promotional credit,
    adjustments): kept by a projection, off the tenants' hot path."""
    async with read_model(request, position) as conn:
        rows = await read.platform_balances(conn)
    return [PlatformAccount(account=a, balance=b) for a, b in rows]
