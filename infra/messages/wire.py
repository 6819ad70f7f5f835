"""Shared shapes of the wire contract: the base model and how a domain event is published."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

CE_SOURCE_PREFIX = "/gpucloud"


class WireModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class WireEvent:
    """How one domain event class is published."""

    ce_type: str
    kafka_topic: str
    model: type[WireModel]
    payload: Callable[[Any], WireModel]
    tenant_of: Callable[[Any], UUID]


def from_attributes(
    model: type[WireModel], id_field: str, time_field: str | None = "at"
) -> Callable[[Any], WireModel]:
    """A payload builder copying the event's attributes of the model's field names; the
    aggregate id goes to ``id_field`` and the event's timestamp to ``time_field``."""

    def build(event: Any) -> WireModel:
        values = {f: getattr(event, f) for f in model.model_fields if hasattr(event, f)}
        values[id_field] = event.originator_id
        if time_field:
            values[time_field] = event.timestamp
        return model(**values)

    return build


def published(
    ce_type: str,
    topic: str,
    model: type[WireModel],
    id_field: str,
    tenant_of: Callable[[Any], UUID],
    time_field: str | None = "at",
) -> WireEvent:
    """A domain event published as ``ce_type`` (one of ``infra.messages.names``) with a
    payload built from its attributes (see ``from_attributes``)."""
    payload = from_attributes(model, id_field, time_field)
    return WireEvent(ce_type, topic, model, payload, tenant_of)
