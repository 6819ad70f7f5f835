"""HTTP routes of the identity context: tenants, the caller's profile, users, API keys."""

from __future__ import annotations

import re
from datetime import datetime
from functools import partial
from typing import Annotated, Literal
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from domain.errors import NotFoundError, ValidationFailedError
from domain.identity import EMAIL_PATTERN, KeyGrant, Principal, User
from gateways.http import consistency
from gateways.http.auth import ANY_ROLE, OPS_ONLY, OWNER, system_of, tenant_scope
from gateways.http.dispatch import blocking, dispatch
from gateways.http.responses import raises
from gateways.http.text import VISIBLE_ASCII, text
from infra import metrics
from projections.identity import API_KEYS, USERS
from projections.tenants import TENANTS, get_tenant

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=VISIBLE_ASCII),
]
RequiredIdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=VISIBLE_ASCII,
        description="required: the same key and body again give the same answer",
    ),
]
PositionToken = Annotated[
    str | None, Header(alias=consistency.HEADER, max_length=500, pattern=r"^[A-Za-z0-9_-]+$")
]
TenantRole = Literal["owner", "member", "billing", "auditor"]
RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _rfc3339(value: object) -> object:
    """Pydantic reads a number, or a string of one, as Unix time; the contract says date-time."""
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with a time zone, like 2026-01-31T12:00:00Z")


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
router = APIRouter(prefix="/v1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateTenant(Strict):
    name: str = text(100, min_length=1, examples=["Acme Research"])
    owner_email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)


class TenantOut(BaseModel):
    id: UUID
    name: str
    created_at: datetime
    version: int


class TenantCreatedOut(TenantOut):
    owner_user_id: UUID
    owner_api_key: str | None = Field(
        description="The owner's API key, shown once; null when a retry replays the creation"
    )


class CreateUser(Strict):
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    role: TenantRole


class UserOut(BaseModel):
    id: UUID
    tenant_id: UUID
    email: str | None
    role: str


class CreateKey(Strict):
    name: str = text(100, min_length=1, default="default")
    user_id: UUID | None = Field(default=None, description="Whose key; default: the caller")
    read_only: bool = False
    expires_at: Instant | None = None


class KeyOut(BaseModel):
    id: UUID
    token: str = Field(description="The API key itself, shown once")
    name: str
    role: str
    user_id: UUID | None
    read_only: bool
    expires_at: datetime | None


class RevokedOut(BaseModel):
    id: UUID
    revoked: bool


class MeOut(BaseModel):
    key_id: UUID
    user_id: UUID | None
    email: str | None
    tenant_id: UUID | None
    role: str
    read_only: bool


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
    caller: Annotated[Principal, Depends(OPS_ONLY)],
    idempotency_key: IdempotencyKey = None,
) -> TenantCreatedOut:
    sys = system_of(request)
    command = partial(
        sys.identity.create_tenant, body.name, idempotency_key, sys.clock(), body.owner_email
    )
    opened = await dispatch(command, caller.actor, sys.settings.command_timeout)
    created = "created" if opened.tenant.created else "replayed"
    metrics.COMMANDS.labels("tenant.create", created).inc()
    tenant = await blocking(partial(sys.identity.get_tenant, opened.tenant.id), 5)
    t = opened.tenant
    consistency.mark_written(
        request, response, f"/v1/tenants/{t.id}", TENANTS.name, t.id, t.version
    )
    return TenantCreatedOut(
        id=tenant.id,
        name=tenant.name,
        created_at=tenant.created_on,
        version=tenant.version,
        owner_user_id=opened.owner_id,
        owner_api_key=opened.key.token if opened.key else None,
    )


@router.get(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    operation_id="getTenant",
    responses=raises(NotFoundError),
)
async def read_tenant(
    tenant_id: UUID,
    request: Request,
    caller: Annotated[Principal, Depends(ANY_ROLE)],
    position: PositionToken = None,
) -> TenantOut:
    tenant_scope(caller, tenant_id, "tenant")
    sys = system_of(request)
    await consistency.wait_for(request, position)
    async with sys.pool.connection() as conn:
        row = await get_tenant(conn, tenant_id)
    if row is None:
        raise NotFoundError("tenant not found")
    return TenantOut(**row)


@router.get("/me", response_model=MeOut, operation_id="getMe")
async def me(request: Request, caller: Annotated[Principal, Depends(ANY_ROLE)]) -> MeOut:
    """The caller's profile, read from the write side (exact, never behind)."""
    sys = system_of(request)
    email = None
    if caller.user_id is not None:
        user = await blocking(partial(sys.identity.get, User, caller.user_id), 5)
        email = user.email
    return MeOut(
        key_id=caller.key_id,
        user_id=caller.user_id,
        email=email,
        tenant_id=caller.tenant_id,
        role=caller.role,
        read_only=caller.read_only,
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
    caller: Annotated[Principal, Depends(OWNER)],
    idempotency_key: IdempotencyKey = None,
) -> UserOut:
    sys = system_of(request)
    tenant_id = caller.tenant_id
    assert tenant_id is not None  # owners always belong to a tenant
    command = partial(sys.identity.add_user, tenant_id, body.email, body.role, idempotency_key)
    written = await dispatch(command, caller.actor, sys.settings.command_timeout)
    consistency.mark_written(
        request, response, f"/v1/users/{written.id}", USERS.name, written.id, written.version
    )
    user = await blocking(partial(sys.identity.get, User, written.id), 5)
    return UserOut(id=user.id, tenant_id=user.tenant_id, email=user.email, role=user.role)


@router.post(
    "/api-keys",
    status_code=201,
    response_model=KeyOut,
    operation_id="createApiKey",
    responses=raises(NotFoundError, ValidationFailedError),
)
async def create_key(
    body: CreateKey,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(OWNER)],
) -> KeyOut:
    """A new key for the caller or another user of the tenant, with that user's role."""
    sys = system_of(request)
    user_id = body.user_id or caller.user_id
    assert user_id is not None
    user = await blocking(partial(sys.identity.get, User, user_id), 5)
    tenant_scope(caller, user.tenant_id, "user")
    grant = KeyGrant(
        caller.tenant_id, user_id, user.role, body.read_only, body.name, body.expires_at
    )
    command = partial(sys.identity.issue_key, grant, sys.clock())
    issued = await dispatch(command, caller.actor, sys.settings.command_timeout)
    consistency.mark_written(
        request, response, f"/v1/api-keys/{issued.id}", API_KEYS.name, issued.id, issued.version
    )
    return KeyOut(
        id=issued.id,
        token=issued.token,
        name=grant.name,
        role=grant.role,
        user_id=user_id,
        read_only=grant.read_only,
        expires_at=grant.expires_at,
    )


@router.post(
    "/api-keys/{key_id}/revoke",
    response_model=RevokedOut,
    operation_id="revokeApiKey",
    responses=raises(NotFoundError, IntegrityError),
)
async def revoke_key(
    key_id: UUID,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(OWNER)],
) -> RevokedOut:
    """Idempotent; the key stops working on its very next request."""
    sys = system_of(request)
    command = partial(sys.identity.revoke_key, key_id, caller.tenant_id, sys.clock())
    written = await dispatch(command, caller.actor, sys.settings.command_timeout)
    consistency.mark_written(
        request, response, f"/v1/api-keys/{key_id}", API_KEYS.name, key_id, written.version
    )
    return RevokedOut(id=key_id, revoked=True)
