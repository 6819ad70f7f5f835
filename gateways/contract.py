"""The event contract as FastStream describes it: one publisher per topic, typed payloads.

`asyncapi/asyncapi.yaml` is this document, committed; a test fails when they drift apart.
"""

from __future__ import annotations

from typing import Any, Union

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from gateways.api import VERSION
from infra import messages


def asyncapi_document() -> dict[str, Any]:
    broker = KafkaBroker("kafka:9092", description="Apache Kafka (Tansu when embedded)")
    for topic in sorted({w.kafka_topic for w in messages.WIRE.values()}):
        models = messages.models_on(topic)
        payload: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
        broker.publisher(
            topic,
            schema=payload,
            title=f"{topic}:publish",
            description=_describe(topic),
        )
    spec = AsyncAPI(
        broker,
        title="gpucloud events",
        version=VERSION,
        schema_version="3.0.0",
        description=(
            "CloudEvents 1.0 in Kafka binary mode: ce_id, ce_type, ce_source, ce_subject "
            "(aggregate id), ce_time, ce_specversion, content-type, and the extensions "
            "ce_tenantid, ce_sequence (aggregate version), ce_position, ce_correlationid, "
            "ce_causationid; W3C traceparent as a plain header. Key = aggregate id. "
            "Delivery is at-least-once: dedupe by (ce_subject, ce_sequence)."
        ),
    )
    doc: dict[str, Any] = spec.to_specification().to_jsonable()
    return doc


def _describe(topic: str) -> str:
    types = [w.ce_type for w in messages.WIRE.values() if w.kafka_topic == topic]
    return "ce_type one of: " + ", ".join(sorted(types))
