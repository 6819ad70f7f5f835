"""The Stripe webhook over a real socket: the signature is checked over the raw bytes with the
library, against every configured secret, within 300 s either side; a verified event is stored
once, however often and however concurrently it comes; a refused one changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from stripe import WebhookSignature

from infra import stripe_inbox as inbox
from infra.bootstrap import build_system
from infra.settings import Settings
from tests.integration.payment_world import OLD_SECRET, SECRET, Paying, payment_settings, signed
from tests.support import api_server

pytestmark = pytest.mark.integration
PATH = "/v1/webhooks/stripe"


@pytest.fixture
def settings(database_url: str, schema: str) -> Settings:
    return payment_settings(database_url, schema)


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server(settings) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def an_event() -> dict[str, Any]:
    return Paying.event("checkout.session.completed", {"id": "cs_test_1", "metadata": {}})


async def post(http: httpx.AsyncClient, body: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return await http.post(PATH, content=body, headers=headers)


async def stored(settings: Settings) -> dict[str, int]:
    system = build_system(settings)
    await system.open()
    try:
        async with system.pool.connection() as conn:
            cur = await conn.execute("SELECT id, deliveries FROM stripe_events")
            return {row[0]: row[1] for row in await cur.fetchall()}
    finally:
        await system.close()


async def test_a_validly_signed_event_is_stored_and_acknowledged(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    event = an_event()
    answer = await post(http, *signed(event))

    assert (answer.status_code, answer.json()) == (200, {"received": True, "duplicate": False})
    assert await stored(settings) == {event["id"]: 1}


def _tampered(event: dict[str, Any]) -> tuple[bytes, str]:
    body, header = signed(event)
    return body.replace(b", ", b",  ", 1), header  # one whitespace more


def _rotating(event: dict[str, Any]) -> tuple[bytes, str]:
    """Two v1 entries, as Stripe sends while a secret rolls: one of a secret we no longer
    have, one of ours."""
    body = json.dumps(event)
    stale = WebhookSignature.generate_signature_header(body, "whsec_retired")
    ours = WebhookSignature.generate_signature_header(body, SECRET)
    return body.encode(), f"{stale},v1={ours.split('v1=')[1]}"


REFUSED = {
    "wrong secret": lambda e: signed(e, "whsec_someone_else"),
    "tampered body": _tampered,
    "301 s old": lambda e: signed(e, at=int(time.time()) - 301),
    "301 s ahead": lambda e: signed(e, at=int(time.time()) + 301),
    "no header": lambda e: (signed(e)[0], None),
    "no timestamp": lambda e: (signed(e)[0], "v1=" + "0" * 64),
}


async def test_every_bad_signature_is_a_400_problem_and_stores_nothing(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    answers = {case: await post(http, *make(an_event())) for case, make in REFUSED.items()}

    wrong = {
        case: (a.status_code, a.headers["content-type"], a.json().get("type"))
        for case, a in answers.items()
        if a.status_code != 400
        or a.headers["content-type"] != "application/problem+json"
        or not a.json()["type"].endswith("/invalid-signature")
    }
    assert wrong == {}
    assert await stored(settings) == {}


async def test_rotation_and_the_edge_of_the_tolerance_are_accepted(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    events = {how: an_event() for how in ("rotating header", "previous secret", "290 s old")}
    made = {
        "rotating header": _rotating(events["rotating header"]),
        "previous secret": signed(events["previous secret"], OLD_SECRET),
        "290 s old": signed(events["290 s old"], at=int(time.time()) - 290),
    }
    statuses = {how: (await post(http, *pair)).status_code for how, pair in made.items()}

    assert statuses == dict.fromkeys(made, 200)
    assert sorted(await stored(settings)) == sorted(e["id"] for e in events.values())


async def test_a_body_that_is_not_utf8_is_refused_at_the_edge_and_stores_nothing(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    body, header = signed(an_event())
    answer = await post(http, b"\xff\xfe" + body, header)

    assert answer.status_code in (400, 415), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert await stored(settings) == {}


async def test_the_same_event_ten_times_is_stored_once(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    event = an_event()
    answers = [await post(http, *signed(event)) for _ in range(10)]

    assert [a.json()["duplicate"] for a in answers] == [False] + [True] * 9
    assert await stored(settings) == {event["id"]: 10}


async def test_one_event_delivered_concurrently_to_two_api_processes_is_stored_once(
    settings: Settings,
) -> None:
    event = an_event()
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(api_server(settings)) for _ in range(2)]
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u)) for u in urls]
        answers = await asyncio.gather(*(post(clients[n % 2], *signed(event)) for n in range(20)))

    assert {a.status_code for a in answers} == {200}
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert await stored(settings) == {event["id"]: 20}


async def test_a_stored_event_is_never_stored_again_by_a_direct_insert(settings: Settings) -> None:
    """The inbox itself (not only the route) keeps one row per event id."""
    system = build_system(settings)
    await system.open()
    event = an_event()
    try:
        async with system.pool.connection() as conn:
            firsts = [await inbox.store(conn, event, system.clock()) for _ in range(3)]
    finally:
        await system.close()
    assert firsts == [True, False, False]
