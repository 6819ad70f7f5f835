"""HTTP shapes of payments. Money is integer micro-dollars: a string of digits in requests
(no client rounds it through a float), an integer in answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from domain.payment import STATES, Payment
from gateways.http.models.common import Strict

State = Literal[STATES]  # type: ignore[valid-type]


class TopUp(Strict):
    amount: str = Field(
        pattern=r"^[1-9][0-9]{0,12}$",
        description="integer micro-dollars as a string: a whole number of cents, between "
        "GPUCLOUD_TOPUP_MIN and GPUCLOUD_TOPUP_MAX ($5 and $10,000 by default)",
        examples=["20000000"],
    )


class PaymentOut(BaseModel):
    id: UUID
    tenant_id: UUID
    state: State = Field(description="open, paid, credited, expired, failed, refunded, ...")
    amount: int = Field(description="requested, integer micro-dollars")
    paid: int
    credited: int
    refunded: int
    withdrawn: int = Field(description="taken back by a dispute, net of funds reinstated")
    checkout_url: str | None = Field(description="where the payer pays (Stripe Checkout)")
    expires_at: datetime | None = Field(description="when the checkout page stops accepting")
    session_id: str | None = Field(description="the Stripe Checkout Session")
    payment_intent: str | None = Field(description="the Stripe PaymentIntent, once paid")
    created_at: datetime

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        facts = payment.facts
        return cls(
            id=payment.id, tenant_id=payment.tenant_id, state=facts.state, amount=payment.amount,
            paid=facts.paid, credited=facts.credited, refunded=facts.refunded,
            withdrawn=facts.withdrawn, checkout_url=payment.checkout_url,
            expires_at=payment.expires_at, session_id=payment.session_id,
            payment_intent=facts.payment_intent, created_at=payment.opened_at,
        )  # fmt: skip


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None


class WebhookAck(BaseModel):
    received: bool = True
    duplicate: bool = Field(description="this event id was stored before (a redelivery)")
