"""Wire contract of the payments context, on ``billing.payment.v1`` (key = the payment id).

A payment is opened, gets its Checkout Session, then changes once per provider event it
applies; ``changed`` carries the whole new set of facts and the state they give (amounts in
integer micro-dollars), so a consumer keeps no rules of its own. ``intent_linked`` maps a
provider PaymentIntent to its payment (keyed by the index entry's id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from domain.payment import STATES, Payment, PaymentIntentIndex
from infra.messages import names as n
from infra.messages.wire import WireEvent, WireModel, published

Amount = Field(ge=0, le=10**15, description="integer micro-dollars (1e-6 USD)")
State = Literal[STATES]  # type: ignore[valid-type]


class PaymentOpenedV1(WireModel):
    model_config = ConfigDict(title="PaymentOpened")
    schema_version: Literal[1] = 1
    payment_id: UUID
    tenant_id: UUID
    amount: int = Amount
    at: datetime


class PaymentSessionCreatedV1(WireModel):
    model_config = ConfigDict(title="PaymentSessionCreated")
    schema_version: Literal[1] = 1
    payment_id: UUID
    tenant_id: UUID
    session_id: str = Field(max_length=255)
    checkout_url: str = Field(max_length=2048)
    expires_at: datetime
    at: datetime


class PaymentChangedV1(WireModel):
    """A provider event applied (``event_id``, ``stripe_type``) and the facts after it."""

    model_config = ConfigDict(title="PaymentChanged")
    schema_version: Literal[1] = 1
    payment_id: UUID
    tenant_id: UUID
    event_id: str = Field(max_length=255)
    stripe_type: str = Field(max_length=255)
    state: State
    paid: int = Amount
    credited: int = Amount
    refunded: int = Amount
    withdrawn: int = Amount
    clawed: int = Field(ge=-(10**15), le=10**15, description="clawed back, net of reinstated")
    payment_intent: str | None
    closed: Literal["expired", "failed"] | None
    dispute: Literal["open", "won", "lost"] | None
    at: datetime


class PaymentIntentLinkedV1(WireModel):
    model_config = ConfigDict(title="PaymentIntentLinked")
    schema_version: Literal[1] = 1
    index_id: UUID
    tenant_id: UUID
    payment_intent: str = Field(max_length=255)
    payment_id: UUID
    at: datetime


def _on(ce_type: str, model: type[WireModel], id_field: str = "payment_id") -> WireEvent:
    return published(ce_type, n.PAYMENT_TOPIC, model, id_field, lambda e: e.tenant_id, "at")


_payment: Any = Payment
_index: Any = PaymentIntentIndex
PAYMENTS_WIRE: dict[type[Any], WireEvent] = {
    _payment.Opened: _on(n.PAYMENT_OPENED, PaymentOpenedV1),
    _payment.SessionCreated: _on(n.PAYMENT_SESSION_CREATED, PaymentSessionCreatedV1),
    _payment.Changed: _on(n.PAYMENT_CHANGED, PaymentChangedV1),
    _index.Created: _on(n.PAYMENT_INTENT_LINKED, PaymentIntentLinkedV1, "index_id"),
}
