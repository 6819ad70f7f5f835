"""Wire contract of the identity context: tenants, users and API keys (never a secret)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain.identity import PLATFORM, ApiKey, User
from domain.tenant import Tenant
from infra.messages import names as n
from infra.messages.names import APIKEY_TOPIC, TENANT_TOPIC, USER_TOPIC
from infra.messages.wire import WireEvent, WireModel, published


class TenantCreatedV1(WireModel):
    """A tenant account was opened."""

    model_config = ConfigDict(title="TenantCreated")
    schema_version: Literal[1] = 1
    tenant_id: UUID
    name: str = Field(min_length=1, max_length=100)
    created_at: datetime


class UserCreatedV1(WireModel):
    """A user joined a tenant with a role (no email: a robot user)."""

    model_config = ConfigDict(title="UserCreated")
    schema_version: Literal[1] = 1
    user_id: UUID
    tenant_id: UUID
    email: str | None = Field(max_length=320)
    role: Literal["owner", "member", "billing", "auditor"]
    created_at: datetime


class ApiKeyCreatedV1(WireModel):
    """An API key was issued. Never carries the secret or its hash."""

    model_config = ConfigDict(title="ApiKeyCreated")
    schema_version: Literal[1] = 1
    key_id: UUID
    tenant_id: UUID | None
    user_id: UUID | None
    role: Literal["owner", "member", "billing", "auditor", "ops"]
    read_only: bool
    name: str
    prefix: str = Field(pattern="^[0-9a-f]{12}$")
    expires_at: datetime | None
    created_at: datetime


class ApiKeyRevokedV1(WireModel):
    """An API key was revoked; it stopped working at once."""

    model_config = ConfigDict(title="ApiKeyRevoked")
    schema_version: Literal[1] = 1
    key_id: UUID
    tenant_id: UUID | None
    revoked_at: datetime


_key: Any = ApiKey
IDENTITY_WIRE: dict[type[Any], WireEvent] = {
    Tenant.Created: published(
        n.TENANT_CREATED, TENANT_TOPIC, TenantCreatedV1, "tenant_id",
        lambda e: e.originator_id, "created_at",
    ),
    User.Created: published(
        n.USER_CREATED, USER_TOPIC, UserCreatedV1, "user_id", lambda e: e.tenant_id, "created_at"
    ),
    ApiKey.Created: published(
        n.APIKEY_CREATED, APIKEY_TOPIC, ApiKeyCreatedV1, "key_id",
        lambda e: e.tenant_id or PLATFORM, "created_at",
    ),
    _key.Revoked: published(
        n.APIKEY_REVOKED, APIKEY_TOPIC, ApiKeyRevokedV1, "key_id",
        lambda e: e.tenant_id or PLATFORM, None,
    ),
}  # fmt: skip
