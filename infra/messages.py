"""Wire contract: the pydantic model of every event on Kafka, its CloudEvents type and topic.

Domain events stay plain eventsourcing objects; this table says how each one is published.
FastStream builds ``asyncapi/asyncapi.yaml`` from these models (see gateways/streams.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.tenant import Tenant

CE_SOURCE_PREFIX = "/gpucloud"


class WireModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TenantCreatedV1(WireModel):
    """A tenant account was opened."""

    model_config = ConfigDict(title="TenantCreated")
    schema_version: Literal[1] = 1
    tenant_id: UUID
    name: str = Field(min_length=1, max_length=100)
    created_at: datetime


@dataclass(frozen=True)
class WireEvent:
    """How one domain event class is published."""

    ce_type: str
    kafka_topic: str
    model: type[WireModel]
    payload: Callable[[Any], WireModel]
    tenant_of: Callable[[Any], UUID]


def _tenant_created(e: Tenant.Created) -> WireModel:
    return TenantCreatedV1(tenant_id=e.originator_id, name=e.name, created_at=e.timestamp)  # type: ignore[attr-defined]


TENANT_TOPIC = "identity.tenant.v1"

WIRE: dict[type[Any], WireEvent] = {
    Tenant.Created: WireEvent(
        ce_type="cloud.gpu.tenant.created.v1",
        kafka_topic=TENANT_TOPIC,
        model=TenantCreatedV1,
        payload=_tenant_created,
        tenant_of=lambda e: e.originator_id,
    ),
}

BY_CE_TYPE: dict[str, WireEvent] = {w.ce_type: w for w in WIRE.values()}


def topics() -> list[str]:
    """Every topic the relay publishes to, each also with its dead-letter twin."""
    names = sorted({w.kafka_topic for w in WIRE.values()})
    return names + [f"{n}.dlq" for n in names]


def models_on(topic: str) -> list[type[WireModel]]:
    return [w.model for w in WIRE.values() if w.kafka_topic == topic]
