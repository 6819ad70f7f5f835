"""Stripe, through the official library: Checkout Sessions out, signed webhook events in.

- `StripeCheckout` creates and retrieves Checkout Sessions and lists events with a
  ``StripeClient`` pointed at ``GPUCLOUD_STRIPE_API_BASE`` (Stripe's own by default, the
  project's stand-in on the embedded stack), over the library's HTTPX client. A session's
  Stripe idempotency key is derived from the payment id, so a retry never makes a second one.
- `verify` checks ``Stripe-Signature`` over the raw bytes with the library
  (``WebhookSignature.verify_header``) against every configured secret (rotation), then the
  timestamp against the system's clock both ways: the library checks only the past.
- `provider_event` reads what the payments handler needs off a verified event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from stripe import (
    APIConnectionError,
    HTTPXClient,
    SignatureVerificationError,
    StripeClient,
    StripeError,
    WebhookSignature,
)

from domain.payment import MICROS_PER_CENT
from handlers.payments import ProviderEvent
from infra.bootstrap import System
from infra.settings import Settings

TOLERANCE_SECONDS = 300


class PaymentProviderError(Exception):
    """Stripe could not be reached, or refused the call (a key or setting is wrong)."""


class WebhookRefusedError(ValueError):
    """The body is not a Stripe event signed with one of our secrets, within the tolerance."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    expires_at: datetime


class StripeCheckout:
    """The calls the payments context makes to Stripe (blocking: run them in a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = StripeClient(
            settings.stripe_secret_key or "",
            base_addresses={"api": settings.stripe_api_base},
            http_client=HTTPXClient(timeout=settings.stripe_timeout, allow_sync_methods=True),
            max_network_retries=0,  # the client retries with the same Idempotency-Key
        )

    def create_session(self, payment_id: UUID, tenant_id: UUID, amount: int) -> CheckoutSession:
        """A Checkout Session for ``amount`` micro-dollars (a whole number of cents)."""
        public = self.settings.public_url.rstrip("/")
        metadata = {"tenant_id": str(tenant_id), "payment_id": str(payment_id)}
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": str(payment_id),
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": amount // MICROS_PER_CENT,
                    "product_data": {"name": "gpucloud prepaid credit"},
                },
            }],
            "success_url": f"{public}/v1/payments/{payment_id}?checkout=success",
            "cancel_url": f"{public}/v1/payments/{payment_id}?checkout=cancel",
        }  # fmt: skip
        options: Any = {"idempotency_key": f"gpucloud-checkout-{payment_id}"}
        try:
            session = self.client.v1.checkout.sessions.create(params=params, options=options)  # type: ignore[arg-type]
        except APIConnectionError as down:
            raise PaymentProviderError("Stripe could not be reached") from down
        except StripeError as refused:
            raise PaymentProviderError(f"Stripe refused the checkout: {refused}") from refused
        expires = datetime.fromtimestamp(int(session.expires_at), UTC)
        return CheckoutSession(str(session.id), str(session.url), expires)

    def retrieve_session(self, session_id: str) -> dict[str, Any]:
        session = self.client.v1.checkout.sessions.retrieve(session_id)
        return dict(json.loads(str(session)))

    def events_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        """Every event created at or after ``since``, newest first, page by page."""
        params: dict[str, Any] = {"limit": 100, "created": {"gte": int(since.timestamp())}}
        while True:
            page = self.client.v1.events.list(params=params)  # type: ignore[arg-type]
            events = [dict(json.loads(str(e))) for e in page.data]
            yield from events
            if not page.has_more or not events:
                return
            params = {**params, "starting_after": events[-1]["id"]}


def checkout_of(system: System) -> StripeCheckout:
    """The system's Stripe client, made on first use."""
    if not system.settings.stripe_secret_key:
        raise PaymentProviderError("payments are not set up here (GPUCLOUD_STRIPE_SECRET_KEY)")
    made = system.extra.get("stripe")
    if not isinstance(made, StripeCheckout):
        made = system.extra["stripe"] = StripeCheckout(system.settings)
    return made


def verify(raw: bytes, header: str | None, secrets: list[str], now: datetime) -> dict[str, Any]:
    """The event, if ``header`` signs ``raw`` with one of ``secrets`` within 300 s of ``now``
    (either side); else `WebhookRefusedError` saying why."""
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise WebhookRefusedError("the body is not UTF-8") from bad
    if not header:
        raise WebhookRefusedError("no Stripe-Signature header")
    if not any(_signed(payload, header, secret) for secret in secrets):
        raise WebhookRefusedError("no signature matches a configured webhook secret")
    skew = now.timestamp() - _timestamp(header)
    if abs(skew) > TOLERANCE_SECONDS:
        side = "old" if skew > 0 else "in the future"
        raise WebhookRefusedError(f"the signature is {abs(int(skew))} s {side} (limit 300 s)")
    try:
        event = json.loads(payload)
    except ValueError as bad:
        raise WebhookRefusedError("the body is not JSON") from bad
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise WebhookRefusedError("the body is not a Stripe event")
    return event


def _signed(payload: str, header: str, secret: str) -> bool:
    try:
        return bool(WebhookSignature.verify_header(payload, header, secret, tolerance=None))
    except SignatureVerificationError:
        return False


def _timestamp(header: str) -> int:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            return int(value)
    raise WebhookRefusedError("the Stripe-Signature header has no timestamp")


def provider_event(event: dict[str, Any]) -> ProviderEvent:
    """What the payments handler needs of one Stripe event (amounts in cents)."""
    obj: dict[str, Any] = (event.get("data") or {}).get("object") or {}
    kind = str(event.get("type", ""))
    metadata = obj.get("metadata") or {}
    fields: dict[str, Any] = {
        "id": str(event["id"]),
        "type": kind,
        "payment_id": _uuid(metadata.get("payment_id") or obj.get("client_reference_id")),
        "tenant_id": _uuid(metadata.get("tenant_id")),
        "payment_intent": _text(obj.get("payment_intent")),
    }
    if kind.startswith("checkout.session."):
        fields.update(
            session_id=_text(obj.get("id")), payment_status=_text(obj.get("payment_status")),
            amount_total=_cents(obj.get("amount_total")),
        )  # fmt: skip
    elif kind == "charge.refunded":
        fields.update(amount_refunded=_cents(obj.get("amount_refunded")))
    elif kind.startswith("charge.dispute."):
        fields.update(dispute_status=_dispute(kind, obj), dispute_amount=_cents(obj.get("amount")))
    return ProviderEvent(**fields)


def _dispute(kind: str, obj: dict[str, Any]) -> str:
    if kind != "charge.dispute.closed":
        return "open"
    return "lost" if obj.get("status") == "lost" else "won"  # warning_closed: nothing lost


def _uuid(value: object) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _text(value: object) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _cents(value: object) -> int:
    return value if type(value) is int and 0 <= value <= 10**12 else 0
