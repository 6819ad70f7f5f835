"""The auditor's reads of the ledger streams: stored events as plain JSON values, the way the
canonical hash saw them (infra, not handlers: decoding the store's bytes is the store's
business). ``ledger_stream`` reads one ledger; ``ledger_streams`` many in one query
(``Ledgers.stream_rows``); ``streams_of`` decodes rows read ahead by another thread.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from uuid import UUID

import orjson

from domain.ledger_verify import LedgerStream, StoredLedgerEvent
from handlers.ledgers import Ledgers


def ledger_stream(ledgers: Ledgers, ledger_id: UUID) -> LedgerStream:
    """One ledger's stored events as the auditor reads them (``auditor_state``)."""
    stored = StoredLedgerEvent.from_stored
    return LedgerStream(
        ledger_id,
        [
            stored(s.originator_version, s.topic, auditor_state(s.state))
            for s in ledgers.recorder.select_events(ledger_id)
        ],
    )


def ledger_streams(ledgers: Ledgers, ledger_ids: list[UUID]) -> list[LedgerStream]:
    """Many ledgers' stored events in one query (as ``ledger_stream`` gives them), in the order
    of ``ledger_ids``; a ledger without events gives an empty stream."""
    return streams_of(ledger_ids, ledgers.stream_rows(ledger_ids))


def streams_of(ledger_ids: list[UUID], rows: list[tuple[Any, ...]]) -> list[LedgerStream]:
    """``Ledgers.stream_rows`` decoded as the auditor reads them."""
    events: list[list[StoredLedgerEvent]] = [[] for _ in ledger_ids]
    stored = StoredLedgerEvent.from_stored
    for n, version, topic, state in rows:
        events[n - 1].append(stored(version, topic, auditor_state(state)))
    return [LedgerStream(i, found) for i, found in zip(ledger_ids, events, strict=True)]


def auditor_state(data: bytes) -> dict[str, Any] | None:
    """A stored ledger event's state as plain JSON values, as canonical hashing encodes them:
    the store's transcoded datetimes stay their ISO 8601 text (the very text the hash
    covered), UUIDs become hyphenated text. None when the bytes do not decode or name a type
    the ledger never stores. The auditor's hot path: orjson parses (2.5x the standard
    library's speed) and no object hook runs per value. A document orjson refuses, or that
    holds a float (orjson reads integers beyond 64 bits as floats; a ledger stores none), is
    parsed by the standard library instead, so the auditor sees exactly what was stored."""
    try:
        return _plain_state(orjson.loads(data), floats=False)
    except (orjson.JSONDecodeError, _HasFloat):
        pass
    try:
        return _plain_state(json.loads(data), floats=True)
    except ValueError:
        return None


class _HasFloat(Exception):
    """A float where orjson parsed: parse again with the standard library."""


def _plain_state(state: Any, floats: bool) -> dict[str, Any] | None:
    if type(state) is not dict:
        return None
    try:
        plain: dict[str, Any] = _plain(state, floats)
    except (KeyError, TypeError, ValueError):
        return None
    return plain


def _plain(value: Any, floats: bool) -> Any:
    """``value`` with every transcoded value turned into its canonical text."""
    kind = type(value)
    if kind is dict:
        if len(value) == 2 and "_type_" in value:
            return _text_of(value["_type_"], value["_data_"])
        for name, item in value.items():
            if type(item) in _NESTED:
                value[name] = _plain(item, floats)
        return value
    if kind is list:
        return [_plain(item, floats) for item in value]
    if kind is float and not floats:
        raise _HasFloat
    return value


_NESTED = (dict, list, float)


def _text_of(kind: object, data: object) -> str:
    if kind == "datetime_iso" and type(data) is str:
        return data
    if kind == "uuid_hex" and type(data) is str:
        return _uuid_text(data)
    raise ValueError(f"a stored {kind!r} the ledger does not keep")


@functools.lru_cache(maxsize=4096)
def _uuid_text(data: str) -> str:
    """Every event of a ledger names its tenant: convert each tenant's UUID once."""
    return str(UUID(data))
