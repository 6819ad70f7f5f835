"""Checkout through the API and the Stripe stand-in, and what `gpucloud payments reconcile`
finds: a completion whose webhook was dropped is applied through the same path; a credit Stripe
does not show as paid is reported as drift and the command exits 1. The payer's success redirect
credits nothing: only the verified webhook does."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest

from domain.errors import NotFoundError
from infra.bootstrap import System, build_system
from infra.embedded import free_port
from infra.settings import Settings
from infra.stripe_standin import StandInOptions, StripeStandIn
from tests.integration.payment_world import Paying, signed
from tests.support import api_server
from workers.payment_reconcile import reconcile
from workers.payments import payments_pass

pytestmark = pytest.mark.integration
SECRET = "whsec_standin"


@dataclass
class Shop:
    system: System
    http: httpx.AsyncClient
    stand_in: StripeStandIn
    key: str  # the tenant owner's API key
    tenant: UUID

    async def checkout(self, idempotency_key: str) -> dict[str, object]:
        answer = await self.http.post(
            "/v1/payments/checkout", json={"amount": "5000000"},
            headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": idempotency_key},
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def balance(self) -> int:
        """The tenant's posted balance (0 while no money ever moved)."""
        try:
            return self.system.ledgers.balances(self.tenant).posted
        except NotFoundError:
            return 0


@pytest.fixture
async def shop(database_url: str, schema: str) -> AsyncIterator[Shop]:
    stand_in = StripeStandIn(StandInOptions(webhook_secret=SECRET, retry_seconds=(0.05,)))
    async with stand_in:
        settings = Settings(
            DATABASE_URL=database_url, GPUCLOUD_DB_SCHEMA=schema,
            GPUCLOUD_STRIPE_SECRET_KEY="sk_test_standin", GPUCLOUD_STRIPE_API_BASE=stand_in.url,
            GPUCLOUD_STRIPE_WEBHOOK_SECRETS=SECRET,
        )  # fmt: skip
        system = build_system(settings)
        await system.open()
        opened = system.identity.create_tenant("Shop", None, system.clock())
        assert opened.key is not None
        async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
            stand_in.options.webhook_url = f"{url}/v1/webhooks/stripe"
            yield Shop(system, http, stand_in, opened.key.token, opened.tenant.id)
        await system.close()


async def test_the_success_redirect_credits_nothing_until_the_webhook_is_applied(
    shop: Shop,
) -> None:
    payment = await shop.checkout("topup-1")
    async with httpx.AsyncClient() as browser:
        redirect = await browser.post(f"{payment['checkout_url']}/pay")
    await shop.stand_in.delivered(1)  # stored by the webhook, not applied yet
    payment_id = UUID(str(payment["id"]))

    assert redirect.status_code == 303
    assert redirect.headers["location"].endswith(f"/v1/payments/{payment_id}?checkout=success")
    assert shop.system.payments.payment(payment_id).state == "open" and shop.balance() == 0
    await payments_pass(shop.system)
    assert shop.balance() == 5_000_000


async def test_reconcile_applies_a_dropped_completion_and_reports_a_credit_stripe_never_saw(
    shop: Shop,
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=5)
    dropped = await shop.checkout("topup-dropped")
    shop.stand_in.drop_next(1)
    shop.stand_in.pay(str(dropped["session_id"]))
    forged = await shop.checkout("topup-forged")  # never paid at Stripe...
    paying = Paying(shop.system, shop.tenant, UUID(str(forged["id"])), str(forged["session_id"]))
    body, header = signed(paying.completed(), SECRET)  # ...but a signed completion came
    posted = await shop.http.post(
        "/v1/webhooks/stripe", content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )  # fmt: skip
    assert posted.status_code == 200
    await payments_pass(shop.system)
    assert shop.balance() == 20_000_000  # the forged $20 only: the dropped $5 never arrived

    found = await reconcile(shop.system, since)

    assert found.missed >= 1
    assert shop.system.payments.payment(UUID(str(dropped["id"]))).state == "credited"
    assert [(d["drift"], d["payment_id"]) for d in found.drift] == [
        ("credited-not-paid", str(forged["id"]))
    ]
    cli = await _cli(shop, since)
    assert cli[0] == 1 and json.loads(cli[1])["drift"][0]["drift"] == "credited-not-paid"


async def _cli(shop: Shop, since: datetime) -> tuple[int, str]:
    s = shop.system.settings
    env = {
        **os.environ, "DATABASE_URL": s.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "GPUCLOUD_DB_SCHEMA": s.db_schema,
        "GPUCLOUD_STRIPE_SECRET_KEY": "sk_test_standin",
        "GPUCLOUD_STRIPE_API_BASE": shop.stand_in.url,
    }  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateways.cli", "payments", "reconcile", "--since",
        since.isoformat(), "--json", env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    return child.returncode or 0, out.decode()


async def test_a_checkout_while_stripe_is_down_is_a_503_and_the_same_key_finishes_it_later(
    database_url: str, schema: str
) -> None:
    port = free_port()
    settings = Settings(
        DATABASE_URL=database_url, GPUCLOUD_DB_SCHEMA=schema,
        GPUCLOUD_STRIPE_SECRET_KEY="sk_test_standin",
        GPUCLOUD_STRIPE_API_BASE=f"http://127.0.0.1:{port}", GPUCLOUD_STRIPE_WEBHOOK_SECRETS=SECRET,
    )  # fmt: skip
    system = build_system(settings)
    opened = system.identity.create_tenant("Down", None, system.clock())
    system.close_write_side()
    assert opened.key is not None
    headers = {"Authorization": f"Bearer {opened.key.token}", "Idempotency-Key": "topup-1"}
    body = {"amount": "5000000"}
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        down = await http.post("/v1/payments/checkout", json=body, headers=headers)
        stand_in = StripeStandIn(StandInOptions(webhook_secret=SECRET))
        await stand_in.start(port=port)  # Stripe is back
        try:
            later = await http.post("/v1/payments/checkout", json=body, headers=headers)
            again = await http.post("/v1/payments/checkout", json=body, headers=headers)
        finally:
            await stand_in.stop()

    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert down.json()["type"].endswith("/payment-provider-unavailable")
    assert later.status_code == again.status_code == 201, later.text
    assert later.json()["id"] == again.json()["id"]
    assert later.json()["session_id"] == again.json()["session_id"]
    assert len(stand_in.sessions) == 1
