"""A top-up through the whole system: HTTP, the Stripe stand-in's checkout page and signed
webhooks, the inbox and the payments process manager, the ledger, billing and force release.
A tenant pays $5, runs an allocation on it, the payment is refunded in full, the credit goes
below zero and the allocation is force-released, billed up to then; the auditor's replay of
the ledger still verifies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from infra.settings import Settings
from infra.stripe_standin import StripeStandIn
from tests.e2e.identity_world import Tenant, bearer, open_tenant
from tests.support import api_server, eventually, roles

pytestmark = pytest.mark.e2e
FIVE_DOLLARS = 5_000_000
SKU = {
    "name": "1x L4", "gpu_model": "L4", "gpus": 1, "vcpus": 4, "ram_gib": 16, "disk_gib": 50,
    "regions": ["eu-west-1"], "price_per_gpu_hour": 3_600_000,
}  # fmt: skip


async def stage(http: httpx.AsyncClient, ops_key: str) -> tuple[Tenant, str]:
    ops = bearer(ops_key)
    payer = await open_tenant(http, ops_key, "Payer")
    sku = (await http.post("/v1/skus", json=SKU, headers=ops)).json()["id"]
    node = {"driver": "local", "region": "eu-west-1", "gpu_model": "L4", "gpu_count": 1}
    node_id = (await http.post("/v1/nodes", json=node, headers=ops)).json()["id"]

    async def placeable() -> bool:
        return (await http.get(f"/v1/nodes/{node_id}", headers=ops)).status_code == 200

    await eventually(placeable)
    return payer, sku


async def pay_on_the_checkout_page(checkout_url: str) -> httpx.Response:
    """What the payer's browser does: open the page, press Pay (a form POST)."""
    async with httpx.AsyncClient() as browser:
        page = await browser.get(checkout_url)
        assert page.status_code == 200 and "$5.00" in page.text, page.text
        return await browser.post(f"{checkout_url}/pay")


def waiter(http: httpx.AsyncClient, path: str, key: str, **wanted: Any) -> Any:
    async def check() -> dict[str, Any] | None:
        answer = await http.get(path, headers=bearer(key))
        got = answer.json() if answer.status_code == 200 else {}
        return got if all(got.get(k) == v for k, v in wanted.items()) else None

    return check


async def test_a_top_up_runs_an_allocation_and_a_refund_force_releases_it(
    settings: Settings, ops_key: str
) -> None:
    async with StripeStandIn() as stand_in:
        s = settings.with_(
            stripe_secret_key="sk_test_standin", stripe_api_base=stand_in.url,
            stripe_webhook_secrets="whsec_standin", worker_interval_seconds=0.3,
            saga_poll_seconds=0.05, payments_poll_seconds=0.05,
        )  # fmt: skip
        async with (
            api_server(s) as url,
            roles(s, "relay", "projector", "worker"),
            httpx.AsyncClient(base_url=url) as http,
        ):
            stand_in.options.webhook_url = f"{url}/v1/webhooks/stripe"
            payer, sku = await stage(http, ops_key)
            owner, billing = payer.keys["owner"], payer.keys["billing"]
            topup = {**bearer(billing), "Idempotency-Key": "topup-1"}
            made = await http.post(
                "/v1/payments/checkout", json={"amount": "5000000"}, headers=topup
            )
            again = await http.post(
                "/v1/payments/checkout", json={"amount": "5000000"}, headers=topup
            )
            assert made.status_code == again.status_code == 201, made.text
            payment = made.json()
            assert again.json()["checkout_url"] == payment["checkout_url"]  # one session
            assert len(stand_in.sessions) == 1

            redirect = await pay_on_the_checkout_page(payment["checkout_url"])
            assert redirect.status_code == 303
            credited = await eventually(
                waiter(http, f"/v1/payments/{payment['id']}", owner, state="credited"), 20
            )
            ledger = await eventually(waiter(http, "/v1/ledger", billing, posted=FIVE_DOLLARS))

            body = {"sku_id": sku, "region": "eu-west-1", "count": 1}
            keyed = {**bearer(owner), "Idempotency-Key": "run-1"}
            admitted = await http.post("/v1/allocations", json=body, headers=keyed)
            assert admitted.status_code == 202, admitted.text
            path = f"/v1/allocations/{admitted.json()['id']}"
            await eventually(waiter(http, path, owner, state="running"), 30)
            billed = await eventually(_billed(http, path, owner), 75)  # a UTC minute closes

            stand_in.refund(credited["payment_intent"])  # the whole $5 back to the payer
            refunded = await eventually(
                waiter(http, f"/v1/payments/{payment['id']}", owner, state="refunded"), 20
            )
            released = await eventually(waiter(http, path, owner, state="released"), 30)
            final = await eventually(waiter(http, "/v1/ledger", billing, depleted=True))

    assert ledger["available"] == FIVE_DOLLARS
    assert (refunded["refunded"], refunded["credited"]) == (FIVE_DOLLARS, FIVE_DOLLARS)
    assert "credit" in (released["release_reason"] or "")
    assert billed["cost_micro"] > 0
    # the claw-back took the whole $5 although part was spent: below zero by what was billed
    assert final["posted"] <= -billed["cost_micro"] < 0


def _billed(http: httpx.AsyncClient, path: str, key: str) -> Any:
    async def check() -> dict[str, Any] | None:
        got = (await http.get(path, headers=bearer(key))).json()
        return got if got["cost_micro"] > 0 else None

    return check
