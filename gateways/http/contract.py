"""The contracts as the code describes them: FastAPI's OpenAPI and FastStream's AsyncAPI.

`openapi/openapi.yaml` and `asyncapi/asyncapi.yaml` are these documents, committed (written by
`tools/export_contracts.py`); the contract tests fail when the code and the files drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from gateways.http.app import VERSION, create_app
from infra import messages
from infra.messages.wire import CE_SOURCE_PREFIX
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.bootstrap import System

DIGITS = "^[1-9][0-9]*$"
TRACEPARENT = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
# ARCHITECTURE section 8: the headers every event carries.
REQUIRED_HEADERS = (
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_subject",
    "ce_time",
    "ce_specversion",
    "ce_tenantid",
    "ce_sequence",
    "ce_correlationid",
)


def _text(description: str, **rules: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **rules}


CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Kafka headers, CloudEvents 1.0 binary mode; every value is UTF-8 text.",
    "properties": {
        "ce_id": _text("uuid5 of subject and sequence, the same on a republish", format="uuid"),
        "ce_type": _text("cloud.gpu.<aggregate>.<event>.v<major>", pattern=r"^cloud\.gpu\."),
        "ce_source": _text("<prefix>/<context>", pattern=f"^{CE_SOURCE_PREFIX}/"),
        "ce_subject": _text("the aggregate id, also the Kafka key", format="uuid"),
        "ce_time": _text("when the event happened", format="date-time"),
        "ce_specversion": {"type": "string", "const": "1.0"},
        "content-type": {"type": "string", "const": "application/json"},
        "ce_tenantid": _text("the tenant the event belongs to", format="uuid"),
        "ce_sequence": _text(
            "aggregate version: dedupe by (ce_subject, ce_sequence)", pattern=DIGITS
        ),
        "ce_position": _text("position in the context's notification log", pattern=DIGITS),
        "ce_correlationid": _text("request id of the originating command", minLength=1),
        "ce_causationid": _text("id of the request or message that caused the event"),
        "ce_actor": _text("who issued the command (`system` for the platform itself)"),
        "traceparent": _text("W3C trace context of the command", pattern=TRACEPARENT),
        "correlation_id": _text("ce_correlationid again, under the name FastStream reads"),
    },
    "required": list(REQUIRED_HEADERS),
}


@dataclass(frozen=True)
class _RoutesOnly:
    """Enough of a System for `create_app` to build its routes (it reads only the settings
    then); never opened, never serving, so generating the OpenAPI needs no database."""

    settings: Settings


def openapi_document() -> dict[str, Any]:
    app = create_app(cast("System", _RoutesOnly(Settings())))
    return app.openapi()


def asyncapi_document() -> dict[str, Any]:
    broker = KafkaBroker("kafka:9092", description="Apache Kafka (Tansu when embedded)")
    for topic in sorted({w.kafka_topic for w in messages.WIRE.values()}):
        models = messages.models_on(topic)
        payload: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
        broker.publisher(
            topic,
            schema=payload,
            title=f"{topic}:publish",
            description="ce_type one of: " + ", ".join(_ce_types(topic)),
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
    return _in_stable_order(_with_cloudevents_headers(doc))


def _in_stable_order(doc: dict[str, Any]) -> dict[str, Any]:
    """FastStream lists publishers in registration order, which varies between runs; sort the
    named maps so the committed file changes only when the contract does."""
    for section in ("channels", "operations"):
        doc[section] = dict(sorted(doc[section].items()))
    for section in ("messages", "schemas"):
        doc["components"][section] = dict(sorted(doc["components"][section].items()))
    return doc


def _with_cloudevents_headers(doc: dict[str, Any]) -> dict[str, Any]:
    """FastStream has no word for Kafka headers: declare the CloudEvents ones on every message,
    with the ce_types its topic carries, and correlate by ce_correlationid."""
    doc["components"]["schemas"]["CloudEventsHeaders"] = CLOUDEVENTS_HEADERS
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            name = ref["$ref"].removeprefix("#/components/messages/")
            message = doc["components"]["messages"][name]
            message["headers"] = _headers_on(channel["address"])
            message["correlationId"] = {"location": "$message.header#/ce_correlationid"}
    return doc


def _headers_on(topic: str) -> dict[str, Any]:
    return {
        "type": "object",
        "allOf": [
            {"$ref": "#/components/schemas/CloudEventsHeaders"},
            {"properties": {"ce_type": {"type": "string", "enum": _ce_types(topic)}}},
        ],
    }


def _ce_types(topic: str) -> list[str]:
    return sorted(w.ce_type for w in messages.WIRE.values() if w.kafka_topic == topic)
