"""Hostile and careless input over a real socket: every bad request gets a clear 4xx problem
before it reaches a route, and nothing is written."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from gateways.http.identity import USERS
from gateways.http.ledger import POSTINGS
from infra.bootstrap import System
from infra.settings import Settings
from projections.allocations import ALLOCATION_LIST
from projections.pagination import ListSpec
from tests.e2e.identity_world import bearer, grant_credit, open_tenant
from tests.e2e.test_allocation_lifecycle import SKU
from tests.support import api_server

pytestmark = pytest.mark.e2e
TENANT_EVENTS = "SELECT count(*) FROM {}.identity_events"


def stored_events(settings: Settings) -> int:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(TENANT_EVENTS.format(settings.db_schema)).fetchone()
        return int(row[0]) if row else 0


def problem_of(answer: httpx.Response, status: int, kind: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/" + kind), answer.json()


def keyed(ops_key: str, **extra: str | bytes) -> dict[bytes, bytes]:
    """Headers as raw bytes, so a test can send bytes no client library would encode."""
    headers = {"Authorization": f"Bearer {ops_key}", "Idempotency-Key": "hostile-1", **extra}
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in headers.items()}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Junk": b"\xff"},
        {"Authorization": b"Bearer gpc_\xff"},
        {"Idempotency-Key": b"caf\xe9"},  # latin-1, not UTF-8
    ],
)
async def test_a_header_that_is_not_utf8_is_a_400_and_writes_nothing(
    settings: Settings, ops_key: str, headers: dict[str, bytes]
) -> None:
    before = stored_events(settings)
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(
            "/v1/tenants", json={"name": "Acme"}, headers=keyed(ops_key, **headers)
        )
    problem_of(answer, 400, "malformed-header")
    assert stored_events(settings) == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=latin-1", b'{"name": "Acme"}'),
        ("application/merge-patch+json", b'{"name": "Acme"}'),
        ("text/plain", b'{"name": "Acme"}'),
        ("application/json", b'\xef\xbb\xbf{"name": "Acme"}'),
        ("application/json", '{"name": "Acme"}'.encode("utf-16")),
        ("application/json", '{"name": "Acme"}'.encode("utf-16-le")),
    ],
)
async def test_a_body_that_is_not_utf8_json_is_a_415(
    settings: Settings, ops_key: str, content_type: str, body: bytes
) -> None:
    before = stored_events(settings)
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        sent = keyed(ops_key, **{"Content-Type": content_type})
        answer = await http.post("/v1/tenants", content=body, headers=sent)
    problem_of(answer, 415, "unsupported-media-type")
    assert stored_events(settings) == before


async def test_json_with_a_utf8_charset_is_taken(settings: Settings, ops_key: str) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        sent = keyed(ops_key, **{"Content-Type": "application/json; charset=UTF-8"})
        answer = await http.post("/v1/tenants", content=b'{"name": "Acme"}', headers=sent)
    assert answer.status_code == 201, answer.text


async def test_a_chunked_body_over_the_limit_is_a_413_like_one_with_a_length(
    settings: Settings, ops_key: str
) -> None:
    async def two_megabytes() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(32):
            yield b"x" * 65_536
        yield b'"}'

    before = stored_events(settings)
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        sent = keyed(ops_key, **{"Content-Type": "application/json"})
        answer = await http.post("/v1/tenants", content=two_megabytes(), headers=sent)
    problem_of(answer, 413, "body-too-large")
    assert "content-length" not in answer.request.headers  # chunked, as the finding was
    assert stored_events(settings) == before


@pytest.mark.parametrize("query", ["gpu_model=%00", "gpu_model=a%0Ab", "region=%FF"])
async def test_a_query_with_control_characters_or_bad_bytes_is_a_400(
    settings: Settings, ops_key: str, query: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.get(
            f"/v1/nodes?{query}", headers={"Authorization": f"Bearer {ops_key}"}
        )
    problem_of(answer, 400, "malformed-query")


async def test_a_long_or_odd_request_id_is_replaced_and_a_sane_one_kept(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        long = await http.get("/healthz", headers={"X-Request-Id": "x" * 8000})
        odd = await http.get("/healthz", headers={"X-Request-Id": "a<script>"})
        sane = await http.get("/healthz", headers={"X-Request-Id": "req-42.a:b"})
    assert len(long.headers["x-request-id"]) == 36 and odd.headers["x-request-id"] != "a<script>"
    assert sane.headers["x-request-id"] == "req-42.a:b"


async def test_every_answer_says_nosniff_and_api_answers_are_not_cached(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {ops_key}"})
        created = await http.post(
            "/v1/tenants", content=json.dumps({"name": "Acme"}), headers=keyed(ops_key)
        )
        refused = await http.get("/v1/me")
        health = await http.get("/healthz")
    for answer in (me, created, refused):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert health.headers["x-content-type-options"] == "nosniff"


def forged_cursor(spec: ListSpec, tenant: str, value: list[Any]) -> str:
    """A cursor made the way the old, keyless check allowed anyone to: the format and the
    check's algorithm are public. It names a sort value of the wrong type for the column."""
    sort = spec.sort_fields[0]
    body: dict[str, Any] = {"s": sort, "d": "asc", "v": value, "i": ["u", str(uuid4())]}
    scope = [spec.table, tenant, sort, "asc"]
    mark = _public_digest([scope, [], "None", "None"])
    body["f"] = _public_digest([mark, body])
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _public_digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


CURSOR_VALUES = [["u", str(uuid4())], ["i", 10**30], ["s", "text"], ["s", "\x00"], ["f", "NaN"]]
LISTS = {"/v1/ledger/postings": POSTINGS, "/v1/users": USERS, "/v1/allocations": ALLOCATION_LIST}


@pytest.mark.parametrize("path", sorted(LISTS))
@pytest.mark.parametrize("value", CURSOR_VALUES)
async def test_a_forged_cursor_is_a_400_whatever_it_holds(
    settings: Settings, ops_key: str, path: str, value: list[Any]
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        owner = {"Authorization": f"Bearer {acme.keys['owner']}"}
        cursor = forged_cursor(LISTS[path], acme.id, value)
        answer = await http.get(path, params={"cursor": cursor}, headers=owner)
    problem_of(answer, 400, "invalid-page-request")


def field_named(answer: httpx.Response, name: str) -> None:
    problem_of(answer, 422, "validation-failed")
    assert any(e["loc"][-1] == name for e in answer.json()["errors"]), answer.json()


@pytest.mark.parametrize("bad", ["n\x00", "a\x1bb", "line\nbreak", "\x7f", "x" * 5000])
async def test_text_no_store_or_terminal_should_keep_is_refused_naming_the_field(
    settings: Settings, ops_key: str, direct_system: System, bad: str
) -> None:
    """The four NUL vectors that once wedged a projection, and their cousins."""
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        await grant_credit(http, ops_key, acme.id, 10_000_000)
        sku = (await http.post("/v1/skus", json=SKU, headers=bearer(ops_key))).json()["id"]
        owner = {**bearer(acme.keys["owner"]), "Idempotency-Key": "k-1"}
        body = {"sku_id": sku, "region": "eu-west-1"}
        named = await http.post("/v1/allocations", json={**body, "name": bad}, headers=owner)
        fine = await http.post("/v1/allocations", json=body, headers=owner)
        path = f"/v1/allocations/{fine.json()['id']}/release"
        release = await http.post(path, json={"reason": bad}, headers=owner)
        key = await http.post("/v1/api-keys", json={"name": bad}, headers=owner)
        adjust = await http.post(
            f"/v1/admin/tenants/{acme.id}/ledger/adjustments",
            json={"amount": "100", "reason": bad},
            headers={**bearer(ops_key), "Idempotency-Key": "adj-1"},
        )
    for answer, name in ((named, "name"), (release, "reason"), (key, "name"), (adjust, "reason")):
        field_named(answer, name)
    allocation = direct_system.compute.allocation(UUID(fine.json()["id"]))
    assert allocation.state == "requested" and allocation.name != bad
    assert len(direct_system.ledgers.ledger(UUID(acme.id)).holds) == 1  # only the good request's


async def test_an_adjustment_beyond_the_domains_cap_is_refused_by_the_contract(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        path = f"/v1/admin/tenants/{acme.id}/ledger/adjustments"
        keyed_ops = {**bearer(ops_key), "Idempotency-Key": "adj-2"}
        over = await http.post(
            path, json={"amount": "1000000000000001", "reason": "x"}, headers=keyed_ops
        )
        cap = await http.post(
            path, json={"amount": "1000000000000000", "reason": "x"}, headers=keyed_ops
        )
    field_named(over, "amount")
    assert cap.status_code == 201, cap.text


async def test_a_position_token_tells_nothing_of_another_tenants_ids(
    settings: Settings, ops_key: str
) -> None:
    """Another tenant's token, or one made up, gets the same 400 at once: no wait that would
    tell a made-up id (unknown: the full read wait) from a real one (reached at once)."""
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme, other = (
            await open_tenant(http, ops_key, "Acme"),
            await open_tenant(http, ops_key, "B"),
        )
        await grant_credit(http, ops_key, other.id, 10_000_000)
        sku = (await http.post("/v1/skus", json=SKU, headers=bearer(ops_key))).json()["id"]
        body = {"sku_id": sku, "region": "eu-west-1"}
        theirs = await http.post(
            "/v1/allocations", json=body,
            headers={**bearer(other.keys["owner"]), "Idempotency-Key": "b-1"},
        )  # fmt: skip
        their_token = theirs.headers["X-Position-Token"]
        made_up = base64.urlsafe_b64encode(
            json.dumps({"t": acme.id, "p": "allocations", "s": str(uuid4()), "q": 1}).encode()
        ).decode()
        answers = []
        for token in (their_token, made_up):
            started = time.monotonic()
            answer = await http.get(
                theirs.headers["Location"],
                headers={**bearer(acme.keys["owner"]), "X-Position-Token": token.rstrip("=")},
            )
            answers.append((answer, time.monotonic() - started))
    for answer, took in answers:
        problem_of(answer, 400, "invalid-position-token")
        assert took < settings.read_wait_seconds / 2
    assert answers[0][0].json()["detail"] == answers[1][0].json()["detail"]


async def test_an_address_that_keeps_failing_to_authenticate_is_slowed_down(
    settings: Settings, ops_key: str
) -> None:
    strict = settings.with_(auth_failure_burst=5, auth_failures_per_second=0.05)
    async with api_server(strict) as url, httpx.AsyncClient(base_url=url) as http:
        wrong = bearer("gpc_" + "0" * 8 + "_" + "x" * 40)
        answers = [(await http.get("/v1/me", headers=wrong)) for _ in range(8)]
        after = await http.get("/v1/me", headers=bearer(ops_key))
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
    assert int(answers[-1].headers["Retry-After"]) >= 1
    problem_of(after, 429, "rate-limited")  # refused before the key is even looked at


async def test_the_server_refuses_what_the_contract_refuses(
    settings: Settings, ops_key: str
) -> None:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as http:
        acme = await open_tenant(http, ops_key, "Acme")
        owner = bearer(acme.keys["owner"])
        unix_time = await http.get("/v1/ledger/postings?until=0.5", headers=owner)
        email = await http.post(
            "/v1/users", json={"email": "a\x00@b.co", "role": "member"},
            headers={**owner, "Idempotency-Key": "u-1"},
        )  # fmt: skip
        wrong_method = await http.delete("/v1/tenants", headers=bearer(ops_key))
        nul_token = base64.urlsafe_b64encode(b'{"t":"-","p":"tenants","s":"\\u0000","q":1}')
        token = await http.get(
            f"/v1/tenants/{acme.id}",
            headers={**owner, "X-Position-Token": nul_token.decode().rstrip("=")},
        )
    field_named(unix_time, "until")
    field_named(email, "email")
    problem_of(wrong_method, 405, "method-not-allowed")
    assert wrong_method.headers["allow"] == "POST"
    problem_of(token, 400, "invalid-position-token")
