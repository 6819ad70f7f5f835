"""Wire contract: the pydantic model of every event on Kafka, its CloudEvents type and topic.

Domain events stay plain eventsourcing objects; this table says how each one is published.
One module per context holds its models (``identity``, ``catalog``, ``compute``, ``ledger``,
``payments``);
``names`` spells every topic and ``ce_type`` once; ``wire`` has the shared shapes.
FastStream builds ``asyncapi/asyncapi.yaml`` from these models (see gateways/contract.py).
"""

from __future__ import annotations

from typing import Any

from infra.messages.catalog import CATALOG_WIRE
from infra.messages.compute import COMPUTE_WIRE
from infra.messages.identity import IDENTITY_WIRE
from infra.messages.ledger import LEDGER_WIRE
from infra.messages.names import RELAY_UNROUTED_TOPIC
from infra.messages.payments import PAYMENTS_WIRE
from infra.messages.wire import WireEvent, WireModel

WIRE: dict[type[Any], WireEvent] = {
    **IDENTITY_WIRE, **CATALOG_WIRE, **LEDGER_WIRE, **COMPUTE_WIRE, **PAYMENTS_WIRE,
}  # fmt: skip
BY_CE_TYPE: dict[str, WireEvent] = {w.ce_type: w for w in WIRE.values()}


def topics() -> list[str]:
    """Every topic the relay publishes to, each also with its dead-letter twin, and the
    dead-letter topic of stored events it could not route at all."""
    names = sorted({w.kafka_topic for w in WIRE.values()})
    return names + [f"{n}.dlq" for n in names] + [f"{RELAY_UNROUTED_TOPIC}.dlq"]


def models_on(topic: str) -> list[type[WireModel]]:
    return [w.model for w in WIRE.values() if w.kafka_topic == topic]
