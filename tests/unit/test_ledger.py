"""Ledger aggregate and the Ledgers application in memory: given / when / then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate

from domain.errors import (
    DomainError,
    IdempotencyKeyReusedError,
    NotFoundError,
    ValidationFailedError,
)
from domain.ledger import Ledger
from domain.ledger_hash import (
    ADJUSTMENTS,
    PAYMENT_CLEARING,
    PROMOTIONAL_CREDIT,
    REVENUE,
    ZERO_HASH,
    hold_id_of,
    ledger_id_of,
)
from domain.ledger_terms import (
    HoldAmountExceededError,
    HoldNotOpenError,
    InsufficientFundsError,
)
from domain.ledger_verify import verify
from handlers.ledgers import Ledgers
from infra.auditor_reads import ledger_stream

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
USD = 1_000_000  # micro-dollars


def a_ledger(balance: int = 0, floor: int = 0) -> Ledger:
    """Given: an open ledger credited with ``balance``, its events collected."""
    ledger = Ledger.open(uuid4(), NOW, floor)
    if balance:
        ledger.credit("top-up", balance, NOW)
    ledger.collect_events()
    return ledger


def recorded(ledger: Aggregate) -> list[Any]:
    """The events recorded since the last look (typed loosely: tests read their fields)."""
    return list(ledger.collect_events())


def names(ledger: Aggregate) -> list[str]:
    return [type(e).__name__ for e in ledger.collect_events()]


def amounts(ledger: Ledger) -> tuple[int, int, int]:
    return ledger.posted, ledger.held, ledger.available


def replayed(ledger: Aggregate, events: list[Any]) -> Any:
    rebuilt = None
    for domain_event in events:
        rebuilt = domain_event.mutate(rebuilt)
    return rebuilt


# Opening


def test_opening_records_opened_with_zero_balances_and_the_floor() -> None:
    tenant = uuid4()

    ledger = Ledger.open(tenant, NOW, floor=-5 * USD)

    [opened] = recorded(ledger)
    assert type(opened).__name__ == "Opened"
    assert (opened.tenant_id, opened.floor, opened.prev_hash) == (tenant, -5 * USD, ZERO_HASH)
    assert ledger.id == ledger_id_of(tenant) != tenant
    assert (*amounts(ledger), ledger.floor, ledger.depleted) == (0, 0, 0, -5 * USD, False)


EVENTS = [
    "Opened", "Credited", "Debited", "Refunded", "Adjusted", "HoldPlaced", "HoldCaptured",
    "HoldVoided", "HoldExpired", "DebitShortfall", "PostingRejected", "BalanceDepleted",
    "BalanceRestored",
]  # fmt: skip


def test_every_ledger_event_has_a_stable_type_name() -> None:
    topics = [getattr(Ledger, name).TOPIC for name in EVENTS]

    assert Ledger.TOPIC == "gpucloud.ledger.Ledger"
    assert topics == [f"gpucloud.ledger.Ledger.{name}" for name in EVENTS]
    assert all(getattr(Ledger, name).__name__ == name for name in EVENTS)


@pytest.mark.parametrize(
    "floor, now",
    [(1, NOW), (0.0, NOW), (True, NOW), (-(10**15) - 1, NOW), (0, NOW.replace(tzinfo=None))],
)
def test_a_ledger_with_a_bad_floor_or_a_naive_time_is_refused(floor: Any, now: Any) -> None:
    with pytest.raises(ValidationFailedError):
        Ledger.open(uuid4(), now, floor)


# Credits and debits


@pytest.mark.parametrize(
    "source, account", [("payment", PAYMENT_CLEARING), ("promotion", PROMOTIONAL_CREDIT)]
)
def test_a_credit_posts_both_legs_into_the_tenants_cash(source: str, account: str) -> None:
    ledger = a_ledger()

    receipt = ledger.credit("pay-1", 7 * USD, NOW, source=source)

    [credited] = recorded(ledger)
    legs = (credited.debit_account, credited.credit_account, credited.amount)
    assert legs == (account, f"tenant:{ledger.tenant_id}:cash", 7 * USD)
    assert (credited.kind, credited.key, credited.at) == ("credit", "pay-1", NOW)
    assert (receipt.version, receipt.hash, receipt.amount) == (2, credited.hash, 7 * USD)
    assert amounts(ledger) == (7 * USD, 0, 7 * USD)


@pytest.mark.parametrize("amount", [0, -1, 1.5, 1.0, True, "5", None, 10**15 + 1])
def test_a_bad_amount_is_refused_and_not_remembered(amount: Any) -> None:
    ledger = a_ledger(10 * USD)

    for command in (
        lambda: ledger.credit("k", amount, NOW),
        lambda: ledger.debit("k", amount, NOW),
        lambda: ledger.refund("k", amount, NOW),
        lambda: ledger.hold("k", amount, LATER, NOW),
    ):
        with pytest.raises(ValidationFailedError):
            command()

    assert names(ledger) == []
    assert ledger.debit("k", 1, NOW).amount == 1  # the key is still free


@pytest.mark.parametrize("key", ["", "a b", "x" * 256, "é", None, 5])
def test_a_bad_idempotency_key_is_refused(key: Any) -> None:
    with pytest.raises(ValidationFailedError):
        a_ledger().credit(key, USD, NOW)


def test_an_unknown_credit_source_is_refused() -> None:
    with pytest.raises(ValidationFailedError):
        a_ledger().credit("k", USD, NOW, source="gift")


def test_a_debit_moves_cash_to_revenue() -> None:
    ledger = a_ledger(10 * USD)

    ledger.debit("usage-1", 3 * USD, NOW)

    [debited] = recorded(ledger)
    legs = (debited.debit_account, debited.credit_account, debited.amount, debited.remainder)
    assert legs == (ledger.cash, REVENUE, 3 * USD, 0)
    assert amounts(ledger) == (7 * USD, 0, 7 * USD)


def test_a_debit_below_the_floor_is_refused_and_the_refusal_recorded() -> None:
    ledger = a_ledger(2 * USD)

    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-1", 3 * USD, NOW)

    [rejected] = recorded(ledger)
    assert type(rejected).__name__ == "PostingRejected"
    assert (rejected.key, rejected.kind, rejected.reason) == (
        "usage-1",
        "debit",
        "insufficient-funds",
    )
    assert amounts(ledger) == (2 * USD, 0, 2 * USD)


def test_a_credit_line_lets_debits_go_negative_down_to_the_floor_only() -> None:
    ledger = a_ledger(USD, floor=-2 * USD)

    ledger.debit("usage-1", 3 * USD, NOW)
    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-2", 1, NOW)

    assert names(ledger) == ["Debited", "BalanceDepleted", "PostingRejected"]
    assert amounts(ledger) == (-2 * USD, 0, -2 * USD)


def test_a_refund_moves_cash_back_to_payment_clearing_and_respects_the_floor() -> None:
    ledger = a_ledger(5 * USD)

    ledger.refund("refund-1", 4 * USD, NOW)
    with pytest.raises(InsufficientFundsError):
        ledger.refund("refund-2", 2 * USD, NOW)

    refunded, rejected = recorded(ledger)
    assert (refunded.debit_account, refunded.credit_account) == (ledger.cash, PAYMENT_CLEARING)
    assert (refunded.kind, rejected.kind) == ("refund", "refund")
    assert ledger.posted == USD


def test_a_claw_back_posts_even_below_the_floor_and_depletes_once() -> None:
    ledger = a_ledger(5 * USD)
    ledger.debit("usage-1", 4 * USD, NOW)
    ledger.collect_events()

    ledger.claw_back("stripe:refund:1", 3 * USD, "refund", NOW)
    ledger.claw_back("stripe:refund:2", USD, "dispute", NOW)

    clawed, depleted, again = recorded(ledger)
    assert (clawed.debit_account, clawed.credit_account) == (ledger.cash, PAYMENT_CLEARING)
    assert (clawed.kind, clawed.reason, type(depleted).__name__) == (
        "clawback", "refund", "BalanceDepleted"
    )  # fmt: skip
    assert (again.kind, ledger.depleted) == ("clawback", True)
    assert amounts(ledger) == (-3 * USD, 0, -3 * USD)


def test_a_top_up_after_a_claw_back_restores_only_once_above_the_floor() -> None:
    ledger = a_ledger(USD)
    ledger.claw_back("stripe:dispute:1", 3 * USD, "dispute", NOW)
    ledger.credit("top-up-2", USD, NOW)
    ledger.collect_events()

    ledger.credit("top-up-3", 2 * USD, NOW)

    assert names(ledger) == ["Credited", "BalanceRestored"]
    assert ledger.available == USD


def test_a_claw_back_key_again_is_a_replay_and_another_amount_is_refused() -> None:
    ledger = a_ledger(5 * USD)
    first = ledger.claw_back("stripe:refund:1", USD, "refund", NOW)

    assert ledger.claw_back("stripe:refund:1", USD, "refund", NOW).replayed
    with pytest.raises(IdempotencyKeyReusedError):
        ledger.claw_back("stripe:refund:1", 2 * USD, "refund", NOW)
    assert (first.replayed, ledger.posted) == (False, 4 * USD)


# The last usage window


def test_debit_up_to_takes_everything_when_there_is_enough() -> None:
    ledger = a_ledger(5 * USD)

    receipt = ledger.debit_up_to("window-9", 2 * USD, NOW)

    assert (receipt.taken, receipt.remainder) == (2 * USD, 0)
    assert names(ledger) == ["Debited"]


def test_debit_up_to_takes_what_is_left_reports_the_remainder_and_depletes() -> None:
    ledger = a_ledger(5 * USD)

    receipt = ledger.debit_up_to("window-9", 8 * USD, NOW)

    assert (receipt.taken, receipt.remainder) == (5 * USD, 3 * USD)
    assert names(ledger) == ["Debited", "BalanceDepleted"]
    assert amounts(ledger) == (0, 0, 0)


def test_debit_up_to_at_the_floor_takes_nothing_and_records_the_shortfall() -> None:
    ledger = a_ledger(USD)
    ledger.debit("usage-1", USD, NOW)
    ledger.collect_events()

    receipt = ledger.debit_up_to("window-9", 2 * USD, NOW)

    assert (receipt.taken, receipt.remainder, receipt.version) == (0, 2 * USD, 5)
    assert names(ledger) == ["DebitShortfall"]
    assert ledger.debit_up_to("window-9", 2 * USD, NOW).remainder == 2 * USD  # a replay


# Holds


def a_hold(ledger: Ledger, amount: int = 4 * USD, key: str = "hold-1") -> str:
    hold_id = ledger.hold(key, amount, LATER, NOW).hold_id
    assert hold_id is not None
    return hold_id


def test_a_hold_reduces_available_but_posts_nothing() -> None:
    ledger = a_ledger(10 * USD)

    receipt = ledger.hold("hold-1", 4 * USD, LATER, NOW)

    [placed] = recorded(ledger)
    assert (placed.hold_id, placed.expires_at, placed.kind) == (receipt.hold_id, LATER, "hold")
    assert amounts(ledger) == (10 * USD, 4 * USD, 6 * USD)
    assert receipt.hold_id == hold_id_of(ledger.id, "hold-1")  # the same key, the same hold


def test_a_hold_beyond_available_is_refused_like_a_debit() -> None:
    ledger = a_ledger(10 * USD)
    a_hold(ledger, 6 * USD)

    with pytest.raises(InsufficientFundsError):
        ledger.hold("hold-2", 5 * USD, LATER, NOW)
    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-1", 5 * USD, NOW)

    assert amounts(ledger) == (10 * USD, 6 * USD, 4 * USD)


@pytest.mark.parametrize(
    "expires_at", [NOW, NOW - timedelta(seconds=1), LATER.replace(tzinfo=None)]
)
def test_a_hold_must_expire_in_the_future(expires_at: datetime) -> None:
    with pytest.raises(ValidationFailedError):
        a_ledger(10 * USD).hold("hold-1", USD, expires_at, NOW)


def test_a_full_capture_posts_the_held_amount() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)
    ledger.collect_events()

    receipt = ledger.capture("capture-1", hold_id, None, NOW)

    [captured] = recorded(ledger)
    assert (captured.amount, captured.released, receipt.hold_id) == (4 * USD, 0, hold_id)
    assert amounts(ledger) == (6 * USD, 0, 6 * USD)


def test_a_partial_capture_posts_part_and_releases_the_rest() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)
    ledger.collect_events()

    ledger.capture("capture-1", hold_id, USD, NOW)

    [captured] = recorded(ledger)
    assert (captured.amount, captured.released) == (USD, 3 * USD)
    assert amounts(ledger) == (9 * USD, 0, 9 * USD)


def test_a_capture_beyond_the_hold_is_refused_and_the_hold_stays_open() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)

    with pytest.raises(HoldAmountExceededError):
        ledger.capture("capture-1", hold_id, 5 * USD, NOW)

    assert ledger.holds[hold_id].state == "open"
    assert ledger.capture("capture-2", hold_id, 4 * USD, NOW).amount == 4 * USD


def test_a_second_capture_of_a_hold_is_refused_but_a_replay_of_the_first_is_answered() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)
    first = ledger.capture("capture-1", hold_id, USD, NOW)
    ledger.collect_events()

    again = ledger.capture("capture-1", hold_id, USD, NOW)
    with pytest.raises(HoldNotOpenError):
        ledger.capture("capture-2", hold_id, USD, NOW)

    assert again == first.__class__(**{**first.__dict__, "replayed": True})
    assert names(ledger) == ["PostingRejected"]


def test_void_releases_a_hold_and_a_capture_after_it_is_refused() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)
    ledger.collect_events()

    ledger.void("void-1", hold_id, NOW)
    with pytest.raises(HoldNotOpenError):
        ledger.capture("capture-1", hold_id, None, NOW)
    with pytest.raises(HoldNotOpenError):
        ledger.void("void-2", hold_id, NOW)

    assert names(ledger) == ["HoldVoided", "PostingRejected", "PostingRejected"]
    assert amounts(ledger) == (10 * USD, 0, 10 * USD)


def test_capturing_or_voiding_an_unknown_hold_is_not_found_and_remembered() -> None:
    ledger = a_ledger(10 * USD)

    with pytest.raises(NotFoundError):
        ledger.capture("capture-1", "no-such-hold", None, NOW)
    with pytest.raises(NotFoundError):
        ledger.capture("capture-1", "no-such-hold", None, NOW)

    assert names(ledger) == ["PostingRejected"]


def test_a_hold_past_its_expiry_cannot_be_captured_but_can_be_voided() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)

    with pytest.raises(HoldNotOpenError):
        ledger.capture("capture-1", hold_id, None, LATER)
    ledger.void("void-1", hold_id, LATER)

    assert amounts(ledger) == (10 * USD, 0, 10 * USD)


def test_expire_releases_a_due_hold_once() -> None:
    ledger = a_ledger(10 * USD)
    hold_id = a_hold(ledger)
    ledger.collect_events()

    early = ledger.expire(hold_id, LATER - timedelta(microseconds=1))
    first, second = ledger.expire(hold_id, LATER), ledger.expire(hold_id, LATER)

    assert (early, first, second) == (False, True, False)
    [expired] = recorded(ledger)
    assert (type(expired).__name__, expired.key, expired.amount) == (
        "HoldExpired",
        f"expire:{hold_id}",
        4 * USD,
    )
    assert ledger.expired_holds(LATER) == ()
    assert amounts(ledger) == (10 * USD, 0, 10 * USD)


def test_expire_of_a_captured_or_voided_hold_is_a_no_op_and_of_an_unknown_one_not_found() -> None:
    ledger = a_ledger(10 * USD)
    captured, voided = a_hold(ledger, USD, "hold-1"), a_hold(ledger, USD, "hold-2")
    ledger.capture("capture-1", captured, None, NOW)
    ledger.void("void-1", voided, NOW)
    ledger.collect_events()

    assert (ledger.expire(captured, LATER), ledger.expire(voided, LATER)) == (False, False)
    assert names(ledger) == []
    with pytest.raises(NotFoundError):
        ledger.expire("no-such-hold", LATER)


def test_expired_holds_lists_the_open_holds_that_are_due() -> None:
    ledger = a_ledger(10 * USD)
    due = a_hold(ledger, USD, "hold-1")
    ledger.hold("hold-2", USD, LATER + timedelta(hours=1), NOW)

    assert ledger.expired_holds(LATER) == (due,)


# Adjustments


def test_adjustments_are_signed_against_the_adjustments_account() -> None:
    ledger = a_ledger(5 * USD)

    ledger.adjust("ops-1", 2 * USD, "goodwill after outage", NOW)
    ledger.adjust("ops-2", -3 * USD, "  duplicate credit  ", NOW)

    up, down = recorded(ledger)
    assert (up.debit_account, up.credit_account, up.amount) == (ADJUSTMENTS, ledger.cash, 2 * USD)
    assert (down.debit_account, down.credit_account, down.amount) == (
        ledger.cash,
        ADJUSTMENTS,
        3 * USD,
    )
    assert down.reason == "duplicate credit"
    assert ledger.posted == 4 * USD


def test_a_negative_adjustment_below_the_floor_is_refused() -> None:
    with pytest.raises(InsufficientFundsError):
        a_ledger(USD).adjust("ops-1", -2 * USD, "correction", NOW)


@pytest.mark.parametrize(
    "amount, reason",
    [(0, "r"), (True, "r"), (1.0, "r"), (1, ""), (1, "  "), (1, "x" * 501), (1, None)],
)
def test_an_adjustment_needs_a_non_zero_amount_and_a_reason(amount: Any, reason: Any) -> None:
    with pytest.raises(ValidationFailedError):
        a_ledger(USD).adjust("ops-1", amount, reason, NOW)


# Depleted and restored, once per crossing


def test_balance_depleted_once_when_available_reaches_the_floor_and_restored_once() -> None:
    ledger = a_ledger(3 * USD)

    ledger.debit("usage-1", 2 * USD, NOW)
    ledger.debit("usage-2", USD, NOW)
    ledger.debit_up_to("usage-3", USD, NOW)
    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-4", USD, NOW)
    ledger.credit("pay-1", 2 * USD, NOW)
    ledger.credit("pay-2", 2 * USD, NOW)

    assert names(ledger) == [
        "Debited", "Debited", "BalanceDepleted", "DebitShortfall", "PostingRejected", "Credited",
        "BalanceRestored", "Credited",
    ]  # fmt: skip
    assert ledger.depleted is False


def test_a_hold_can_deplete_and_its_void_or_expiry_restore() -> None:
    ledger = a_ledger(4 * USD)
    first = a_hold(ledger, 4 * USD, "hold-1")
    ledger.void("void-1", first, NOW)
    second = a_hold(ledger, 4 * USD, "hold-2")
    ledger.expire(second, LATER)

    assert names(ledger) == [
        "HoldPlaced", "BalanceDepleted", "HoldVoided", "BalanceRestored",
        "HoldPlaced", "BalanceDepleted", "HoldExpired", "BalanceRestored",
    ]  # fmt: skip


def test_a_partial_capture_of_a_depleting_hold_restores_the_released_rest() -> None:
    ledger = a_ledger(4 * USD)
    hold_id = a_hold(ledger, 4 * USD)
    ledger.collect_events()

    ledger.capture("capture-1", hold_id, USD, NOW)

    assert names(ledger) == ["HoldCaptured", "BalanceRestored"]
    assert ledger.balances().available == 3 * USD


def test_a_fresh_ledger_at_its_floor_is_not_depleted() -> None:
    ledger = a_ledger()

    ledger.debit_up_to("window-1", USD, NOW)
    ledger.credit("pay-1", USD, NOW)

    assert names(ledger) == ["DebitShortfall", "Credited"]


# Idempotency


def test_the_same_key_and_request_returns_the_first_receipt_and_records_nothing() -> None:
    ledger = a_ledger(10 * USD)
    first = ledger.debit("usage-1", USD, NOW)
    ledger.collect_events()

    again = ledger.debit("usage-1", USD, NOW + timedelta(days=3))

    assert (again.version, again.hash, again.amount, again.replayed) == (
        first.version, first.hash, first.amount, True,
    )  # fmt: skip
    assert names(ledger) == []
    assert ledger.posted == 9 * USD


@pytest.mark.parametrize(
    "retry",
    [
        lambda ledger: ledger.debit("usage-1", 2 * USD, NOW),
        lambda ledger: ledger.refund("usage-1", USD, NOW),
        lambda ledger: ledger.debit_up_to("usage-1", USD, NOW),
        lambda ledger: ledger.credit("usage-1", USD, NOW),
    ],
)
def test_a_key_reused_for_another_request_is_refused(retry: Any) -> None:
    ledger = a_ledger(10 * USD)
    ledger.debit("usage-1", USD, NOW)
    ledger.collect_events()

    with pytest.raises(IdempotencyKeyReusedError):
        retry(ledger)

    assert names(ledger) == []


def test_a_refused_posting_stays_refused_after_a_top_up() -> None:
    ledger = a_ledger(USD)
    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-1", 2 * USD, NOW)
    ledger.credit("pay-1", 5 * USD, NOW)
    ledger.collect_events()

    with pytest.raises(InsufficientFundsError):
        ledger.debit("usage-1", 2 * USD, NOW)
    with pytest.raises(IdempotencyKeyReusedError):
        ledger.debit("usage-1", USD, NOW)

    assert names(ledger) == []
    assert ledger.posted == 6 * USD


def test_a_hold_replayed_after_its_expiry_returns_the_first_receipt() -> None:
    ledger = a_ledger(10 * USD)
    first = ledger.hold("hold-1", USD, LATER, NOW)

    again = ledger.hold("hold-1", USD, LATER, LATER + timedelta(hours=1))

    assert (again.hold_id, again.version, again.replayed) == (first.hold_id, first.version, True)


# Replay and the hash chain


def busy_ledger() -> tuple[Ledger, list[Any]]:
    ledger = Ledger.open(uuid4(), NOW, floor=-USD)
    ledger.credit("pay-1", 5 * USD, NOW)
    hold_id = a_hold(ledger, 2 * USD)
    ledger.capture("capture-1", hold_id, USD, NOW)
    ledger.debit_up_to("window-1", 9 * USD, NOW)
    with pytest.raises(DomainError):
        ledger.refund("refund-1", USD, NOW)
    ledger.adjust("ops-1", 3 * USD, "goodwill", NOW)
    return ledger, list(ledger.collect_events())


def test_replaying_the_events_rebuilds_the_same_state_and_hashes() -> None:
    ledger, events = busy_ledger()

    rebuilt = replayed(ledger, events)

    assert rebuilt.__dict__ == ledger.__dict__
    assert rebuilt.last_hash == events[-1].hash


def test_each_event_chains_to_the_previous_ones_hash() -> None:
    _, events = busy_ledger()

    assert events[0].prev_hash == ZERO_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert len({e.hash for e in events}) == len(events)


def test_the_same_commands_at_the_same_times_give_the_same_hashes() -> None:
    tenant = uuid4()
    hashes = []
    for _ in range(2):
        ledger = Ledger.open(tenant, NOW)
        ledger.credit("pay-1", USD, NOW)
        hashes.append(ledger.last_hash)

    assert hashes[0] == hashes[1]


# The application, in memory


@pytest.fixture
def ledgers() -> Ledgers:
    return Ledgers(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_opening_twice_is_a_no_op_and_with_another_floor_refused(ledgers: Ledgers) -> None:
    tenant = uuid4()

    first, again = ledgers.open(tenant, NOW), ledgers.open(tenant, NOW)

    assert (first.created, again.created, again.version) == (True, False, 1)
    with pytest.raises(ValidationFailedError):
        ledgers.open(tenant, NOW, floor=-USD)


def test_a_credit_opens_the_ledger_and_other_commands_need_it_open(ledgers: Ledgers) -> None:
    tenant = uuid4()
    with pytest.raises(NotFoundError):
        ledgers.debit(tenant, "usage-1", USD, NOW)

    receipt = ledgers.credit(tenant, "pay-1", 2 * USD, NOW)

    assert (receipt.ledger_id, receipt.version) == (ledger_id_of(tenant), 2)
    assert ledgers.balances(tenant).available == 2 * USD


def test_a_refusal_is_saved_then_raised_and_raised_again_on_retry(ledgers: Ledgers) -> None:
    tenant = uuid4()
    ledgers.credit(tenant, "pay-1", USD, NOW)

    with pytest.raises(InsufficientFundsError):
        ledgers.debit(tenant, "usage-1", 2 * USD, NOW)
    ledgers.credit(tenant, "pay-2", 5 * USD, NOW)
    with pytest.raises(InsufficientFundsError):
        ledgers.debit(tenant, "usage-1", 2 * USD, NOW)

    assert ledgers.balances(tenant).version == 4  # opened, credited, rejected, credited


def test_holds_through_the_application_and_the_expiry_worker(ledgers: Ledgers) -> None:
    tenant = uuid4()
    ledgers.credit(tenant, "pay-1", 5 * USD, NOW)
    kept = ledgers.hold(tenant, "hold-1", 2 * USD, LATER, NOW).hold_id
    lapsed = ledgers.hold(tenant, "hold-2", 2 * USD, LATER, NOW).hold_id
    assert kept is not None and lapsed is not None

    ledgers.capture(tenant, "capture-1", kept, USD, NOW)
    due = ledgers.expired_holds(tenant, LATER)
    expired = [ledgers.expire_holds([(tenant, hold_id)], LATER) for hold_id in (*due, *due)]

    assert (due, expired) == ((lapsed,), [1, 0])
    assert (ledgers.balances(tenant).posted, ledgers.balances(tenant).held) == (4 * USD, 0)


def test_the_stored_streams_verify_and_the_ids_are_listed(ledgers: Ledgers) -> None:
    tenants = [uuid4(), uuid4()]
    for tenant in tenants:
        ledgers.credit(tenant, "pay-1", 5 * USD, NOW)
        ledgers.debit_up_to(tenant, "window-1", 6 * USD, NOW)

    ids = list(ledgers.ledger_ids(page=1))
    report = verify(ledger_stream(ledgers, ledger_id) for ledger_id in ids)

    assert ids == [ledger_id_of(tenant) for tenant in tenants]
    assert (report.ok, report.events, [s.posted for s in report.ledgers]) == (True, 8, [0, 0])


def test_a_deep_copy_of_a_ledger_shares_no_mutable_state() -> None:
    """The repository hands out deep copies of cached ledgers: deciding on a copy must leave
    the cached one as it was."""
    import copy

    ledger = Ledger.open(uuid4(), NOW)
    ledger.credit("pay", 1_000, NOW)
    held = ledger.hold("h", 100, NOW + timedelta(hours=1), NOW)
    ledger.collect_events()
    clone = copy.deepcopy(ledger)
    clone.debit("use", 10, NOW)
    assert held.hold_id is not None
    clone.capture("cap", held.hold_id, None, NOW)
    assert (ledger.posted, ledger.held, ledger.version) == (1_000, 100, 3)
    assert "use" not in ledger.outcomes and ledger.holds[held.hold_id].state == "open"
    assert ledger.pending_events == [] and len(clone.pending_events) == 2
