"""HTTP routes of payments: a top-up through Stripe Checkout, the tenant's payments, and the
Stripe webhook.

The checkout records the payment (its id from the Idempotency-Key) and creates its Checkout
Session with a Stripe idempotency key derived from the payment id, so a retry of the same key,
even after Stripe could not be reached, finishes the same payment with one session. The
webhook verifies the signature over the raw bytes, stores the event in the inbox and answers;
the payments process manager (workers/payments.py) applies it. Credit never comes from the
success redirect: only from a verified ``checkout.session.completed`` (or
``async_payment_succeeded``).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import APIKeyHeader

from domain.errors import IdempotencyKeyReusedError, NotFoundError, ValidationFailedError
from domain.identity import Principal
from domain.payment import MICROS_PER_CENT, Payment
from gateways.http.auth import Guard, own_tenant, readable_tenant, system_of
from gateways.http.models.payments import PaymentOut, PaymentPage, TopUp, WebhookAck
from gateways.http.plumbing import (
    Cursor,
    Direction,
    Limit,
    PositionToken,
    RequiredIdempotencyKey,
    Wrote,
    command,
    read_model,
)
from gateways.http.problems import DATABASE_UNAVAILABLE, ProblemError
from gateways.http.responses import raises
from handlers.base import Written
from infra import metrics
from infra import stripe_inbox as inbox
from infra.bootstrap import System
from infra.stripe_api import PaymentProviderError, WebhookRefusedError, checkout_of, verify
from projections import payments as read
from projections.pagination import DEFAULT_LIMIT, ListSpec, PageRequest, fetch_page

router = APIRouter(prefix="/v1")
Payers = Annotated[Principal, Depends(Guard("owner", "billing"))]
Readers = Annotated[Principal, Depends(Guard("owner", "billing", "auditor", "ops"))]
PROVIDER_DOWN = (503, "payment-provider-unavailable")
BAD_SIGNATURE = (400, "invalid-signature")
PAYMENTS = ListSpec("payments", read.COLUMNS, ("created_at",))
STRIPE_SIGNATURE = APIKeyHeader(
    name="Stripe-Signature",
    scheme_name="stripeSignature",
    description="Stripe's HMAC-SHA256 signature of the raw body (no API key: this is the "
    "authentication); a missing or bad one is a 400 invalid-signature problem",
    auto_error=False,
)


def _amount(system: System, body: TopUp) -> int:
    amount, s = int(body.amount), system.settings
    if amount % MICROS_PER_CENT or not s.topup_min <= amount <= s.topup_max:
        raise ValidationFailedError(
            f"amount must be a whole number of cents from {s.topup_min} to {s.topup_max} "
            "micro-dollars"
        )
    return amount


def _checkout(s: System, tenant: UUID, key: str, amount: int) -> tuple[Written, Payment]:
    """Record the payment, then (if it has none yet) its Checkout Session."""
    written = s.payments.checkout(tenant, key, amount, s.clock())
    payment = s.payments.payment(written.id)
    if payment.session_id is None:
        made = checkout_of(s).create_session(payment.id, tenant, payment.amount)
        payment = s.payments.attach_session(
            payment.id, made.id, made.url, made.expires_at, s.clock()
        )
    return written, payment


@router.post(
    "/payments/checkout",
    status_code=201,
    response_model=PaymentOut,
    operation_id="createCheckout",
    responses=raises(ValidationFailedError, IdempotencyKeyReusedError, PROVIDER_DOWN),
)
async def checkout(
    body: TopUp,
    request: Request,
    response: Response,
    caller: Payers,
    idempotency_key: RequiredIdempotencyKey,
) -> PaymentOut:
    """Start a top-up: pay at ``checkout_url``; the credit follows Stripe's webhook."""
    tenant, amount = own_tenant(caller), _amount(system_of(request), body)
    try:
        return await command(
            request, response, caller, "payment.checkout",
            lambda s: _checkout(s, tenant, idempotency_key, amount),
            lambda s, done: PaymentOut.of(done[1]),
            lambda done: Wrote(
                f"/v1/payments/{done[1].id}", read.PAYMENTS.name, done[1].id, done[1].version
            ),
            created=lambda done: done[0].created,
        )  # fmt: skip
    except PaymentProviderError as down:
        raise ProblemError(
            *PROVIDER_DOWN, f"{down}; retry with the same Idempotency-Key", {"Retry-After": "5"}
        ) from down


@router.get(
    "/payments",
    response_model=PaymentPage,
    operation_id="listPayments",
    responses=raises(NotFoundError),
)
async def list_payments(
    request: Request,
    caller: Readers,
    tenant_id: Annotated[UUID | None, Query(description="ops only: whose payments")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    direction: Direction = "desc",
    position: PositionToken = None,
) -> PaymentPage:
    page = PageRequest(readable_tenant(caller, tenant_id), {}, None, direction, limit, cursor)
    async with read_model(request, position) as conn:
        found = await fetch_page(conn, PAYMENTS, page)
    return PaymentPage(items=[PaymentOut(**i) for i in found.items], next_cursor=found.next_cursor)


@router.get(
    "/payments/{payment_id:uuid}",  # typed: /payments/checkout is not a payment's path
    response_model=PaymentOut,
    operation_id="getPayment",
    responses=raises(NotFoundError),
)
async def get_payment(
    payment_id: UUID, request: Request, caller: Readers, position: PositionToken = None
) -> PaymentOut:
    async with read_model(request, position) as conn:
        row = await read.payment(conn, payment_id, readable_tenant(caller))
    if row is None:
        raise NotFoundError(f"payment {payment_id} not found")
    return PaymentOut(**row)


@router.post(
    "/webhooks/stripe",
    response_model=WebhookAck,
    operation_id="receiveStripeWebhook",
    responses=raises(BAD_SIGNATURE, DATABASE_UNAVAILABLE),
)
async def stripe_webhook(
    request: Request, stripe_signature: Annotated[str | None, Security(STRIPE_SIGNATURE)] = None
) -> WebhookAck:
    """Stripe's events (no API key: the signature is the authentication). A verified event is
    stored, then applied by the payments process manager; a bad signature changes nothing."""
    s = system_of(request)
    try:
        event = verify(
            await request.body(), stripe_signature, s.settings.webhook_secrets, s.clock()
        )
    except WebhookRefusedError as refused:
        metrics.STRIPE_WEBHOOKS.labels("refused").inc()
        raise ProblemError(*BAD_SIGNATURE, str(refused)) from refused
    async with s.pool.connection() as conn:
        new = await inbox.store(conn, event, s.clock())
    metrics.STRIPE_WEBHOOKS.labels("stored" if new else "duplicate").inc()
    return WebhookAck(duplicate=not new)
