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
from infra.ledger_messages import LEDGER_WIRE
from infra.wire import WireEvent, WireModel, from_attributes


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

WIRE: dict[type[Any], WireEvent] = {
    Tenant.Created: WireEvent(
        ce_type="cloud.gpu.tenant.created.v1",
        kafka_topic=TENANT_TOPIC,
        model=TenantCreatedV1,
        payload=from_attributes(TenantCreatedV1, "tenant_id", "created_at"),
        tenant_of=lambda e: e.originator_id,
    ),
    User.Created: WireEvent(
        ce_type="cloud.gpu.user.created.v1",
        kafka_topic=USER_TOPIC,
        model=UserCreatedV1,
        payload=from_attributes(UserCreatedV1, "user_id", "created_at"),
        tenant_of=lambda e: e.tenant_id,
    ),
    ApiKey.Created: WireEvent(
        ce_type="cloud.gpu.apikey.created.v1",
        kafka_topic=APIKEY_TOPIC,
        model=ApiKeyCreatedV1,
        payload=from_attributes(ApiKeyCreatedV1, "key_id", "created_at"),
        tenant_of=lambda e: e.tenant_id or PLATFORM,
    ),
    ApiKey.Revoked: WireEvent(  # type: ignore[attr-defined]
        ce_type="cloud.gpu.apikey.revoked.v1",
        kafka_topic=APIKEY_TOPIC,
        model=ApiKeyRevokedV1,
        payload=from_attributes(ApiKeyRevokedV1, "key_id", None),
        tenant_of=lambda e: e.tenant_id or PLATFORM,
    ),
}

WIRE.update(CATALOG_WIRE)
WIRE.update(LEDGER_WIRE)
BY_CE_TYPE: dict[str, WireEvent] = {w.ce_type: w for w in WIRE.values()}


def topics() -> list[str]:
    """Every topic the relay publishes to, each also with its dead-letter twin."""
    names = sorted({w.kafka_topic for w in WIRE.values()})
    return names + [f"{n}.dlq" for n in names]


def models_on(topic: str) -> list[type[WireModel]]:
    return [w.model for w in WIRE.values() if w.kafka_topic == topic]
