"""Hostile and careless input over a real socket: every bad request gets a clear 4xx problem
before it reaches a route, and nothing is written."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from gateways.identity_lists import USERS
from gateways.ledger_api import POSTINGS
from infra.settings import Settings
from projections.allocations import ALLOCATION_LIST
from projections.pagination import ListSpec
from tests.e2e.identity_world import open_tenant
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
