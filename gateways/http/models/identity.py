"""HTTP shapes of the identity context: tenants, users, API keys, the caller, audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from domain.identity import EMAIL_PATTERN
from gateways.http.models.common import Instant, Strict
from gateways.http.text import text

TenantRole = Literal["owner", "member", "billing", "auditor"]


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
