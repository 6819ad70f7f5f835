"""What a projection sees of a Kafka message: the CloudEvents attributes and the JSON data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class MalformedEventError(ValueError):
    """A message that no retry can fix: it goes to the dead-letter topic."""


@dataclass(frozen=True)
class Envelope:
    topic: str
    partition: int
    offset: int
    ce_type: str
    subject: str
    sequence: int
    tenant_id: str
    data: dict[str, Any]
    traceparent: str | None = None
    event_id: str = ""
    time: str = ""
    actor: str = "system"

    @property
    def trace_id(self) -> str | None:
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 else None


def from_record(
    topic: str, partition: int, offset: int, headers: dict[str, bytes], value: bytes | None
) -> Envelope:
    try:
        data = json.loads(value or b"")
        return Envelope(
            topic=topic,
            partition=partition,
            offset=offset,
            ce_type=headers["ce_type"].decode(),
            subject=headers["ce_subject"].decode(),
            sequence=int(headers["ce_sequence"]),
            tenant_id=headers["ce_tenantid"].decode(),
            data=data,
            traceparent=_text(headers, "traceparent"),
            event_id=headers["ce_id"].decode(),
            time=headers["ce_time"].decode(),
            actor=_text(headers, "ce_actor") or "system",
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventError(f"{topic}[{partition}]@{offset}: {exc!r}") from exc


def _text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode() if value is not None else None


def column(envs: Sequence[Envelope], field: str) -> list[Any]:
    """One payload field of every event, in event order: an array for ``unnest``."""
    return [e.data[field] for e in envs]


def columns(envs: Sequence[Envelope], *fields: str) -> list[list[Any]]:
    return [column(envs, f) for f in fields]
