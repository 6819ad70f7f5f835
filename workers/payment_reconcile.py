"""`gpucloud payments reconcile`: what Stripe says against what the ledger was given.

It lists Stripe's events since a moment (``GET /v1/events``, page by page), stores any the
webhook missed in the inbox and applies them through the same process manager, so a dropped
delivery is repaired the way a late one would be. Then it reports the drift it cannot repair:

- ``paid-not-credited``: a session Stripe completed as paid whose payment is not credited;
- ``credited-not-paid``: a payment credited whose session Stripe does not show as paid;
- ``refunds-differ``: Stripe's cumulative refund of a payment's charge is not what we hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import NotFoundError
from domain.payment import MICROS_PER_CENT, Payment
from infra import stripe_inbox as inbox
from infra.bootstrap import System
from infra.stripe_api import checkout_of, provider_event
from workers.payments import payments_pass

PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@dataclass
class Reconciliation:
    events: int = 0
    missed: int = 0  # stored now: the webhook never brought them
    drift: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "missed": self.missed, "drift": self.drift}


async def reconcile(
    system: System, since: datetime, step: Callable[[int], None] = lambda n: None
) -> Reconciliation:
    """Apply what was missed since ``since``, then compare; ``step`` counts events seen."""
    found = Reconciliation()
    stripe = checkout_of(system)
    events = await asyncio.to_thread(lambda: list(stripe.events_since(since)))  # blocking
    async with system.pool.connection() as conn:
        for event in reversed(events):  # oldest first, as they happened
            found.missed += await inbox.store(conn, event, system.clock())
            found.events += 1
            step(1)
    while await payments_pass(system):
        pass
    async with system.pool.connection() as conn:
        ours = await inbox.payments_since(conn, since)
    session_of = stripe.retrieve_session
    found.drift = await asyncio.to_thread(_drift, system, events, session_of)
    found.drift += await asyncio.to_thread(_credited_not_paid, system, ours, session_of)
    return found


def _drift(
    system: System, events: list[dict[str, Any]], session_of: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """What Stripe's events say that our payments do not."""
    drift: list[dict[str, Any]] = []
    refunds: dict[UUID, int] = {}
    for event in events:
        parsed = provider_event(event)
        payment = _payment(system, parsed.payment_id, parsed.payment_intent)
        if payment is None:
            continue
        if parsed.type in PAID and _paid(event) and not payment.facts.credited:
            drift.append(_row("paid-not-credited", payment, event["id"]))
        if parsed.type == "charge.refunded":
            refunds[payment.id] = max(refunds.get(payment.id, 0), parsed.amount_refunded)
    for payment_id, cents in refunds.items():
        payment = system.payments.payment(payment_id)
        if payment.facts.refunded != cents * MICROS_PER_CENT:
            drift.append(_row("refunds-differ", payment, f"stripe {cents} cents"))
    return drift


def _credited_not_paid(
    system: System, payment_ids: list[UUID], session_of: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Our credited payments (those an event since then touched) Stripe does not show paid."""
    rows = []
    for payment_id in payment_ids:
        payment = _payment(system, payment_id, None)
        if payment is None or not payment.facts.credited:
            continue
        session = session_of(payment.session_id or "")
        if session.get("payment_status") != "paid":
            rows.append(_row("credited-not-paid", payment, f"session {payment.session_id}"))
    return rows


def _paid(event: dict[str, Any]) -> bool:
    obj = (event.get("data") or {}).get("object") or {}
    return event.get("type") == PAID[1] or obj.get("payment_status") == "paid"


def _payment(system: System, payment_id: UUID | None, intent: str | None) -> Payment | None:
    if payment_id is None and intent:
        index = system.payments.find_index(intent)
        payment_id = index.payment_id if index is not None else None
    if payment_id is None:
        return None
    try:
        return system.payments.payment(payment_id)
    except NotFoundError:
        return None


def _row(kind: str, payment: Payment, detail: str) -> dict[str, Any]:
    return {
        "drift": kind, "payment_id": str(payment.id), "tenant_id": str(payment.tenant_id),
        "state": payment.state, "credited": payment.facts.credited, "detail": detail,
    }  # fmt: skip
