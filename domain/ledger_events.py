"""The Ledger's events (the aggregate exposes them as ``Ledger.Credited`` and so on).

Each event class has an explicit, stable topic ``gpucloud.ledger.Ledger.<Name>``; the name is
the topic's last segment and the ``event`` of the canonical hash. ``apply`` only assigns.
Every event after ``Opened`` carries ``at`` (the command's ``now``, also the library's
``timestamp``), ``prev_hash`` and ``hash``. ``Chained`` and ``Posting`` are abstract bases:
never recorded.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.ledger_terms import CAPTURED, EXPIRED, VOIDED, Hold, Receipt, Rejection

if TYPE_CHECKING:
    from domain.ledger import Ledger

T = "gpucloud.ledger.Ledger."


class LedgerEvent(Aggregate.Event):
    TOPIC = T + "Event"


class Chained(LedgerEvent):
    """Every event after ``Opened``: when, and the hash chain."""

    TOPIC = T + "Chained"
    tenant_id: UUID  # every event names its tenant, so it can be routed without the stream
    at: datetime
    prev_hash: str
    hash: str

    def apply(self, aggregate: Any) -> None:
        aggregate.last_hash = self.hash
        self.change(aggregate)

    def change(self, ledger: Ledger) -> None:
        """What the event does to the ledger besides moving its chain on."""


class Posting(Chained):
    """Both legs of a posting, under an idempotency key. ``kind`` is the class's KIND."""

    TOPIC = T + "Posting"
    KIND = ""
    key: str
    kind: str
    request_hash: str
    debit_account: str
    credit_account: str
    amount: int

    def change(self, ledger: Ledger) -> None:
        cash, amount = ledger.cash, self.amount
        inflow = amount if self.credit_account == cash else 0
        outflow = amount if self.debit_account == cash else 0
        ledger.posted += inflow - outflow
        self.remember(ledger)

    def remember(self, ledger: Ledger, remainder: int = 0, hold_id: str | None = None) -> None:
        """Keep the receipt a replay of this key returns."""
        answer = (self.kind, self.request_hash, self.originator_version, self.hash, self.amount)
        ledger.outcomes[self.key] = Receipt(ledger.id, self.key, *answer, remainder, hold_id)


class Credited(Posting):
    TOPIC, KIND = T + "Credited", "credit"


class Debited(Posting):
    """A usage debit; ``remainder`` is what ``debit_up_to`` could not take (else 0)."""

    TOPIC, KIND = T + "Debited", "debit"
    remainder: int
    forget: bool = False  # a usage window's charge: its key is not kept (Ledger.charge_usage)

    def remember(self, ledger: Ledger, remainder: int = 0, hold_id: str | None = None) -> None:
        if not self.forget:
            super().remember(ledger, self.remainder)


class Refunded(Posting):
    TOPIC, KIND = T + "Refunded", "refund"


class Adjusted(Posting):
    TOPIC, KIND = T + "Adjusted", "adjust"
    reason: str


class ClawedBack(Posting):
    """Money the payer took back (a refund or a chargeback made at the payment provider):
    tenant cash to payment clearing, and never refused, not even below the floor, because the
    money is gone whether the ledger agrees or not. ``reason`` says which (refund, dispute)."""

    TOPIC, KIND = T + "ClawedBack", "clawback"
    reason: str


class HoldPlaced(Posting):
    """Reserves ``amount``: it leaves available, but no posted money moves."""

    TOPIC, KIND = T + "HoldPlaced", "hold"
    hold_id: str
    expires_at: datetime

    def change(self, ledger: Ledger) -> None:
        ledger.holds[self.hold_id] = Hold(self.hold_id, self.amount, self.expires_at)
        ledger.held += self.amount
        self.remember(ledger, 0, self.hold_id)


class HoldCaptured(Posting):
    """Posts ``amount`` of the hold and releases ``released``, the rest of it."""

    TOPIC, KIND = T + "HoldCaptured", "capture"
    hold_id: str
    released: int

    def change(self, ledger: Ledger) -> None:
        close_hold(ledger, self.hold_id, CAPTURED)
        super().change(ledger)

    def remember(self, ledger: Ledger, remainder: int = 0, hold_id: str | None = None) -> None:
        super().remember(ledger, 0, self.hold_id)


class HoldVoided(Posting):
    """Releases the whole hold (``amount``); nothing is posted."""

    TOPIC, KIND = T + "HoldVoided", "void"
    hold_id: str

    def change(self, ledger: Ledger) -> None:
        close_hold(ledger, self.hold_id, VOIDED)
        self.remember(ledger, 0, self.hold_id)


class HoldExpired(Posting):
    """Releases the whole hold. Its key is ``expire:<hold_id>`` and is not remembered: a hold
    expires once, as its state already says."""

    TOPIC, KIND = T + "HoldExpired", "expire"
    hold_id: str

    def change(self, ledger: Ledger) -> None:
        close_hold(ledger, self.hold_id, EXPIRED)


class DebitShortfall(Chained):
    """A ``debit_up_to`` that found nothing above the floor: all of it remains unpaid."""

    TOPIC = T + "DebitShortfall"
    key: str
    kind: str
    request_hash: str
    remainder: int
    forget: bool = False  # as on Debited

    def change(self, ledger: Ledger) -> None:
        if self.forget:
            return
        answer = (self.kind, self.request_hash, self.originator_version, self.hash, 0)
        ledger.outcomes[self.key] = Receipt(ledger.id, self.key, *answer, self.remainder)


class PostingRejected(Chained):
    """A refused posting; ``reason`` is the problem code (insufficient-funds, ...)."""

    TOPIC = T + "PostingRejected"
    key: str
    kind: str
    request_hash: str
    reason: str
    detail: str

    def change(self, ledger: Ledger) -> None:
        refusal = (self.kind, self.request_hash, self.reason, self.detail)
        ledger.outcomes[self.key] = Rejection(self.key, *refusal)


class BalanceDepleted(Chained):
    TOPIC = T + "BalanceDepleted"
    available: int
    floor: int

    def change(self, ledger: Ledger) -> None:
        ledger.depleted = True


class BalanceRestored(Chained):
    TOPIC = T + "BalanceRestored"
    available: int
    floor: int

    def change(self, ledger: Ledger) -> None:
        ledger.depleted = False


def close_hold(ledger: Ledger, hold_id: str, state: str) -> None:
    hold = ledger.holds[hold_id]
    ledger.holds[hold_id] = replace(hold, state=state)
    ledger.held -= hold.amount
