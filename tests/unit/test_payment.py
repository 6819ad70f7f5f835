"""The Payment aggregate: given / when / then. Stripe's facts in, ledger effects out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import ValidationFailedError
from domain.payment import MICROS_PER_CENT, Effect, Payment

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the aggregate is given every instant
CENTS = 1_000  # a $10 top-up


def a_payment(session: str = "cs_1") -> Payment:
    """Given: a payment of $10 with its Checkout Session."""
    payment = Payment.open(uuid4(), uuid4(), CENTS * MICROS_PER_CENT, "digest", NOW)
    payment.attach_session(session, "https://pay.example/cs_1", NOW + timedelta(hours=1), NOW)
    return payment


def paid(payment: Payment, event_id: str = "evt_paid") -> list[Effect]:
    return payment.complete(event_id, "checkout.session.completed", True, CENTS, "pi_1", NOW)


def test_a_paid_completion_credits_once_however_often_it_arrives() -> None:
    payment = a_payment()

    first = paid(payment)
    again = [paid(payment) for _ in range(9)]

    assert first == [Effect("credit", "stripe:credit:cs_1", CENTS * MICROS_PER_CENT, "payment")]
    assert again == [[]] * 9
    assert (payment.state, payment.facts.credited) == ("credited", CENTS * MICROS_PER_CENT)


def test_an_unpaid_completion_credits_nothing_until_the_async_payment_succeeds() -> None:
    payment = a_payment()

    waiting = payment.complete("evt_1", "checkout.session.completed", False, CENTS, "pi_1", NOW)
    assert (waiting, payment.state) == ([], "open")
    succeeded = payment.complete(
        "evt_2", "checkout.session.async_payment_succeeded", True, CENTS, None, NOW
    )

    assert [e.kind for e in succeeded] == ["credit"]
    assert (payment.state, payment.facts.payment_intent) == ("credited", "pi_1")


@pytest.mark.parametrize(("kind", "why"), [
    ("checkout.session.async_payment_failed", "failed"),
    ("checkout.session.expired", "expired"),
])  # fmt: skip
def test_a_failed_or_expired_session_closes_without_credit_and_a_late_paid_one_is_ignored(
    kind: str, why: str
) -> None:
    payment = a_payment()

    assert payment.close("evt_1", kind, why, NOW) == []
    assert paid(payment, "evt_2") == []
    assert (payment.state, payment.facts.credited) == (why, 0)


def test_an_expiry_after_the_payment_changes_nothing() -> None:
    payment = a_payment()
    paid(payment)

    assert payment.close("evt_2", "checkout.session.expired", "expired", NOW) == []
    assert payment.state == "credited"


def test_partial_then_full_refunds_claw_back_each_delta_of_the_cumulative_total() -> None:
    payment = a_payment()
    paid(payment)

    partial = payment.note_refunds("evt_r1", "charge.refunded", 300, NOW)
    assert payment.state == "partially_refunded"
    full = payment.note_refunds("evt_r2", "charge.refunded", CENTS, NOW)
    stale = payment.note_refunds("evt_r0", "charge.refunded", 300, NOW)  # out of order

    assert [(e.kind, e.amount) for e in partial + full] == [
        ("claw_back", 300 * MICROS_PER_CENT), ("claw_back", 700 * MICROS_PER_CENT),
    ]  # fmt: skip
    assert stale == [] and payment.state == "refunded"
    assert payment.facts.clawed == CENTS * MICROS_PER_CENT


def test_a_refund_before_the_completion_is_held_and_posted_with_the_credit() -> None:
    payment = a_payment()

    early = payment.note_refunds("evt_r1", "charge.refunded", 400, NOW)
    effects = paid(payment)

    assert early == []
    assert [(e.kind, e.amount) for e in effects] == [
        ("credit", CENTS * MICROS_PER_CENT), ("claw_back", 400 * MICROS_PER_CENT),
    ]  # fmt: skip
    assert payment.state == "partially_refunded"


def test_a_dispute_withdraws_then_reinstates_the_funds_and_closes_won() -> None:
    payment = a_payment()
    paid(payment)

    opened = payment.note_dispute("evt_d1", "charge.dispute.created", "open", None, NOW)
    withdrawn = payment.note_dispute("evt_d2", "charge.dispute.funds_withdrawn", None, CENTS, NOW)
    assert payment.state == "disputed"
    reinstated = payment.note_dispute("evt_d3", "charge.dispute.funds_reinstated", None, 0, NOW)
    closed = payment.note_dispute("evt_d4", "charge.dispute.closed", "won", None, NOW)

    assert opened == [] and closed == []
    assert [(e.kind, e.amount, e.reason) for e in withdrawn] == [
        ("claw_back", CENTS * MICROS_PER_CENT, "dispute")
    ]
    assert [(e.kind, e.key) for e in reinstated] == [("credit", "stripe:reinstated:evt_d3")]
    assert (payment.state, payment.facts.clawed) == ("dispute_won", 0)


def test_a_lost_dispute_after_a_partial_refund_never_claws_back_more_than_was_credited() -> None:
    payment = a_payment()
    paid(payment)
    payment.note_refunds("evt_r1", "charge.refunded", 300, NOW)

    payment.note_dispute("evt_d1", "charge.dispute.funds_withdrawn", "open", CENTS, NOW)
    payment.note_dispute("evt_d2", "charge.dispute.closed", "lost", None, NOW)

    assert payment.facts.clawed == CENTS * MICROS_PER_CENT
    assert payment.state == "dispute_lost"


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "100"])
def test_a_payment_of_no_positive_integer_amount_is_refused(amount: object) -> None:
    with pytest.raises(ValidationFailedError):
        Payment.open(uuid4(), uuid4(), amount, "digest", NOW)  # type: ignore[arg-type]


def test_another_session_for_a_payment_that_has_one_is_refused() -> None:
    payment = a_payment("cs_1")
    payment.attach_session("cs_1", "https://pay.example/cs_1", NOW, NOW)  # the same: nothing

    with pytest.raises(ValidationFailedError):
        payment.attach_session("cs_2", "https://pay.example/cs_2", NOW, NOW)
    assert [type(e).__name__ for e in payment.collect_events()] == ["Opened", "SessionCreated"]


def test_a_payment_replays_to_the_same_facts() -> None:
    payment = a_payment()
    paid(payment)
    payment.note_refunds("evt_r1", "charge.refunded", 250, NOW)

    rebuilt = None
    for domain_event in payment.collect_events():
        rebuilt = domain_event.mutate(rebuilt)

    assert isinstance(rebuilt, Payment)
    assert (rebuilt.facts, rebuilt.applied) == (payment.facts, payment.applied)
