"""What the Ledger aggregate and its auditor (domain/ledger_verify.py) must agree on, byte for
byte: the ledger id of a tenant, the account names, and the canonical hash of an event.

The canonical hash of a ledger event is the SHA-256 (hex) of this JSON document, encoded with
sorted keys, no whitespace, ASCII only, no NaN::

    {"event": <event name, e.g. "Credited">, "fields": <the event's stored state without
     "hash" and "prev_hash">, "ledger": <ledger id>, "prev_hash": <previous event's hash, or
     64 zeros for the first>, "version": <the event's version, 1 for "Opened">}

Datetimes are ISO 8601 strings with their offset, UUIDs their hyphenated strings, integers
plain JSON integers. Floats never occur in a ledger event: a tampered ``5`` -> ``5.0`` changes
the encoding and so the hash. The stored state covers the library's own ``timestamp`` (always
the ``now`` of the command) and, in ``Opened``, ``originator_topic``; not the command metadata
(``__meta__``) that the event store keeps beside it. Hashes cover the state as first stored:
an upcast event must be verified from its stored, not its upcast, state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

LEDGER_NAMESPACE = uuid5(NAMESPACE_URL, "https://gpucloud.dev/ledger")
ZERO_HASH = "0" * 64

REVENUE = "platform:revenue"
PAYMENT_CLEARING = "platform:payment_clearing"
PROMOTIONAL_CREDIT = "platform:promotional_credit"
BREAKAGE = "platform:breakage"
ADJUSTMENTS = "platform:adjustments"
PLATFORM_ACCOUNTS = frozenset(
    {REVENUE, PAYMENT_CLEARING, PROMOTIONAL_CREDIT, BREAKAGE, ADJUSTMENTS}
)


def ledger_id_of(tenant_id: UUID) -> UUID:
    """A tenant's ledger id: the same tenant always names the same stream."""
    return uuid5(LEDGER_NAMESPACE, str(tenant_id))


def cash_account(tenant_id: UUID) -> str:
    return f"tenant:{tenant_id}:cash"


def hold_id_of(ledger_id: UUID, key: str) -> str:
    """A hold's id follows from the key that placed it, so a replay names the same hold."""
    return str(uuid5(ledger_id, f"hold:{key}"))


def canonical_default(value: object) -> str:
    """How the canonical form writes what JSON has no type for: aware datetimes as ISO 8601,
    UUIDs as hyphenated text; anything else has no canonical encoding."""
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no canonical ledger encoding")


_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=True,
    allow_nan=False,
    default=canonical_default,
)
FastEncoder = Callable[[Mapping[str, object]], bytes | None]
"""A faster writer of the very same bytes, or None where it cannot vouch for them."""
_fast: FastEncoder | None = None


def use_fast_encoder(encode: FastEncoder | None) -> None:
    """Install (or, with None, remove) a faster writer of the canonical bytes. The domain
    imports no JSON library but the standard one; infra installs orjson's (infra/canonical.py),
    which the auditor's hashing needs (~4x)."""
    global _fast
    _fast = encode


def canonical_bytes(document: Mapping[str, object]) -> bytes:
    """``document`` encoded as the module docstring says."""
    if _fast is not None and (fast := _fast(document)) is not None:
        return fast
    return _ENCODER.encode(document).encode()


def canonical_hash(
    ledger_id: UUID | str,
    version: int,
    event_name: str,
    fields: Mapping[str, object],
    prev_hash: str,
) -> str:
    document = {
        "event": event_name,
        "fields": fields,
        "ledger": str(ledger_id),
        "prev_hash": prev_hash,
        "version": version,
    }
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def request_digest(operation: str, **params: object) -> str:
    """The digest of a posting request, compared when its idempotency key comes back."""
    document = {"operation": operation, "params": params}
    return hashlib.sha256(_ENCODER.encode(document).encode()).hexdigest()
