"""HTTP routes of the identity context: tenants, the caller's profile, users, API keys, and the
tenant's lists (users, keys, audit events; cursor-paginated)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Query, Request, Response

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import KeyGrant, Principal, User
from gateways.http.auth import ANY_ROLE, AUDIT, OPS_ONLY, OWNER, own_tenant, tenant_scope
from gateways.http.models.identity import (
    AuditItem,
    AuditPage,
    CreateKey,
    CreateTenant,
    CreateUser,
    KeyItem,
    KeyOut,
    KeyPage,
    MeOut,
    RevokedOut,
    TenantCreatedOut,
    TenantOut,
    TenantRole,
    UserItem,
    UserOut,
    UserPage,
)
from gateways.http.plumbing import (
    Cursor,
    Direction,
    IdempotencyKey,
    Limit,
    PositionToken,
    Wrote,
    command,
    read_model,
    write_model,
)
from gateways.http.responses import raises
from handlers.identity import IssuedKey, TenantOpened, Written
from infra.bootstrap import System
from projections.identity import API_KEYS
from projections.identity import USERS as USERS_VIEW
from projections.pagination import DEFAULT_LIMIT, ListSpec, PageRequest, fetch_page
from projections.tenants import TENANTS, get_tenant

router = APIRouter(prefix="/v1")
Anyone = Annotated[Principal, Depends(ANY_ROLE)]
Ops = Annotated[Principal, Depends(OPS_ONLY)]
Owner = Annotated[Principal, Depends(OWNER)]
USERS = ListSpec("users", ("id", "tenant_id", "email", "role", "created_at"), ("created_at",))
KEYS = ListSpec(
    "api_keys",
    ("id", "tenant_id", "user_id", "role", "read_only", "name", "prefix", "expires_at",
     "revoked_at", "created_at"),
    ("created_at",),
)  # fmt: skip
AUDIT_EVENTS = ListSpec(
    "audit_events",
    ("id", "tenant_id", "type", "subject", "sequence", "actor", "occurred_at", "data"),
    ("occurred_at",),
)


def _tenant_at(tenant: Written) -> Wrote:
    return Wrote(f"/v1/tenants/{tenant.id}", TENANTS.name, tenant.id, tenant.version)


def _tenant_created(sys: System, opened: TenantOpened) -> TenantCreatedOut:
    tenant = sys.identity.get_tenant(opened.tenant.id)
    return TenantCreatedOut(
        id=tenant.id,
        name=tenant.name,
        created_at=tenant.created_on,
        version=tenant.version,
        owner_user_id=opened.owner_id,
        owner_api_key=opened.key.token if opened.key else None,
    )


@router.post(
    "/tenants",
    status_code=201,
    response_model=TenantCreatedOut,
    operation_id="createTenant",
    responses=raises(ValidationFailedError),
)
async def create_tenant(
    body: CreateTenant,
    request: Request,
    response: Response,
    caller: Ops,
    idempotency_key: IdempotencyKey = None,
) -> TenantCreatedOut:
    return await command(
        request, response, caller, "tenant.create",
        lambda s: s.identity.create_tenant(body.name, idempotency_key, s.clock(), body.owner_email),
        _tenant_created,
        wrote=lambda o: _tenant_at(o.tenant),
        created=lambda o: o.tenant.created,
    )  # fmt: skip


@router.get(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    operation_id="getTenant",
    responses=raises(NotFoundError),
)
async def read_tenant(
    tenant_id: UUID, request: Request, caller: Anyone, position: PositionToken = None
) -> TenantOut:
    tenant_scope(caller, tenant_id, "tenant")
    async with read_model(request, position) as conn:
        row = await get_tenant(conn, tenant_id)
    if row is None:
        raise NotFoundError("tenant not found")
    return TenantOut(**row)


def _me(caller: Principal, user: User | None) -> MeOut:
    return MeOut(
        key_id=caller.key_id,
        user_id=caller.user_id,
        email=user.email if user else None,
        tenant_id=caller.tenant_id,
        role=caller.role,
        read_only=caller.read_only,
    )


@router.get("/me", response_model=MeOut, operation_id="getMe")
async def me(request: Request, caller: Anyone, position: PositionToken = None) -> MeOut:
    """The caller's profile, read from the write side (exact, never behind)."""
    user_id = caller.user_id
    return await write_model(
        request, position, lambda s: _me(caller, s.identity.get(User, user_id) if user_id else None)
    )


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    operation_id="createUser",
    responses=raises(ValidationFailedError),
)
async def create_user(
    body: CreateUser,
    request: Request,
    response: Response,
    caller: Owner,
    idempotency_key: IdempotencyKey = None,
) -> UserOut:
    tenant_id = own_tenant(caller)
    return await command(
        request, response, caller, "user.create",
        lambda s: s.identity.add_user(tenant_id, body.email, body.role, idempotency_key),
        lambda s, w: _user(s.identity.get(User, w.id)),
        wrote=lambda w: Wrote(f"/v1/users/{w.id}", USERS_VIEW.name, w.id, w.version),
    )  # fmt: skip


def _user(user: User) -> UserOut:
    return UserOut(id=user.id, tenant_id=user.tenant_id, email=user.email, role=user.role)


def _grant(sys: System, caller: Principal, body: CreateKey) -> KeyGrant:
    """The key's terms: for the caller or another user of the tenant, with that user's role."""
    user_id = body.user_id or caller.user_id
    assert user_id is not None  # an owner's key always belongs to a user
    user = sys.identity.get(User, user_id)
    tenant_scope(caller, user.tenant_id, "user")
    return KeyGrant(
        caller.tenant_id, user_id, user.role, body.read_only, body.name, body.expires_at
    )


def _key(grant: KeyGrant, issued: IssuedKey) -> KeyOut:
    return KeyOut(
        id=issued.id,
        token=issued.token,
        name=grant.name,
        role=grant.role,
        user_id=grant.user_id,
        read_only=grant.read_only,
        expires_at=grant.expires_at,
    )


@router.post(
    "/api-keys",
    status_code=201,
    response_model=KeyOut,
    operation_id="createApiKey",
    responses=raises(NotFoundError, ValidationFailedError),
)
async def create_key(
    body: CreateKey, request: Request, response: Response, caller: Owner
) -> KeyOut:
    """A new key for the caller or another user of the tenant, with that user's role."""

    def issue(s: System) -> tuple[KeyGrant, IssuedKey]:
        grant = _grant(s, caller, body)
        return grant, s.identity.issue_key(grant, s.clock())

    return await command(
        request, response, caller, "api_key.issue", issue,
        lambda s, issued: _key(*issued),
        wrote=lambda i: Wrote(f"/v1/api-keys/{i[1].id}", API_KEYS.name, i[1].id, i[1].version),
    )  # fmt: skip


@router.post(
    "/api-keys/{key_id}/revoke",
    response_model=RevokedOut,
    operation_id="revokeApiKey",
    responses=raises(NotFoundError, IntegrityError),
)
async def revoke_key(
    key_id: UUID, request: Request, response: Response, caller: Owner
) -> RevokedOut:
    """Idempotent; the key stops working on its very next request."""
    return await command(
        request, response, caller, "api_key.revoke",
        lambda s: s.identity.revoke_key(key_id, caller.tenant_id, s.clock()),
        lambda s, w: RevokedOut(id=key_id, revoked=True),
        wrote=lambda w: Wrote(f"/v1/api-keys/{key_id}", API_KEYS.name, key_id, w.version),
    )  # fmt: skip


async def _page(
    request: Request, spec: ListSpec, page: PageRequest, position: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    async with read_model(request, position) as conn:
        found = await fetch_page(conn, spec, page)
    return found.items, found.next_cursor


@router.get("/users", response_model=UserPage, operation_id="listUsers")
async def list_users(
    request: Request,
    caller: Owner,
    role: TenantRole | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "asc",
    position: PositionToken = None,
) -> UserPage:
    filters = {"role": role} if role else {}
    page = PageRequest(caller.tenant_id, filters, None, direction, limit, cursor)
    items, next_cursor = await _page(request, USERS, page, position)
    return UserPage(items=[UserItem(**i) for i in items], next_cursor=next_cursor)


@router.get("/api-keys", response_model=KeyPage, operation_id="listApiKeys")
async def list_keys(
    request: Request,
    caller: Owner,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "asc",
    position: PositionToken = None,
) -> KeyPage:
    """The tenant's keys without their secrets (those were shown once, at creation)."""
    page = PageRequest(caller.tenant_id, {}, None, direction, limit, cursor)
    items, next_cursor = await _page(request, KEYS, page, position)
    return KeyPage(items=[KeyItem(**i) for i in items], next_cursor=next_cursor)


@router.get("/audit-events", response_model=AuditPage, operation_id="listAuditEvents")
async def list_audit_events(
    request: Request,
    caller: Annotated[Principal, Depends(AUDIT)],
    type: Annotated[str | None, Query(max_length=200)] = None,
    subject: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "asc",
    position: PositionToken = None,
) -> AuditPage:
    """Every event of the tenant, with the actor (API key and user) that caused it."""
    filters = {k: v for k, v in {"type": type, "subject": subject}.items() if v}
    page = PageRequest(caller.tenant_id, filters, None, direction, limit, cursor)
    items, next_cursor = await _page(request, AUDIT_EVENTS, page, position)
    return AuditPage(items=[AuditItem(**i) for i in items], next_cursor=next_cursor)
