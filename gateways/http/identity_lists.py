"""List routes of the identity context: users, API keys, audit events (cursor-paginated)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from domain.identity import Principal
from gateways.http import consistency
from gateways.http.auth import AUDIT, OWNER, system_of
from gateways.http.identity import PositionToken
from projections.pagination import DEFAULT_LIMIT, MAX_LIMIT, ListSpec, PageRequest, fetch_page

router = APIRouter(prefix="/v1")
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=1024, description="next_cursor of a page")]
Direction = Literal["asc", "desc"]

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


class UserItem(BaseModel):
    id: UUID
    tenant_id: UUID
    email: str | None
    role: str
    created_at: datetime


class KeyItem(BaseModel):
    id: UUID
    user_id: UUID | None
    role: str
    read_only: bool
    name: str
    prefix: str
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class AuditItem(BaseModel):
    id: UUID
    type: str
    subject: str
    sequence: int
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


class UserPage(BaseModel):
    items: list[UserItem]
    next_cursor: str | None


class KeyPage(BaseModel):
    items: list[KeyItem]
    next_cursor: str | None


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_cursor: str | None


async def _page(
    request: Request, spec: ListSpec, page: PageRequest, position: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    await consistency.wait_for(request, position)
    async with system_of(request).pool.connection() as conn:
        found = await fetch_page(conn, spec, page)
    return found.items, found.next_cursor


@router.get("/users", response_model=UserPage, operation_id="listUsers")
async def list_users(
    request: Request,
    caller: Annotated[Principal, Depends(OWNER)],
    role: Literal["owner", "member", "billing", "auditor"] | None = None,
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
    caller: Annotated[Principal, Depends(OWNER)],
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
