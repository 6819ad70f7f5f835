"""A tenant with an open payment, and Stripe events made the way Stripe makes them: what the
payments tests share. Events are signed with the library's own
``WebhookSignature.generate_signature_header``; instants come from the real clock."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from stripe import WebhookSignature

from domain.errors import NotFoundError
from domain.payment import MICROS_PER_CENT
from infra.bootstrap import System
from infra.settings import Settings

SECRET, OLD_SECRET = "whsec_current", "whsec_previous"
CENTS = 2_000  # a $20 top-up


def payment_settings(database_url: str, schema: str, **more: Any) -> Settings:
    return Settings(
        DATABASE_URL=database_url, GPUCLOUD_DB_SCHEMA=schema,
        GPUCLOUD_STRIPE_WEBHOOK_SECRETS=f"{SECRET},{OLD_SECRET}",
        GPUCLOUD_AUTH_FAILURE_BURST=100_000, **more,
    )  # fmt: skip


@dataclass
class Paying:
    """A tenant and one of its payments, with its Checkout Session attached."""

    system: System
    tenant: UUID
    payment: UUID
    session: str

    def balance(self) -> int:
        """The tenant's posted balance (0 while no money ever moved)."""
        try:
            return self.system.ledgers.balances(self.tenant).posted
        except NotFoundError:
            return 0

    def completed(self, paid: bool = True, **extra: Any) -> dict[str, Any]:
        return self.event("checkout.session.completed", self.session_object(paid), **extra)

    def session_object(self, paid: bool = True) -> dict[str, Any]:
        return {
            "id": self.session, "object": "checkout.session", "amount_total": CENTS,
            "currency": "usd", "payment_status": "paid" if paid else "unpaid",
            "status": "complete", "payment_intent": f"pi_{self.session}",
            "client_reference_id": str(self.payment),
            "metadata": {"tenant_id": str(self.tenant), "payment_id": str(self.payment)},
        }  # fmt: skip

    def refunded(self, cumulative_cents: int, **extra: Any) -> dict[str, Any]:
        charge = {
            "id": f"ch_{self.session}", "object": "charge", "amount": CENTS,
            "amount_refunded": cumulative_cents, "payment_intent": f"pi_{self.session}",
            "metadata": {},  # as Stripe may send it: only the intent names the payment
        }  # fmt: skip
        return self.event("charge.refunded", charge, **extra)

    def dispute(self, kind: str, status: str = "needs_response") -> dict[str, Any]:
        obj = {
            "id": f"dp_{self.session}", "object": "dispute", "amount": CENTS, "status": status,
            "charge": f"ch_{self.session}", "payment_intent": f"pi_{self.session}",
        }  # fmt: skip
        return self.event(f"charge.dispute.{kind}", obj)

    @staticmethod
    def event(kind: str, obj: dict[str, Any], livemode: bool = False) -> dict[str, Any]:
        return {
            "id": f"evt_{secrets.token_hex(8)}", "object": "event", "type": kind,
            "created": int(time.time()), "livemode": livemode, "data": {"object": obj},
        }  # fmt: skip


def open_payment(system: System, cents: int = CENTS) -> Paying:
    now = system.clock()
    tenant = system.identity.create_tenant(f"payer-{secrets.token_hex(3)}", None, now).tenant.id
    written = system.payments.checkout(tenant, "top-up-1", cents * MICROS_PER_CENT, now)
    session = f"cs_test_{secrets.token_hex(6)}"
    system.payments.attach_session(written.id, session, f"https://pay/{session}", now, now)
    return Paying(system, tenant, written.id, session)


def signed(event: dict[str, Any], secret: str = SECRET, at: int | None = None) -> tuple[bytes, str]:
    """The body and its ``Stripe-Signature`` header, as Stripe sends them."""
    body = json.dumps(event)
    return body.encode(), WebhookSignature.generate_signature_header(body, secret, at)
