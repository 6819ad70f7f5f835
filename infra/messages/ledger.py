"""Wire contract of the ledger context: every ledger event, with its hash chain, on one topic.

Postings of every kind share one payload shape (both legs, the amount in integer
micro-dollars, the idempotency key, the chain hashes), so a consumer can sum them without a
case per kind; what only some kinds carry (a hold, a reason, a remainder) is optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain import ledger_events as ev
from domain.ledger import Ledger
from infra.messages import names as n
from infra.messages.names import LEDGER_TOPIC
from infra.messages.wire import WireEvent, WireModel, published

Hash = Field(pattern="^[0-9a-f]{64}$")
Amount = Field(ge=0, le=10**15, description="integer micro-dollars (1e-6 USD)")
Signed = Field(ge=-(10**15), le=10**15, description="integer micro-dollars, signed")


class LedgerOpenedV1(WireModel):
    model_config = ConfigDict(title="LedgerOpened")
    schema_version: Literal[1] = 1
    ledger_id: UUID
    tenant_id: UUID
    floor: int = Signed
    at: datetime


class Chain(WireModel):
    schema_version: Literal[1] = 1
    ledger_id: UUID
    tenant_id: UUID
    at: datetime
    prev_hash: str = Hash
    hash: str = Hash


class LedgerPostingV1(Chain):
    """Both legs of one posting; ce_type names the kind (credited, debited, hold_placed...)."""

    model_config = ConfigDict(title="LedgerPosting")
    kind: Literal[
        "credit", "debit", "refund", "adjust", "clawback", "hold", "capture", "void", "expire"
    ]
    key: str = Field(min_length=1, max_length=255)
    debit_account: str
    credit_account: str
    amount: int = Amount
    hold_id: str | None = None
    expires_at: datetime | None = None
    released: int | None = Field(default=None, ge=0)
    remainder: int | None = Field(default=None, ge=0)
    reason: str | None = None


class LedgerRefusalV1(Chain):
    """A posting that was refused (reason: insufficient-funds, hold-not-open, ...) or, for a
    debit_up_to, a shortfall that found nothing above the floor (remainder unpaid)."""

    model_config = ConfigDict(title="LedgerRefusal")
    key: str
    kind: str
    reason: str | None = None
    detail: str | None = None
    remainder: int | None = Field(default=None, ge=0)


class LedgerBalanceV1(Chain):
    """The available balance crossed the floor: down (depleted) or back up (restored)."""

    model_config = ConfigDict(title="LedgerBalance")
    available: int = Signed
    floor: int = Signed


def _on(ce_type: str, model: type[WireModel], time_field: str | None = None) -> WireEvent:
    return published(ce_type, LEDGER_TOPIC, model, "ledger_id", lambda e: e.tenant_id, time_field)


_ledger: Any = Ledger
LEDGER_WIRE: dict[type[Any], WireEvent] = {
    _ledger.Opened: _on(n.LEDGER_OPENED, LedgerOpenedV1, "at"),
    ev.Credited: _on(n.LEDGER_CREDITED, LedgerPostingV1),
    ev.Debited: _on(n.LEDGER_DEBITED, LedgerPostingV1),
    ev.Refunded: _on(n.LEDGER_REFUNDED, LedgerPostingV1),
    ev.Adjusted: _on(n.LEDGER_ADJUSTED, LedgerPostingV1),
    ev.ClawedBack: _on(n.LEDGER_CLAWED_BACK, LedgerPostingV1),
    ev.HoldPlaced: _on(n.LEDGER_HOLD_PLACED, LedgerPostingV1),
    ev.HoldCaptured: _on(n.LEDGER_HOLD_CAPTURED, LedgerPostingV1),
    ev.HoldVoided: _on(n.LEDGER_HOLD_VOIDED, LedgerPostingV1),
    ev.HoldExpired: _on(n.LEDGER_HOLD_EXPIRED, LedgerPostingV1),
    ev.DebitShortfall: _on(n.LEDGER_DEBIT_SHORTFALL, LedgerRefusalV1),
    ev.PostingRejected: _on(n.LEDGER_POSTING_REJECTED, LedgerRefusalV1),
    ev.BalanceDepleted: _on(n.LEDGER_BALANCE_DEPLETED, LedgerBalanceV1),
    ev.BalanceRestored: _on(n.LEDGER_BALANCE_RESTORED, LedgerBalanceV1),
}
