"""A prepaid top-up: one `Payment` per Checkout Session, and the facts Stripe told us about it.

The payment keeps what the provider said (paid, refunded so far, disputed funds withdrawn) and
what the ledger was given (credited, clawed back), and every decision brings the second in
line with the first:

- credited once, when the session is paid (``checkout.session.completed`` with
  ``payment_status == "paid"``, or ``async_payment_succeeded`` after an unpaid completion);
- clawed back by ``refunded + withdrawn - clawed`` whenever that grows, given back when it
  shrinks (funds reinstated after a dispute), and only once credited: facts that arrive
  before the completion (a refund first, say) are held and posted with the credit.

A decision returns the ledger `Effect`s the handler posts in the same transaction as the
payment's ``Changed`` event, keyed by the Stripe event id; that event records the id, and an
id already applied decides nothing, so a redelivery is a no-op however often it comes.
``Changed`` carries the whole new set of facts and the state they give, so a consumer needs
no rules of its own. Amounts from Stripe are cents; the ledger's are micro-dollars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import ValidationFailedError

T = "gpucloud.payments.Payment."
MICROS_PER_CENT = 10_000
_INTENTS = uuid5(NAMESPACE_URL, "https://gpucloud.dev/payment-intent")

OPEN, PAID, CREDITED, EXPIRED, FAILED = "open", "paid", "credited", "expired", "failed"
REFUNDED, PARTIALLY_REFUNDED = "refunded", "partially_refunded"
DISPUTED, DISPUTE_WON, DISPUTE_LOST = "disputed", "dispute_won", "dispute_lost"
STATES = (
    OPEN, PAID, CREDITED, EXPIRED, FAILED, REFUNDED, PARTIALLY_REFUNDED, DISPUTED, DISPUTE_WON,
    DISPUTE_LOST,
)  # fmt: skip
DISPUTE_STATES = {"open": DISPUTED, "won": DISPUTE_WON, "lost": DISPUTE_LOST}


@dataclass(frozen=True)
class Effect:
    """A ledger posting a decision calls for: ``credit`` or ``claw_back``, in micro-dollars."""

    kind: str
    key: str
    amount: int
    reason: str


@dataclass(frozen=True)
class Facts:
    """What the provider said (paid, refunded, withdrawn, closed, dispute) and what the ledger
    was given (credited, clawed), in micro-dollars."""

    paid: int = 0
    credited: int = 0
    refunded: int = 0
    withdrawn: int = 0
    clawed: int = 0
    payment_intent: str | None = None
    closed: str | None = None  # expired or failed: no credit will come
    dispute: str | None = None  # open, won, lost

    @property
    def state(self) -> str:
        if self.dispute is not None:
            return DISPUTE_STATES[self.dispute]
        if self.credited and self.refunded:
            return REFUNDED if self.refunded >= self.paid else PARTIALLY_REFUNDED
        if self.credited:
            return CREDITED
        if self.paid:
            return PAID
        return self.closed or OPEN

    def settled(self, session_id: str | None, event_id: str) -> tuple[Facts, list[Effect]]:
        """Credit once paid, then claw back (or give back) what was taken back since."""
        facts, effects = self, []
        if facts.paid and not facts.credited:
            key = f"stripe:credit:{session_id}"
            effects.append(Effect("credit", key, facts.paid, "payment"))
            facts = replace(facts, credited=facts.paid)
        if not facts.credited:
            return facts, effects
        owed = min(facts.refunded + facts.withdrawn, facts.credited) - facts.clawed
        why = "dispute" if facts.withdrawn else "refund"
        if owed > 0:
            effects.append(Effect("claw_back", f"stripe:clawback:{event_id}", owed, why))
        elif owed < 0:
            effects.append(Effect("credit", f"stripe:reinstated:{event_id}", -owed, "payment"))
        return replace(facts, clawed=facts.clawed + owed), effects


class Payment(Aggregate):
    TOPIC = "gpucloud.payments.Payment"

    class Event(Aggregate.Event):
        TOPIC = T + "Event"

    @event("Opened", topic=T + "Opened")
    def __init__(
        self, id: UUID, tenant_id: UUID, amount: int, request_hash: str, at: datetime
    ) -> None:
        self.tenant_id, self.amount, self.request_hash = tenant_id, amount, request_hash
        self.opened_at = at
        self.session_id: str | None = None
        self.checkout_url: str | None = None
        self.expires_at: datetime | None = None
        self.facts = Facts()
        self.applied: list[str] = []  # the Stripe event ids decided on

    @classmethod
    def open(
        cls, payment_id: UUID, tenant_id: UUID, amount: int, digest: str, now: datetime
    ) -> Payment:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValidationFailedError("amount must be a positive integer of micro-dollars")
        return cls(payment_id, tenant_id, amount, digest, now)

    @staticmethod
    def intent_id(payment_intent: str) -> UUID:
        """The id of the index entry that maps a PaymentIntent back to its payment."""
        return uuid5(_INTENTS, payment_intent)

    @property
    def state(self) -> str:
        return self.facts.state

    # Decisions: each returns what the ledger must be given

    def attach_session(
        self, session_id: str, url: str, expires_at: datetime, now: datetime
    ) -> None:
        """The Checkout Session made for this payment (the same one again changes nothing)."""
        if self.session_id == session_id:
            return
        if self.session_id is not None:
            raise ValidationFailedError(f"payment {self.id} has session {self.session_id}")
        self._session_created(
            tenant_id=self.tenant_id, session_id=session_id, checkout_url=url,
            expires_at=expires_at, at=now,
        )  # fmt: skip

    def complete(
        self, event_id: str, kind: str, paid: bool, amount_cents: int,
        payment_intent: str | None, now: datetime,
    ) -> list[Effect]:  # fmt: skip
        """``checkout.session.completed`` (paid or not yet) or ``async_payment_succeeded``;
        ignored once closed or paid."""
        facts = self.facts
        if facts.closed is None and not facts.paid:
            cents = amount_cents if paid else 0
            intent = payment_intent or facts.payment_intent
            facts = replace(facts, paid=cents * MICROS_PER_CENT, payment_intent=intent)
        return self._decide(event_id, kind, facts, now)

    def close(self, event_id: str, kind: str, why: str, now: datetime) -> list[Effect]:
        """``expired`` or ``async_payment_failed``: no credit comes (ignored once paid)."""
        facts = self.facts if self.facts.paid else replace(self.facts, closed=why)
        return self._decide(event_id, kind, facts, now)

    def note_refunds(
        self, event_id: str, kind: str, refunded_cents: int, now: datetime
    ) -> list[Effect]:
        """``charge.refunded`` carries Stripe's cumulative total; what is new is clawed back."""
        refunded = max(self.facts.refunded, refunded_cents * MICROS_PER_CENT)
        return self._decide(event_id, kind, replace(self.facts, refunded=refunded), now)

    def note_dispute(
        self, event_id: str, kind: str, status: str | None, withdrawn_cents: int | None,
        now: datetime,
    ) -> list[Effect]:  # fmt: skip
        """A dispute's news: opened (``open``), funds withdrawn or reinstated (the amount now
        withdrawn), or closed (``won`` or ``lost``)."""
        if status is not None and status not in DISPUTE_STATES:
            raise ValidationFailedError(f"unknown dispute status {status!r}")
        facts = replace(self.facts, dispute=status or self.facts.dispute)
        if withdrawn_cents is not None:
            facts = replace(facts, withdrawn=withdrawn_cents * MICROS_PER_CENT)
        return self._decide(event_id, kind, facts, now)

    def _decide(self, event_id: str, kind: str, facts: Facts, now: datetime) -> list[Effect]:
        if event_id in self.applied:
            return []
        facts, effects = facts.settled(self.session_id, event_id)
        self._changed(
            tenant_id=self.tenant_id, event_id=event_id, stripe_type=kind, state=facts.state,
            at=now, **asdict(facts),
        )  # fmt: skip
        return effects

    # Events: they only assign

    @event("SessionCreated", topic=T + "SessionCreated")
    def _session_created(
        self, tenant_id: UUID, session_id: str, checkout_url: str, expires_at: datetime,
        at: datetime,
    ) -> None:  # fmt: skip
        self.session_id, self.checkout_url, self.expires_at = session_id, checkout_url, expires_at

    @event("Changed", topic=T + "Changed")
    def _changed(
        self, tenant_id: UUID, event_id: str, stripe_type: str, state: str, at: datetime,
        paid: int, credited: int, refunded: int, withdrawn: int, clawed: int,
        payment_intent: str | None, closed: str | None, dispute: str | None,
    ) -> None:  # fmt: skip
        self.applied.append(event_id)
        self.facts = Facts(
            paid, credited, refunded, withdrawn, clawed, payment_intent, closed, dispute
        )


class PaymentIntentIndex(Aggregate):
    """Which payment a PaymentIntent belongs to: charges and disputes name the intent, not the
    session. Created with the completion that first names the intent, in the same save."""

    TOPIC = "gpucloud.payments.PaymentIntentIndex"

    class Event(Aggregate.Event):
        TOPIC = "gpucloud.payments.PaymentIntentIndex.Event"

    @event("Created", topic="gpucloud.payments.PaymentIntentIndex.Created")
    def __init__(self, id: UUID, tenant_id: UUID, payment_intent: str, payment_id: UUID) -> None:
        self.tenant_id, self.payment_intent, self.payment_id = tenant_id, payment_intent, payment_id

    @classmethod
    def of(cls, tenant_id: UUID, payment_intent: str, payment_id: UUID) -> PaymentIntentIndex:
        return cls(Payment.intent_id(payment_intent), tenant_id, payment_intent, payment_id)
