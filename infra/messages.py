"""Wire contract: the pydantic model of every event on Kafka, its CloudEvents type and topic.

Domain events stay plain eventsourcing objects; this table says how each one is published.
FastStream builds ``asyncapi/asyncapi.yaml`` from these models (see gateways/streams.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain.identity import PLATFORM, ApiKey, User
from domain.tenant import Tenant
from infra.catalog_messages import CATALOG_WIRE
from infra.compute_messages import COMPUTE_WIRE
from infra.ledger_messages import LEDGER_WIRE
from infra.wire import WireEvent, WireModel, published


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


TENANT_TOPIC = "identity.tenant.v1"
USER_TOPIC = "identity.user.v1"
APIKEY_TOPIC = "identity.apikey.v1"

_key: Any = ApiKey
WIRE: dict[type[Any], WireEvent] = {
    Tenant.Created: published(
        "tenant.created", TENANT_TOPIC, TenantCreatedV1, "tenant_id",
        lambda e: e.originator_id, "created_at",
    ),
    User.Created: published(
        "user.created", USER_TOPIC, UserCreatedV1, "user_id", lambda e: e.tenant_id, "created_at"
    ),
    ApiKey.Created: published(
        "apikey.created", APIKEY_TOPIC, ApiKeyCreatedV1, "key_id",
        lambda e: e.tenant_id or PLATFORM, "created_at",
    ),
    _key.Revoked: published(
        "apikey.revoked", APIKEY_TOPIC, ApiKeyRevokedV1, "key_id",
        lambda e: e.tenant_id or PLATFORM, None,
    ),
}  # fmt: skip

WIRE.update(CATALOG_WIRE)
WIRE.update(LEDGER_WIRE)
WIRE.update(COMPUTE_WIRE)
BY_CE_TYPE: dict[str, WireEvent] = {w.ce_type: w for w in WIRE.values()}


def topics() -> list[str]:
    """Every topic the relay publishes to, each also with its dead-letter twin."""
    names = sorted({w.kafka_topic for w in WIRE.values()})
    return names + [f"{n}.dlq" for n in names]


def models_on(topic: str) -> list[type[WireModel]]:
    return [w.model for w in WIRE.values() if w.kafka_topic == topic]
