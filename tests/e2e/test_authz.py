"""Walks every operation of the committed OpenAPI contract: 401 without a key, 403 for each role
the operation does not admit, 404 for another tenant's resource. A new route cannot ship
without declaring its roles (`x-roles`) and security, and passing these three checks."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.settings import Settings
from tests.e2e.identity_world import ROLES, Tenant, bearer, open_tenant
from tests.support import api_server

pytestmark = pytest.mark.e2e
CONTRACT = Path(__file__).parents[2] / "openapi" / "openapi.yaml"
PUBLIC = {"/healthz", "/readyz"}
# Authenticated by a signature over the body, not by a key and a role: its refusals are
# walked in tests/integration/test_stripe_webhook.py.
SIGNED = {"/v1/webhooks/stripe": "stripeSignature"}
TENANT_OWNED = {"tenant_id", "key_id", "user_id", "allocation_id", "payment_id"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    return [
        (path, method.upper(), op)
        for path, item in paths.items()
        if path not in PUBLIC and path not in SIGNED
        for method, op in item.items()
    ]


OPERATIONS = operations()


def params_of(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), str(uuid.uuid4())), path)


def foreign_ids(other: Tenant) -> dict[str, str]:
    return {
        "tenant_id": other.id,
        "key_id": other.key_ids["member"],
        "user_id": other.user_ids["member"],
        "allocation_id": str(uuid.uuid4()),
    }


def test_a_signed_operation_declares_its_signature_as_its_security() -> None:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    for path, scheme in SIGNED.items():
        for op in paths[path].values():
            assert op["security"] == [{scheme: []}] and "x-roles" not in op


def test_every_operation_declares_security_and_roles() -> None:
    assert OPERATIONS, "the contract has no operations"
    for path, method, op in OPERATIONS:
        assert op.get("security"), f"{method} {path} declares no security"
        assert op.get("x-roles"), f"{method} {path} declares no x-roles (use a Guard)"


async def call(http: httpx.AsyncClient, method: str, url: str, key: str | None) -> httpx.Response:
    headers = bearer(key) if key else {}
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return await http.request(method, url, json=body, headers=headers)


async def test_every_operation_answers_401_403_and_404_as_it_should(
    settings: Settings, ops_key: str
) -> None:
    failures: list[str] = []
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        mine = await open_tenant(http, ops_key, "Mine")
        theirs = await open_tenant(http, ops_key, "Theirs")
        keys = {**mine.keys, "ops": ops_key}
        for path, method, op in OPERATIONS:
            target = fill(path, foreign_ids(theirs))
            allowed = set(op["x-roles"])
            if (await call(http, method, target, None)).status_code != 401:
                failures.append(f"{method} {path}: no key is not 401")
            for role in (*ROLES, "ops"):
                if role not in allowed:
                    got = (await call(http, method, target, keys[role])).status_code
                    if got != 403:
                        failures.append(f"{method} {path}: role {role} got {got}, not 403")
            owned = set(params_of(path)) & TENANT_OWNED
            tenant_role = next((r for r in ROLES if r in allowed), None)
            if owned and tenant_role:
                got = (await call(http, method, target, keys[tenant_role])).status_code
                if got != 404:
                    failures.append(f"{method} {path}: another tenant's id got {got}, not 404")
    assert not failures, "\n".join(failures)
