"""Stored event -> CloudEvents 1.0 Kafka message (binary mode), through the cloudevents SDK."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from eventsourcing.persistence import Mapper, Notification

from infra.eventstore import META_KEY
from infra.messages import CE_SOURCE_PREFIX, WIRE

EVENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/events")


@dataclass(frozen=True)
class OutboundMessage:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def event_id(subject: UUID | str, sequence: int) -> str:
    """Stable across republishes, so consumers may also dedupe by ce_id."""
    return str(uuid5(EVENT_ID_NAMESPACE, f"{subject}/{sequence}"))


def to_message(context: str, mapper: Mapper[Any], note: Notification) -> OutboundMessage:
    domain_event = mapper.to_domain_event(note)
    wire = WIRE[type(domain_event)]
    meta = json.loads(note.state).get(META_KEY, {})
    timestamp: datetime = domain_event.timestamp  # type: ignore[attr-defined]
    attributes: dict[str, Any] = {
        "id": event_id(note.originator_id, note.originator_version),
        "type": wire.ce_type,
        "source": f"{CE_SOURCE_PREFIX}/{context}",
        "subject": str(note.originator_id),
        "time": timestamp,
        "datacontenttype": "application/json",
        "tenantid": str(wire.tenant_of(domain_event)),
        "sequence": str(note.originator_version),
        "position": str(note.id),
        "correlationid": meta.get("correlation_id") or str(note.originator_id),
        "causationid": meta.get("causation_id") or meta.get("correlation_id") or "",
    }
    data = wire.payload(domain_event).model_dump(mode="json")
    message = ce_kafka.to_binary_event(CloudEvent(attributes, data))
    headers = list(message.headers.items())
    if "traceparent" in meta:
        headers.append(("traceparent", meta["traceparent"].encode()))
    key = str(note.originator_id).encode()
    return OutboundMessage(wire.kafka_topic, key, message.value, headers)
