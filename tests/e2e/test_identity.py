"""Identity through HTTP: keys shown once, revocation and expiry at once, roles, audit, limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infra.settings import Settings
from tests.e2e.identity_world import bearer, open_tenant
from tests.support import Stack, api_server, eventually

pytestmark = pytest.mark.e2e


async def test_a_new_tenant_comes_with_an_owner_key_that_works_at_once(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        tenant = await open_tenant(http, ops_key, "Acme")
        me = await http.get("/v1/me", headers=bearer(tenant.keys["member"]))
        ops_me = await http.get("/v1/me", headers=bearer(ops_key))
    assert me.status_code == 200
    assert me.json() | {"key_id": None} == {
        "key_id": None,
        "user_id": tenant.user_ids["member"],
        "email": None,
        "tenant_id": tenant.id,
        "role": "member",
        "read_only": False,
    }
    assert ops_me.json()["role"] == "ops" and ops_me.json()["tenant_id"] is None


async def test_a_revoked_key_fails_on_its_very_next_request(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        tenant = await open_tenant(http, ops_key, "Acme")
        key, key_id = tenant.keys["billing"], tenant.key_ids["billing"]
        before = await http.get("/v1/me", headers=bearer(key))
        revoked = await http.post(
            f"/v1/api-keys/{key_id}/revoke", headers=bearer(tenant.keys["owner"])
        )
        after = await http.get("/v1/me", headers=bearer(key))
        again = await http.post(
            f"/v1/api-keys/{key_id}/revoke", headers=bearer(tenant.keys["owner"])
        )
    assert (before.status_code, revoked.status_code, after.status_code) == (200, 200, 401)
    assert after.json()["type"].endswith("/unauthenticated")
    assert again.status_code == 200  # idempotent


async def test_an_expired_key_stops_working_when_it_expires(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        tenant = await open_tenant(http, ops_key, "Acme")
        soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
        issued = await http.post(
            "/v1/api-keys",
            json={"name": "short", "expires_at": soon},
            headers=bearer(tenant.keys["owner"]),
        )
        key = issued.json()["token"]
        fresh = await http.get("/v1/me", headers=bearer(key))

        async def refused() -> bool:
            return (await http.get("/v1/me", headers=bearer(key))).status_code == 401

        await eventually(refused, timeout=5, every=0.2)
        past = await http.post(
            "/v1/api-keys",
            json={"expires_at": "2020-01-01T00:00:00Z"},
            headers=bearer(tenant.keys["owner"]),
        )
    assert fresh.status_code == 200
    assert past.status_code == 422


async def test_a_read_only_key_reads_but_cannot_write(settings: Settings, ops_key: str) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        tenant = await open_tenant(http, ops_key, "Acme")
        issued = await http.post(
            "/v1/api-keys", json={"read_only": True}, headers=bearer(tenant.keys["owner"])
        )
        narrow = bearer(issued.json()["token"])
        read = await http.get("/v1/api-keys", headers=narrow)
        write = await http.post("/v1/users", json={"role": "member"}, headers=narrow)
    assert read.status_code == 200
    assert write.status_code == 403 and write.json()["type"].endswith("/read-only-key")


async def test_keys_are_listed_without_secrets_and_users_per_tenant(
    settings: Settings, ops_key: str, stack: Stack
) -> None:
    http = stack.http
    acme = await open_tenant(http, ops_key, "Acme")
    other = await open_tenant(http, ops_key, "Other")

    async def four_keys() -> list[dict[str, object]] | None:
        page = await http.get("/v1/api-keys", headers=bearer(acme.keys["owner"]))
        items: list[dict[str, object]] = page.json()["items"]
        return items if len(items) == 4 else None

    async def four_users() -> bool:
        page = await http.get("/v1/users", headers=bearer(acme.keys["owner"]))
        return len(page.json()["items"]) == 4

    keys = await eventually(four_keys)
    await eventually(four_users)
    users = await http.get("/v1/users?limit=2", headers=bearer(acme.keys["owner"]))
    rest = await http.get(
        f"/v1/users?limit=2&cursor={users.json()['next_cursor']}",
        headers=bearer(acme.keys["owner"]),
    )
    assert {k["id"] for k in keys} == set(acme.key_ids.values())
    assert all("token" not in k and "secret_hash" not in k for k in keys)
    listed = [u["id"] for u in users.json()["items"] + rest.json()["items"]]
    assert sorted(listed) == sorted(acme.user_ids.values())
    assert not set(listed) & set(other.user_ids.values())


async def test_the_audit_log_names_who_did_what(
    settings: Settings, ops_key: str, stack: Stack
) -> None:
    http = stack.http
    acme = await open_tenant(http, ops_key, "Acme")

    async def audit() -> list[dict[str, str]] | None:
        page = await http.get(
            "/v1/audit-events?type=cloud.gpu.user.created.v1&limit=10",
            headers=bearer(acme.keys["auditor"]),
        )
        items: list[dict[str, str]] = page.json()["items"]
        return items if len(items) == 4 else None

    users = await eventually(audit)
    member_view = await http.get("/v1/audit-events", headers=bearer(acme.keys["member"]))
    by_subject = {u["subject"]: u["actor"] for u in users}
    owner_actor = f"key:{acme.key_ids['owner']},user:{acme.user_ids['owner']}"
    assert by_subject[acme.user_ids["member"]] == owner_actor
    assert by_subject[acme.user_ids["owner"]].startswith("key:")  # the ops key that opened it
    assert member_view.status_code == 403


async def test_too_many_requests_from_one_key_get_429_with_retry_after(
    settings: Settings, ops_key: str
) -> None:
    limited = settings.with_(rate_limit_per_second=0.2, rate_limit_burst=3)
    async with api_server(limited) as url, httpx.AsyncClient(base_url=url) as http:
        answers = await asyncio.gather(
            *(http.get("/v1/me", headers=bearer(ops_key)) for _ in range(5))
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["type"].endswith("/rate-limited")
