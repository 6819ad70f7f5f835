"""The payments process manager against real PostgreSQL: every Stripe event stored in the inbox
is applied exactly once, in any order, and a pass killed anywhere loses and doubles nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.ledger_terms import Receipt
from domain.ledger_verify import verify as verify_ledgers
from domain.payment import MICROS_PER_CENT
from infra import metrics
from infra import stripe_inbox as inbox
from infra.auditor_reads import ledger_streams
from infra.bootstrap import System, build_system
from tests.clock import TestClock
from tests.integration.payment_world import CENTS, open_payment, payment_settings
from workers import payments as worker

pytestmark = pytest.mark.integration
CREDIT = CENTS * MICROS_PER_CENT


@pytest.fixture
async def system(database_url: str, schema: str) -> AsyncIterator[System]:
    clock = TestClock(datetime.now(UTC))  # derived from the real clock, as Stripe's events are
    built = build_system(payment_settings(database_url, schema), clock)
    await built.open()
    yield built
    await built.close()


async def deliver(system: System, *events: dict[str, Any]) -> None:
    async with system.pool.connection() as conn:
        for event in events:
            await inbox.store(conn, event, system.clock())


async def drain(system: System, passes: int = 3) -> None:
    """Passes as the worker runs them, the clock moved past any deferral in between."""
    for _ in range(passes):
        await worker.payments_pass(system)
        system.clock.advance(360)  # type: ignore[attr-defined]


async def states(system: System) -> dict[str, int]:
    async with system.pool.connection() as conn:
        return await inbox.counts(conn)


async def test_a_paid_completion_delivered_ten_times_credits_once(system: System) -> None:
    paying = open_payment(system)
    event = paying.completed()
    await deliver(system, *[event] * 10)

    await drain(system)

    assert paying.balance() == CREDIT
    assert system.payments.payment(paying.payment).state == "credited"
    assert await states(system) == {"applied": 1}


async def test_an_unpaid_completion_credits_only_when_the_async_payment_succeeds(
    system: System,
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.completed(paid=False))
    await drain(system, 1)
    assert paying.balance() == 0

    await deliver(
        system, paying.event("checkout.session.async_payment_succeeded", paying.session_object())
    )
    await drain(system, 1)

    assert paying.balance() == CREDIT


@pytest.mark.parametrize(("kind", "state"), [
    ("checkout.session.async_payment_failed", "failed"),
    ("checkout.session.expired", "expired"),
])  # fmt: skip
async def test_a_failed_or_expired_session_closes_the_payment_without_credit(
    system: System, kind: str, state: str
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.event(kind, paying.session_object(paid=False)))
    await drain(system, 1)

    assert system.payments.payment(paying.payment).state == state
    assert paying.balance() == 0


async def test_a_refund_before_its_completion_waits_then_both_apply(system: System) -> None:
    paying = open_payment(system)
    await deliver(system, paying.refunded(500))
    await drain(system, 2)  # the charge names a PaymentIntent nobody knows yet: deferred
    assert paying.balance() == 0
    assert await states(system) == {"pending": 1}

    await deliver(system, paying.completed())
    await drain(system)

    assert paying.balance() == CREDIT - 500 * MICROS_PER_CENT
    assert system.payments.payment(paying.payment).state == "partially_refunded"


async def test_partial_then_full_refund_claws_back_two_postings_that_sum_to_the_refund(
    system: System,
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.completed())
    await drain(system, 1)
    await deliver(system, paying.refunded(500))
    await drain(system, 1)
    await deliver(system, paying.refunded(CENTS))
    await drain(system, 1)

    ledger = system.ledgers.ledger(paying.tenant)
    claws = [
        o.amount
        for o in ledger.outcomes.values()
        if isinstance(o, Receipt) and o.kind == "clawback"
    ]
    assert sorted(claws) == [500 * MICROS_PER_CENT, 1_500 * MICROS_PER_CENT]
    assert paying.balance() == 0
    assert system.payments.payment(paying.payment).state == "refunded"


async def test_funds_withdrawn_after_the_credit_was_spent_go_below_zero_and_deplete(
    system: System,
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.completed())
    await drain(system, 1)
    system.ledgers.debit(paying.tenant, "usage-1", CREDIT - 1_000, system.clock())

    await deliver(system, paying.dispute("created"), paying.dispute("funds_withdrawn"))
    await drain(system, 1)

    ledger = system.ledgers.ledger(paying.tenant)
    assert (ledger.posted, ledger.depleted) == (1_000 - CREDIT, True)
    assert system.payments.payment(paying.payment).state == "disputed"
    report = verify_ledgers(ledger_streams(system.ledgers, [ledger.id]))
    assert report.ok, report.first_problem

    await deliver(system, paying.dispute("funds_reinstated"), paying.dispute("closed", "won"))
    await drain(system, 1)
    assert system.ledgers.ledger(paying.tenant).posted == 1_000
    assert system.payments.payment(paying.payment).state == "dispute_won"


async def test_livemode_unknown_types_and_foreign_sessions_are_ignored_and_counted(
    system: System,
) -> None:
    paying = open_payment(system)
    live = paying.completed(livemode=True)
    unknown = paying.event("customer.created", {"id": "cus_1"})
    foreign = paying.event("checkout.session.completed", {"id": "cs_other", "metadata": {}})
    before = {r: _ignored(r) for r in ("livemode", "unknown-type", "no-payment")}

    await deliver(system, live, unknown, foreign)
    await drain(system, 1)

    after = {r: _ignored(r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        "livemode": 1, "unknown-type": 1, "no-payment": 1
    }  # fmt: skip
    assert paying.balance() == 0 and await states(system) == {"ignored": 3}


async def test_a_pass_killed_after_the_effect_and_before_the_mark_credits_once(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.completed())

    async def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        patched.setattr(inbox, "finish", killed)
        with pytest.raises(SystemExit):
            await worker.payments_pass(system)
    assert paying.balance() == CREDIT  # the effect committed; the row is still leased
    assert await states(system) == {"pending": 1}

    await drain(system)  # the lease runs out: taken again, applied as a no-op

    assert paying.balance() == CREDIT
    assert await states(system) == {"applied": 1}


async def test_a_pass_killed_between_receipt_and_effect_applies_it_after_the_lease(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    paying = open_payment(system)
    await deliver(system, paying.completed())

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        patched.setattr(system.payments, "apply", killed)
        with pytest.raises(SystemExit):
            await worker.payments_pass(system)
    assert paying.balance() == 0
    await worker.payments_pass(system)  # still leased: nothing taken
    assert paying.balance() == 0

    await drain(system)

    assert paying.balance() == CREDIT


def _ignored(reason: str) -> float:
    return metrics.STRIPE_IGNORED.labels(reason)._value.get()
