"""Two tenants, a key for every role, a live API: the world the identity tests call into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

ROLES = ("owner", "member", "billing", "auditor")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Tenant:
    id: str
    owner_user_id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> API key
    key_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)


async def open_tenant(http: httpx.AsyncClient, ops_key: str, name: str) -> Tenant:
    """A tenant with one user and key per role (the owner's from the tenant's creation)."""
    created = await http.post("/v1/tenants", json={"name": name}, headers=bearer(ops_key))
    assert created.status_code == 201, created.text
    body = created.json()
    tenant = Tenant(body["id"], body["owner_user_id"])
    tenant.keys["owner"] = body["owner_api_key"]
    tenant.user_ids["owner"] = body["owner_user_id"]
    me = await http.get("/v1/me", headers=bearer(body["owner_api_key"]))
    tenant.key_ids["owner"] = me.json()["key_id"]
    for role in ROLES[1:]:
        await _add(http, tenant, role)
    return tenant


async def _add(http: httpx.AsyncClient, tenant: Tenant, role: str) -> None:
    owner = bearer(tenant.keys["owner"])
    user = await http.post("/v1/users", json={"role": role}, headers=owner)
    assert user.status_code == 201, user.text
    key = await http.post("/v1/api-keys", json={"user_id": user.json()["id"]}, headers=owner)
    assert key.status_code == 201, key.text
    tenant.user_ids[role] = user.json()["id"]
    tenant.keys[role], tenant.key_ids[role] = key.json()["token"], key.json()["id"]


def json_of(response: httpx.Response) -> Any:
    return response.json() if response.content else None


async def grant_credit(http: httpx.AsyncClient, ops_key: str, tenant_id: str, micro: int) -> None:
    """Credit a tenant's ledger for a test: an ops adjustment, asserted to land."""
    credit = await http.post(
        f"/v1/admin/tenants/{tenant_id}/ledger/adjustments",
        json={"amount": str(micro), "reason": "test credit"},
        headers={**bearer(ops_key), "Idempotency-Key": "credit-1"},
    )
    assert credit.status_code == 201, credit.text
