"""The payments context: top-ups through a payment provider's checkout, and what its webhook
events do to the payment and the ledger.

- ``checkout`` records the `Payment` (its id derived from the tenant's key, so a retry finds
  it); ``attach_session`` records the provider's Checkout Session made for it.
- ``apply`` decides on one verified provider event (a `ProviderEvent`, parsed at the edge):
  the payment's change and the ledger postings it calls for (credit, claw-back) are saved in
  ONE transaction, and the event id is recorded in that change, so a redelivery decides
  nothing. It answers what happened: applied, ignored (with why), or deferred (a charge or
  dispute whose payment is not known yet: the process manager tries again later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import NotFoundError, ValidationFailedError
from domain.ledger import Ledger
from domain.ledger_hash import ledger_id_of
from domain.payment import Effect, Payment, PaymentIntentIndex
from handlers.base import ContextApplication, Written, id_for_key, request_hash, same_request
from handlers.unit_of_work import AtomicSave, Session, UnitOfWork

SESSION_EVENTS = (
    "checkout.session.completed", "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed", "checkout.session.expired",
)  # fmt: skip
DISPUTE_EVENTS = (
    "charge.dispute.created", "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated", "charge.dispute.closed",
)  # fmt: skip
HANDLED = (*SESSION_EVENTS, "charge.refunded", *DISPUTE_EVENTS)


@dataclass(frozen=True)
class ProviderEvent:
    """What the edge read off one verified provider event; amounts in cents."""

    id: str
    type: str
    payment_id: UUID | None = None  # from the metadata we gave the session
    tenant_id: UUID | None = None
    session_id: str | None = None
    payment_status: str | None = None
    amount_total: int = 0
    payment_intent: str | None = None
    amount_refunded: int = 0
    dispute_status: str | None = None  # open, won, lost (closed with another status: None)
    dispute_amount: int = 0


@dataclass(frozen=True)
class Outcome:
    """``applied``, ``ignored`` or ``deferred``, and why (a metric label)."""

    result: str
    reason: str = ""
    payment_id: UUID | None = None


class _NotMine(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Payments(ContextApplication):
    """The payments context's application: one notification log, relayed to billing.*."""

    name = "payments"

    def bind(self, ledgers: ContextApplication, save: AtomicSave) -> None:
        self.ledgers, self.uow = ledgers, UnitOfWork(save)

    def checkout(self, tenant_id: UUID, key: str, amount: int, now: datetime) -> Written:
        """Record a top-up of ``amount`` micro-dollars under the tenant's key."""
        digest = request_hash(amount=amount)
        payment_id = id_for_key(f"payment:{tenant_id}", key)
        existing = self.find(Payment, payment_id)
        if existing is not None:
            return same_request(existing, digest)
        payment = Payment.open(payment_id, tenant_id, amount, digest, now)
        try:
            self.save(payment)
        except IntegrityError:  # a concurrent request with this key won: answer with it
            return same_request(self.get(Payment, payment_id), digest)
        return Written(payment.id, payment.version, created=True)

    def attach_session(
        self, payment_id: UUID, session_id: str, url: str, expires_at: datetime, now: datetime
    ) -> Payment:
        def attach(session: Session) -> Payment:
            payment = session.get(self, Payment, payment_id)
            payment.attach_session(session_id, url, expires_at, now)
            return payment

        return self.uow.run(attach)

    def payment(self, payment_id: UUID, tenant_id: UUID | None = None) -> Payment:
        """A payment, 404 when it is another tenant's (``tenant_id`` given)."""
        payment = self.find(Payment, payment_id)
        if payment is None or (tenant_id is not None and payment.tenant_id != tenant_id):
            raise NotFoundError(f"payment {payment_id} not found")
        return payment

    def find_index(self, payment_intent: str) -> PaymentIntentIndex | None:
        """Which payment a PaymentIntent belongs to, once its completion was applied."""
        return self.find(PaymentIntentIndex, Payment.intent_id(payment_intent))

    def apply(self, event: ProviderEvent, now: datetime) -> Outcome:
        if event.type not in HANDLED:
            return Outcome("ignored", "unknown-type")
        try:
            return self.uow.run(lambda session: self._apply(session, event, now))
        except _NotMine as not_mine:
            return not_mine.outcome

    def _apply(self, session: Session, event: ProviderEvent, now: datetime) -> Outcome:
        payment = self._payment_of(session, event)
        effects = self._decide(payment, event, now)
        intent = payment.facts.payment_intent
        if intent and session.find(self, PaymentIntentIndex, Payment.intent_id(intent)) is None:
            session.add(self, PaymentIntentIndex.of(payment.tenant_id, intent, payment.id))
        if effects:
            self._post(session, payment.tenant_id, effects, now)
        return Outcome("applied", event.type, payment.id)

    def _payment_of(self, session: Session, event: ProviderEvent) -> Payment:
        payment_id = event.payment_id
        if payment_id is None and event.payment_intent:
            index = session.find(self, PaymentIntentIndex, Payment.intent_id(event.payment_intent))
            payment_id = index.payment_id if index is not None else None
        if payment_id is None:  # a session names its payment; a charge may come first
            early = event.type not in SESSION_EVENTS
            raise _NotMine(
                Outcome("deferred", "unmatched") if early else Outcome("ignored", "no-payment")
            )
        payment = session.find(self, Payment, payment_id)
        if payment is None:
            raise _NotMine(Outcome("ignored", "unknown-payment"))
        if event.tenant_id is not None and event.tenant_id != payment.tenant_id:
            raise _NotMine(Outcome("ignored", "tenant-mismatch"))
        if event.session_id and payment.session_id not in (None, event.session_id):
            raise _NotMine(Outcome("ignored", "session-mismatch"))
        return payment

    def _decide(self, payment: Payment, event: ProviderEvent, now: datetime) -> list[Effect]:
        kind = event.type
        if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            paid = kind.endswith("succeeded") or event.payment_status == "paid"
            return payment.complete(
                event.id, kind, paid, event.amount_total, event.payment_intent, now
            )
        if kind in ("checkout.session.async_payment_failed", "checkout.session.expired"):
            why = "expired" if kind.endswith("expired") else "failed"
            return payment.close(event.id, kind, why, now)
        if kind == "charge.refunded":
            return payment.note_refunds(event.id, kind, event.amount_refunded, now)
        withdrawn = {
            "charge.dispute.funds_withdrawn": event.dispute_amount,
            "charge.dispute.funds_reinstated": 0,
        }.get(kind)
        return payment.note_dispute(event.id, kind, event.dispute_status, withdrawn, now)

    def _post(
        self, session: Session, tenant_id: UUID, effects: list[Effect], now: datetime
    ) -> None:
        ledger = session.find(self.ledgers, Ledger, ledger_id_of(tenant_id))
        if ledger is None:  # a first top-up opens the ledger, in the same transaction
            ledger = session.add(self.ledgers, Ledger.open(tenant_id, now))
        for effect in effects:
            if effect.kind == "credit":
                ledger.credit(effect.key, effect.amount, now, "payment")
            elif effect.kind == "claw_back":
                ledger.claw_back(effect.key, effect.amount, effect.reason, now)
            else:
                raise ValidationFailedError(f"unknown ledger effect {effect.kind!r}")
