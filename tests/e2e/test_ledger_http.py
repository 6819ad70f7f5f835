"""The ledger through HTTP and Kafka: balances, postings, holds, ops adjustments, statements."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest

from infra.bootstrap import build_system
from infra.settings import Settings
from tests.e2e.identity_world import bearer, open_tenant
from tests.support import Stack, api_server, eventually, gpucloud, roles

pytestmark = pytest.mark.e2e


def money_moves(settings: Settings, tenant: UUID, now: datetime) -> None:
    system = build_system(settings)
    try:
        system.ledgers.credit(tenant, "pay-1", 10_000_000, now)
        system.ledgers.debit(tenant, "use-1", 2_500_000, now)
        system.ledgers.hold(tenant, "runway-1", 1_000_000, now + timedelta(hours=1), now)
    finally:
        system.close_write_side()


async def test_billing_reads_balances_postings_and_holds_of_its_own_tenant(
    settings: Settings, ops_key: str, stack: Stack
) -> None:
    http = stack.http
    acme = await open_tenant(http, ops_key, "Acme")
    money_moves(settings, UUID(acme.id), datetime.now(UTC))
    billing = bearer(acme.keys["billing"])

    async def settled() -> dict[str, int] | None:
        body: dict[str, int] = (await http.get("/v1/ledger", headers=billing)).json()
        return body if body.get("held") == 1_000_000 else None

    balances = await eventually(settled)
    postings = await http.get("/v1/ledger/postings?kind=debit", headers=billing)
    holds = await http.get("/v1/ledger/holds?state=open", headers=billing)
    member = await http.get("/v1/ledger", headers=bearer(acme.keys["member"]))
    platform = await http.get("/v1/admin/ledger/platform-accounts", headers=bearer(ops_key))
    statement = gpucloud(settings, "ledger", "statement", "--tenant", acme.id)
    assert (balances["posted"], balances["available"]) == (7_500_000, 6_500_000)
    assert [p["amount"] for p in postings.json()["items"]] == [2_500_000]
    assert [h["amount"] for h in holds.json()["items"]] == [1_000_000]
    assert member.status_code == 403
    accounts = {a["account"]: a["balance"] for a in platform.json()}
    assert accounts == {"platform:payment_clearing": -10_000_000, "platform:revenue": 2_500_000}
    assert json.loads(statement.stdout)["closing"] == balances["posted"]  # store == read model


async def test_ops_adjust_a_balance_once_per_key_and_bad_amounts_are_refused(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        path = f"/v1/admin/tenants/{acme.id}/ledger/adjustments"
        ops = {**bearer(ops_key), "Idempotency-Key": "goodwill-1"}
        body = {"amount": "5000000", "reason": "goodwill credit"}
        first = await http.post(path, json=body, headers=ops)
        again = await http.post(path, json=body, headers=ops)
        other = await http.post(path, json={**body, "amount": "6000000"}, headers=ops)
        floats = await http.post(path, json={**body, "amount": "1.5"}, headers=ops)
        number = await http.post(path, json={**body, "amount": 5}, headers=ops)
        unkeyed = await http.post(path, json=body, headers=bearer(ops_key))
        too_much = await http.post(
            path,
            json={"amount": "-9000000", "reason": "claw back"},
            headers={**bearer(ops_key), "Idempotency-Key": "clawback-1"},
        )
        owner = await http.post(path, json=body, headers=bearer(acme.keys["owner"]))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["replayed"] and again.json()["hash"] == first.json()["hash"]
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert (floats.status_code, number.status_code, unkeyed.status_code) == (422, 422, 422)
    assert too_much.status_code == 422 and too_much.json()["type"].endswith("/insufficient-funds")
    assert owner.status_code == 403


async def test_two_workers_expire_a_due_hold_exactly_once(settings: Settings) -> None:
    from infra.bootstrap import build_system as build
    from workers.jobs import expire_holds

    tenant, placed = UUID(int=7), datetime.now(UTC) - timedelta(hours=2)
    system = build(settings)
    await system.open()
    system.ledgers.credit(tenant, "pay-1", 5_000_000, placed)
    system.ledgers.hold(tenant, "runway-1", 2_000_000, placed + timedelta(hours=1), placed)
    async with roles(settings, "relay", "projector"):

        async def hold_is_listed() -> bool:
            async with system.pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM ledger_holds WHERE state='open'")
                return await cur.fetchone() == (1,)

        await eventually(hold_is_listed)
        other = build(settings)
        await other.open()
        counts = await asyncio.gather(expire_holds(system), expire_holds(other))
        await other.close()
    balances = system.ledgers.balances(tenant)
    await system.close()
    assert sorted(counts) == [0, 1]
    assert (balances.held, balances.available) == (0, 5_000_000)
