"""The auditor's replay: tampered, reordered and forged streams are caught and named."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.ledger_hash import (
    ZERO_HASH,
    canonical_bytes,
    canonical_hash,
    ledger_id_of,
    use_fast_encoder,
)
from domain.ledger_terms import InsufficientFundsError
from domain.ledger_verify import LedgerStream, StoredLedgerEvent, verify
from handlers.ledgers import Ledgers
from infra.auditor_reads import auditor_state, ledger_stream
from infra.canonical import orjson_canonical

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
USD = 1_000_000


def a_stream(tenant: UUID | None = None) -> list[StoredLedgerEvent]:
    """Given: a stored ledger stream with every kind of event, read as the auditor reads it.

    1 Opened, 2 Credited, 3 HoldPlaced, 4 HoldCaptured, 5 Debited, 6 BalanceDepleted,
    7 PostingRejected, 8 Adjusted, 9 BalanceRestored, 10 HoldPlaced, 11 HoldExpired
    """
    ledgers = Ledgers(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    tenant = tenant or uuid4()
    ledgers.credit(tenant, "pay-1", 5 * USD, NOW)
    hold_id = ledgers.hold(tenant, "hold-1", 2 * USD, NOW + timedelta(hours=1), NOW).hold_id
    ledgers.capture(tenant, "capture-1", hold_id or "", USD, NOW)
    ledgers.debit_up_to(tenant, "window-1", 9 * USD, NOW)
    with pytest.raises(InsufficientFundsError):
        ledgers.debit(tenant, "usage-1", USD, NOW)
    ledgers.adjust(tenant, "ops-1", 3 * USD, "goodwill", NOW)
    lapsed = ledgers.hold(tenant, "hold-2", USD, NOW + timedelta(hours=1), NOW).hold_id
    ledgers.expire_holds([(tenant, lapsed or "")], NOW + timedelta(hours=2))
    return list(ledger_stream(ledgers, ledger_id_of(tenant)).events)


def changed(event: StoredLedgerEvent, **state: Any) -> StoredLedgerEvent:
    assert event.state is not None
    return StoredLedgerEvent(event.version, event.name, {**event.state, **state})


def rechained(ledger_id: UUID, events: list[StoredLedgerEvent]) -> list[StoredLedgerEvent]:
    """A forger who knows the hash: renumber the events and recompute every hash."""
    prev, forged = ZERO_HASH, []
    for version, event in enumerate(events, 1):
        state = {**(event.state or {}), "prev_hash": prev}
        fields = {k: v for k, v in state.items() if k not in ("hash", "prev_hash")}
        state["hash"] = prev = canonical_hash(ledger_id, version, event.name, fields, prev)
        forged.append(StoredLedgerEvent(version, event.name, state))
    return forged


def field(event: StoredLedgerEvent, name: str) -> Any:
    assert event.state is not None
    return event.state[name]


def ledger_of(events: list[StoredLedgerEvent]) -> UUID:
    return ledger_id_of(field(events[0], "tenant_id"))


def check(events: list[StoredLedgerEvent]) -> tuple[int, str] | None:
    report = verify([LedgerStream(ledger_of(events), events)])
    problem = report.first_problem
    return None if problem is None else (problem.version, problem.what)


def test_an_honest_stream_verifies_and_replays_the_balances() -> None:
    tenant = uuid4()
    events = a_stream(tenant)

    report = verify([LedgerStream(ledger_id_of(tenant), events)])

    [summary] = report.ledgers
    assert (report.ok, report.events, summary.tenant_id) == (True, 11, tenant)
    assert (summary.posted, summary.held, summary.available) == (3 * USD, 0, 3 * USD)
    assert (summary.postings, summary.rejections, summary.open_holds) == (7, 1, 0)
    assert [e.name for e in events][:4] == ["Opened", "Credited", "HoldPlaced", "HoldCaptured"]


def test_a_changed_amount_is_caught_at_its_event() -> None:
    events = a_stream()
    events[4] = changed(events[4], amount=field(events[4], "amount") + 1)

    assert check(events) == (5, "the hash does not match the event: it was changed")


def test_a_changed_hash_is_caught_at_its_event() -> None:
    events = a_stream()
    events[2] = changed(events[2], hash="f" * 64)

    assert check(events) == (3, "the hash does not match the event: it was changed")


def test_a_changed_time_is_caught_too() -> None:
    events = a_stream()
    events[1] = changed(events[1], timestamp=NOW + timedelta(seconds=1))

    assert check(events) == (2, "the hash does not match the event: it was changed")


def test_a_deleted_middle_event_is_caught_where_the_gap_is() -> None:
    events = a_stream()
    del events[4]

    assert check(events) == (6, "version 6 after 4: an event is missing or moved")


def test_a_reordered_pair_is_caught() -> None:
    events = a_stream()
    events[2], events[3] = events[3], events[2]

    assert check(events) == (4, "version 4 after 2: an event is missing or moved")


def test_a_pair_swapped_in_place_breaks_the_chain() -> None:
    events = a_stream()
    third, fourth = events[2], events[3]
    events[2] = StoredLedgerEvent(3, fourth.name, fourth.state)
    events[3] = StoredLedgerEvent(4, third.name, third.state)

    assert check(events) == (3, "prev_hash is not the previous event's hash: the chain is broken")


def test_an_undecodable_event_is_named() -> None:
    events = a_stream()
    events[6] = StoredLedgerEvent(7, events[6].name, None)

    assert check(events) == (7, "the stored state cannot be decoded")


def test_a_forged_capture_beyond_its_hold_is_caught_despite_consistent_hashes() -> None:
    events = a_stream()
    events[3] = changed(events[3], amount=3 * USD, released=-USD)

    assert check(rechained(ledger_of(events), events)) == (
        4,
        f"captured {3 * USD} of a hold of {2 * USD}",
    )


@pytest.mark.parametrize(
    "index, change, what",
    [
        (4, {"amount": 6 * USD}, "the available balance went below the floor"),
        (4, {"key": "pay-1"}, "idempotency key 'pay-1' was used before"),
        (1, {"debit_account": "platform:nowhere"}, "the other leg is not a platform account"),
        (
            1,
            {"credit_account": "platform:revenue"},
            "the legs are not this tenant's cash and one platform account",
        ),
        (1, {"amount": 0}, "the amount is not a positive integer"),
        (1, {"amount": True}, "the amount is not a positive integer"),
        (1, {"kind": "debit"}, "kind 'debit' on an event of kind 'credit'"),
        (3, {"hold_id": "nope"}, "malformed HoldCaptured: ValueError('hold nope is not open')"),
        (5, {"available": 1}, f"the event says available 1, the replay {0}"),
    ],
)
def test_a_forged_posting_is_caught_despite_consistent_hashes(
    index: int, change: dict[str, Any], what: str
) -> None:
    events = a_stream()
    events[index] = changed(events[index], **change)

    problem = check(rechained(ledger_of(events), events))

    assert problem is not None and problem[1] == what


def test_a_missing_balance_depleted_is_caught() -> None:
    events = a_stream()
    del events[5]

    problem = check(rechained(ledger_of(events), events))

    assert problem == (6, "BalanceDepleted missing before this event")


def test_a_rehashed_forgery_still_changes_the_digest() -> None:
    tenant = uuid4()
    honest = a_stream(tenant)
    forged = rechained(ledger_id_of(tenant), [*honest[:-2]])

    before = verify([LedgerStream(ledger_id_of(tenant), honest)])
    after = verify([LedgerStream(ledger_id_of(tenant), forged)])

    assert before.ok and after.ok
    assert before.digest != after.digest


def test_the_digest_does_not_depend_on_the_order_the_ledgers_are_read_in() -> None:
    streams = [LedgerStream(ledger_id_of(t), a_stream(t)) for t in (uuid4(), uuid4())]

    assert verify(streams).digest == verify(reversed(streams)).digest


def test_a_bad_ledger_is_named_and_the_others_are_still_summarised() -> None:
    good, bad = uuid4(), uuid4()
    bad_events = a_stream(bad)
    del bad_events[2]
    seen: list[UUID] = []

    report = verify(
        [
            LedgerStream(ledger_id_of(good), a_stream(good)),
            LedgerStream(ledger_id_of(bad), bad_events),
        ],
        on_ledger=lambda summary: seen.append(summary.ledger_id),
    )

    assert not report.ok
    assert report.first_problem is not None and report.first_problem.ledger_id == ledger_id_of(bad)
    assert str(report.first_problem).startswith(f"ledger {ledger_id_of(bad)} event 4: ")
    assert [s.events for s in report.ledgers] == [11, 2]
    assert seen == [ledger_id_of(good), ledger_id_of(bad)]


def test_a_stream_under_another_ledgers_id_or_empty_is_refused() -> None:
    events = a_stream()

    report = verify([LedgerStream(uuid4(), events), LedgerStream(uuid4(), [])])

    assert [p.what for p in report.problems] == [
        "the hash does not match the event: it was changed",
        "no events",
    ]


def test_the_canonical_hash_is_sha256_of_the_documented_json() -> None:
    ledger_id, tenant = uuid4(), uuid4()
    fields = {"tenant_id": tenant, "floor": -5, "at": NOW, "reason": "café"}
    document = {
        "event": "Opened",
        "fields": {"at": NOW.isoformat(), "floor": -5, "reason": "café", "tenant_id": str(tenant)},
        "ledger": str(ledger_id),
        "prev_hash": ZERO_HASH,
        "version": 1,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    digest = canonical_hash(ledger_id, 1, "Opened", fields, ZERO_HASH)

    assert digest == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("value", [float("nan"), b"bytes", datetime(2026, 1, 1)])
def test_values_without_a_canonical_encoding_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_hash(uuid4(), 1, "Opened", {"x": value}, ZERO_HASH)


_SPEC = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=True,
    allow_nan=False,
    default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
)
_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.uuids()
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), _PLAIN, max_size=8))
@example({"del": "\x7f"})
@example({"café": "\u00e9\n\x00"})
@example({"big": 2**70})
@example({"none": None})
def test_canonical_bytes_are_the_documented_json_whatever_the_values(
    document: dict[str, Any],
) -> None:
    """The fast encoder (orjson, infra/canonical.py) must give the standard library's bytes,
    or give way to it: any text (non-ASCII, DEL, escapes), integers of any size, nulls,
    nesting, datetimes and UUIDs as the module says; and so must the domain on its own."""
    expected = _SPEC.encode(document).encode()
    fast = orjson_canonical(document)
    assert fast is None or fast == expected
    use_fast_encoder(None)
    try:
        assert canonical_bytes(document) == expected
    finally:
        use_fast_encoder(orjson_canonical)
    assert canonical_bytes(document) == expected


def test_an_amount_turned_float_or_bool_changes_the_hash() -> None:
    ledger_id = uuid4()

    hashes = {
        canonical_hash(ledger_id, 2, "Credited", {"amount": v}, ZERO_HASH) for v in (1, 1.0, True)
    }

    assert len(hashes) == 3


def usage_stream(reuse: bool = False) -> tuple[UUID, list[StoredLedgerEvent]]:
    """Usage windows charged as billing charges them: keys not kept by the ledger."""
    ledgers = Ledgers(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    tenant = uuid4()
    ledgers.credit(tenant, "pay-1", 250, NOW)
    ledger = ledgers.ledger(tenant)
    charges = [ledger.charge_usage(f"usage:a:{k}", 100, NOW) for k in range(3)]
    if reuse:  # a broken caller: the same window twice
        ledger.charge_usage("usage:a:0", 100, NOW)
    ledgers.save(ledger)
    assert [(c.amount, c.remainder) for c in charges] == [(100, 0), (100, 0), (50, 50)]
    assert not any(k.startswith("usage:") for k in ledgers.ledger(tenant).outcomes)
    return tenant, list(ledger_stream(ledgers, ledger_id_of(tenant)).events)


def test_usage_charges_verify_and_the_floor_holds() -> None:
    tenant, events = usage_stream()
    report = verify([LedgerStream(ledger_id_of(tenant), events)])
    assert report.ok, report.first_problem
    [summary] = report.ledgers
    assert (summary.posted, summary.available) == (0, 0)
    assert "DebitShortfall" not in [e.name for e in events]  # 50 of the last was still there


def test_a_usage_key_charged_twice_fails_verify() -> None:
    tenant, events = usage_stream(reuse=True)
    report = verify([LedgerStream(ledger_id_of(tenant), events)])
    assert not report.ok and report.first_problem is not None
    assert "usage:a:0" in str(report.first_problem)


@pytest.mark.parametrize(
    ("stored", "state"),
    [
        (b'{"amount": 18446744073709551617}', {"amount": 2**64 + 1}),  # not orjson's float
        (b'{"amount": 5.0, "at": {"_type_": "datetime_iso", "_data_": "2026-11-28T12:00:00Z"}}',
         {"amount": 5.0, "at": "2026-11-28T12:00:00Z"}),
        (b'{"tenant_id": {"_type_": "uuid_hex", "_data_": "175bd51b3748414db6cd001b18a6b026"}}',
         {"tenant_id": "175bd51b-3748-414d-b6cd-001b18a6b026"}),
        (b'{"x": {"_type_": "decimal_str", "_data_": "1.5"}}', None),  # never in a ledger
        (b'{"x": {"_type_": "uuid_hex", "_data_": "not a uuid"}}', None),
        (b'{"amount": NaN}', {"amount": math.nan}),
        (b'{"amount": 5', None),
        (b"[1, 2]", None),
    ],
)  # fmt: skip
def test_the_auditor_reads_stored_bytes_as_they_are(
    stored: bytes, state: dict[str, Any] | None
) -> None:
    read = auditor_state(stored)
    if state is not None and "amount" in state and state["amount"] != state["amount"]:
        assert read is not None and math.isnan(read["amount"])
        return
    assert read == state
    if read is not None and "amount" in read:
        assert type(read["amount"]) is type(state["amount"])  # type: ignore[index]
