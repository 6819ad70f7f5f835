"""The Stripe stand-in driven by the real ``stripe`` library, its webhooks caught by a real
receiver that verifies each signature with ``stripe.Webhook.construct_event``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
import stripe
import uvicorn
from fastapi import FastAPI, Request, Response
from stripe import HTTPXClient, StripeClient
from stripe.params.checkout import SessionCreateParams

from infra.stripe_standin import StandInOptions, StripeRequestError, StripeStandIn
from tests.support import eventually

pytestmark = pytest.mark.integration

START = 1_900_000_000.0
WEBHOOK_SECRET = "whsec_test_receiver"


@dataclass
class Clock:
    """A mutable instant: the stand-in reads it, the test moves it."""

    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Receiver:
    """A webhook endpoint that answers 500 to its first ``failures`` deliveries."""

    failures: int = 0
    events: list[stripe.Event] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            return self.receive(await request.body(), dict(request.headers))

        return app

    def receive(self, payload: bytes, headers: dict[str, str]) -> Response:
        # tolerance=0: the signature's timestamp is the test's clock, not the calendar's
        event = stripe.Webhook.construct_event(
            payload, headers.get("stripe-signature"), WEBHOOK_SECRET, tolerance=0
        )
        self.attempts.append(event.id)
        if self.failures > 0:
            self.failures -= 1
            return Response(status_code=500)
        self.events.append(event)
        self.headers.append(headers)
        return Response(status_code=200)

    def types(self) -> list[str]:
        return [event.type for event in self.events]


@dataclass
class World:
    standin: StripeStandIn
    receiver: Receiver
    client: StripeClient
    clock: Clock

    def session(self, amount: int = 500, quantity: int = 2, **extra: Any) -> SessionCreateParams:
        """The standard create parameters, as gpucloud sends them."""
        params = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": amount,
                        "product_data": {"name": "GPU credit"},
                    },
                    "quantity": quantity,
                }
            ],
            "client_reference_id": "tenant-1",
            "metadata": {"tenant_id": "tenant-1"},
            "payment_intent_data": {"metadata": {"payment_id": "pay-1"}},
            "success_url": "https://app.test/paid?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.test/cancelled",
            **extra,
        }
        return cast("SessionCreateParams", params)

    async def create(self, **extra: Any) -> stripe.checkout.Session:
        return await self.client.v1.checkout.sessions.create_async(params=self.session(**extra))

    async def paid_intent(self) -> str:
        session = self.standin.pay((await self.create()).id)
        return str(session["payment_intent"])


@dataclass
class Serving:
    """An app on a real socket as a task of this loop (uvicorn takes ~0.2 s to stop)."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    @classmethod
    async def start(cls, app: FastAPI) -> Serving:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await eventually(lambda: _started(server), timeout=5)
        return cls(server, task, f"http://127.0.0.1:{sock.getsockname()[1]}")

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


def library_client(url: str, http: HTTPXClient, key: str = "sk_test_standin") -> StripeClient:
    return StripeClient(key, base_addresses={"api": url}, http_client=http, max_network_retries=0)


@contextlib.asynccontextmanager
async def stripe_world(failures: int = 0, **options: Any) -> AsyncIterator[World]:
    receiver, clock = Receiver(failures), Clock()
    hooks = await Serving.start(receiver.app())
    settings = StandInOptions(
        webhook_url=f"{hooks.url}/hook",
        webhook_secret=WEBHOOK_SECRET,
        clock=clock,
        retry_seconds=(0.05, 0.1),
        **options,
    )
    standin, http = StripeStandIn(settings), HTTPXClient()
    await standin.start()
    try:
        yield World(standin, receiver, library_client(standin.url, http), clock)
    finally:
        await http.close_async()
        await asyncio.gather(standin.stop(), hooks.stop())


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with stripe_world() as built:
        yield built


# --- the API through the library ---------------------------------------------------------------


async def test_session_created_by_the_library_is_retrieved_with_its_fields(world: World) -> None:
    created = await world.create()

    session = await world.client.v1.checkout.sessions.retrieve_async(created.id)

    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert (session.amount_total, session.currency, session.status) == (1000, "usd", "open")
    assert (session.payment_status, session.payment_intent) == ("unpaid", None)
    assert session.metadata is not None
    assert session.metadata.to_dict() == {"tenant_id": "tenant-1"}
    assert session.client_reference_id == "tenant-1"
    assert session.url == f"{world.standin.url}/checkout/{session.id}"
    assert (session.created, session.expires_at) == (int(START), int(START) + 24 * 3600)
    assert session.livemode is False


async def test_same_idempotency_key_replays_the_same_session(world: World) -> None:
    sessions = world.client.v1.checkout.sessions
    first = await sessions.create_async(world.session(), {"idempotency_key": "k1"})

    again = await sessions.create_async(world.session(), {"idempotency_key": "k1"})

    assert again.id == first.id and len(world.standin.sessions) == 1
    assert again.last_response is not None
    assert again.last_response.headers["idempotent-replayed"] == "true"


async def test_same_idempotency_key_with_other_params_is_an_idempotency_error(
    world: World,
) -> None:
    sessions = world.client.v1.checkout.sessions
    await sessions.create_async(world.session(), {"idempotency_key": "k2"})

    with pytest.raises(stripe.IdempotencyError):
        await sessions.create_async(world.session(amount=900), {"idempotency_key": "k2"})


async def test_wrong_secret_key_is_an_authentication_error(world: World) -> None:
    http = HTTPXClient()
    intruder = library_client(world.standin.url, http, key="sk_test_wrong")

    with pytest.raises(stripe.AuthenticationError):
        await intruder.v1.checkout.sessions.create_async(world.session())
    await http.close_async()


async def test_mode_other_than_payment_is_an_invalid_request(world: World) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await world.create(mode="subscription")
    assert raised.value.param == "mode" and raised.value.http_status == 400


async def test_unknown_session_is_a_404_invalid_request(world: World) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await world.client.v1.checkout.sessions.retrieve_async("cs_test_nothing")
    assert raised.value.http_status == 404 and raised.value.code == "resource_missing"


async def test_session_past_its_expiry_reads_as_expired(world: World) -> None:
    created = await world.create(expires_at=int(START) + 1800)
    world.clock.now += 1800

    session = await world.client.v1.checkout.sessions.retrieve_async(created.id)

    assert session.status == "expired"
    await world.standin.delivered(1)
    assert world.receiver.types() == ["checkout.session.expired"]


# --- the checkout page -------------------------------------------------------------------------


async def test_checkout_page_shows_the_amount_and_its_pay_form_redirects_303(
    world: World,
) -> None:
    session = await world.create()
    async with httpx.AsyncClient() as browser:
        shown = await browser.get(str(session.url))
        paid = await browser.post(f"{session.url}/pay")

    assert shown.status_code == 200 and "$10.00" in shown.text
    assert f'action="/checkout/{session.id}/pay"' in shown.text and ">Pay</button>" in shown.text
    assert 'href="https://app.test/cancelled"' in shown.text
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.test/paid?session={session.id}"
    after = await world.client.v1.checkout.sessions.retrieve_async(session.id)
    assert (after.status, after.payment_status) == ("complete", "paid")


async def test_paying_a_completed_session_on_the_page_is_409(world: World) -> None:
    session = await world.create()
    world.standin.pay(session.id)

    async with httpx.AsyncClient() as browser:
        again = await browser.post(f"{session.url}/pay")

    assert again.status_code == 409 and "complete" in again.text


# --- webhooks ----------------------------------------------------------------------------------


async def test_completed_checkout_arrives_as_a_signed_webhook_that_verifies(world: World) -> None:
    session = await world.create()
    world.standin.pay(session.id)

    await world.standin.delivered(1)

    [event], [headers] = world.receiver.events, world.receiver.headers
    assert event.type == "checkout.session.completed" and event.id.startswith("evt_")
    completed = event.data.object
    assert (completed["id"], completed["payment_status"]) == (session.id, "paid")
    assert str(completed["payment_intent"]).startswith("pi_")
    assert headers["stripe-signature"].startswith(f"t={int(START)},v1=")
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["user-agent"].startswith("Stripe/1.0")


async def test_receiver_answering_500_first_gets_the_event_again() -> None:
    async with stripe_world(failures=1) as world:
        world.standin.pay((await world.create()).id)

        await world.standin.delivered(1)

        [event] = world.receiver.events
        assert world.receiver.attempts == [event.id, event.id]


async def test_receiver_failing_every_time_is_given_up_on_and_the_event_stays_listed() -> None:
    async with stripe_world(failures=100) as world:
        world.standin.pay((await world.create()).id)

        await eventually(lambda: _attempted(world, 3), timeout=5)

        listed = await world.client.v1.events.list_async()
        assert [e.type for e in listed.data] == ["checkout.session.completed"]
        assert world.receiver.events == []


async def _attempted(world: World, count: int) -> bool:
    return len(world.receiver.attempts) >= count


async def test_duplicate_every_1_delivers_each_event_twice() -> None:
    async with stripe_world(duplicate_every=1) as world:
        world.standin.pay((await world.create()).id)
        world.standin.expire((await world.create()).id)

        await world.standin.delivered(4)

        ids = [event.id for event in world.receiver.events]
        assert ids[0] == ids[1] != ids[2] == ids[3]


async def test_reorder_delivers_each_burst_newest_first() -> None:
    async with stripe_world(reorder=True) as world:
        first, second = await world.create(), await world.create()
        world.standin.expire(first.id)
        world.standin.pay(second.id)

        await world.standin.delivered(2)

        assert world.receiver.types() == ["checkout.session.completed", "checkout.session.expired"]


async def test_drop_next_records_the_event_but_never_delivers_it(world: World) -> None:
    first, second = await world.create(), await world.create()
    world.standin.drop_next()
    world.standin.pay(first.id)
    world.standin.expire(second.id)

    await world.standin.delivered(1)

    assert world.receiver.types() == ["checkout.session.expired"]
    listed = await world.client.v1.events.list_async()
    assert [e.type for e in listed.data] == [
        "checkout.session.expired",
        "checkout.session.completed",
    ]


# --- payments that settle later, expiry --------------------------------------------------------


async def test_unpaid_checkout_then_async_success_pays_with_a_charge(world: World) -> None:
    session = await world.create()
    world.standin.pay(session.id, payment_status="unpaid")
    world.standin.async_payment(session.id, succeeded=True)

    await world.standin.delivered(2)

    pending, settled = world.receiver.events
    assert pending.type == "checkout.session.completed"
    assert pending.data.object["payment_status"] == "unpaid"
    assert settled.type == "checkout.session.async_payment_succeeded"
    assert settled.data.object["payment_status"] == "paid"
    intent = await world.client.v1.payment_intents.retrieve_async(
        pending.data.object["payment_intent"]
    )
    assert intent.status == "succeeded" and str(intent.latest_charge).startswith("ch_")


async def test_unpaid_checkout_then_async_failure_stays_unpaid(world: World) -> None:
    session = await world.create()
    world.standin.pay(session.id, payment_status="unpaid")
    world.standin.async_payment(session.id, succeeded=False)

    await world.standin.delivered(2)

    assert world.receiver.types()[1] == "checkout.session.async_payment_failed"
    assert world.standin.sessions[session.id]["payment_status"] == "unpaid"
    with pytest.raises(StripeRequestError):
        world.standin.async_payment(session.id, succeeded=True)


async def test_expired_session_emits_expired_and_can_no_longer_be_paid(world: World) -> None:
    session = await world.create()
    world.standin.expire(session.id)

    await world.standin.delivered(1)

    [event] = world.receiver.events
    assert event.type == "checkout.session.expired"
    assert event.data.object["status"] == "expired"
    with pytest.raises(StripeRequestError, match="expired"):
        world.standin.pay(session.id)


# --- refunds -----------------------------------------------------------------------------------


async def test_partial_then_full_refund_reports_the_cumulative_amount_refunded(
    world: World,
) -> None:
    intent = await world.paid_intent()

    partial = await world.client.v1.refunds.create_async({"payment_intent": intent, "amount": 300})
    rest = await world.client.v1.refunds.create_async({"payment_intent": intent})

    assert partial.id.startswith("re_") and (partial.amount, rest.amount) == (300, 700)
    await world.standin.delivered(3)
    charges = [e.data.object for e in world.receiver.events if e.type == "charge.refunded"]
    assert [c["amount_refunded"] for c in charges] == [300, 1000]
    assert [c["refunded"] for c in charges] == [False, True]
    assert charges[0]["metadata"].to_dict() == {"payment_id": "pay-1"}
    assert charges[0]["payment_intent"] == intent and charges[0]["object"] == "charge"


async def test_refund_over_what_is_left_is_an_invalid_request(world: World) -> None:
    intent = await world.paid_intent()
    await world.client.v1.refunds.create_async({"payment_intent": intent, "amount": 600})

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await world.client.v1.refunds.create_async({"payment_intent": intent, "amount": 500})

    assert raised.value.http_status == 400 and raised.value.param == "amount"
    assert world.standin.charges[_charge_of(world, intent)]["amount_refunded"] == 600


def _charge_of(world: World, intent: str) -> str:
    return str(world.standin.payment_intents[intent]["latest_charge"])


# --- disputes and the control endpoints --------------------------------------------------------


async def test_dispute_lifecycle_through_the_control_endpoints(world: World) -> None:
    charge = _charge_of(world, await world.paid_intent())
    async with httpx.AsyncClient(base_url=f"{world.standin.url}/_standin") as control:
        opened = (await control.post(f"/charges/{charge}/dispute", json={})).json()
        dispute = opened["id"]
        await control.post(f"/disputes/{dispute}/funds", json={"withdrawn": True})
        await control.post(f"/disputes/{dispute}/funds", json={"withdrawn": False})
        closed = (await control.post(f"/disputes/{dispute}/close", json={"won": True})).json()

    await world.standin.delivered(5)
    assert world.receiver.types()[1:] == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    ]
    created, withdrawn = (e.data.object for e in world.receiver.events[1:3])
    assert dispute.startswith("dp_") and created["status"] == "needs_response"
    assert (created["charge"], created["amount"]) == (charge, 1000)
    assert created["payment_intent"] == world.standin.charges[charge]["payment_intent"]
    assert [t["amount"] for t in withdrawn["balance_transactions"]] == [-1000]
    assert closed["status"] == "won"


async def test_lost_dispute_closes_once(world: World) -> None:
    charge = _charge_of(world, await world.paid_intent())
    dispute = world.standin.dispute(charge, amount=400)["id"]

    closed = world.standin.close_dispute(dispute, won=False)

    assert (closed["status"], closed["amount"]) == ("lost", 400)
    with pytest.raises(StripeRequestError):
        world.standin.close_dispute(dispute, won=True)


async def test_control_endpoints_pay_a_session_and_emit_any_event(world: World) -> None:
    session = await world.create()
    async with httpx.AsyncClient(base_url=f"{world.standin.url}/_standin") as control:
        paid = await control.post(f"/sessions/{session.id}/pay", json={"payment_status": "paid"})
        odd = {"type": "made.up.type", "object": {"id": "x_1"}, "livemode": True}
        emitted = await control.post("/events", json=odd)
        again = await control.post(f"/sessions/{session.id}/pay", json={})

    assert paid.json()["status"] == "complete"
    assert again.status_code == 400 and again.json()["error"]["type"] == "invalid_request_error"
    await world.standin.delivered(2)
    [_, event] = world.receiver.events
    assert (event.id, event.type, event.livemode) == (emitted.json()["id"], "made.up.type", True)


# --- listing events ----------------------------------------------------------------------------


async def test_events_list_newest_first_with_pagination_and_created_filter(
    world: World,
) -> None:
    for offset in range(5):
        world.clock.now = START + offset
        world.standin.emit("test.tick", {"id": f"tick_{offset}"})
    events = world.client.v1.events

    first = await events.list_async({"limit": 2})
    second = await events.list_async({"limit": 2, "starting_after": first.data[-1].id})
    last = await events.list_async({"limit": 2, "starting_after": second.data[-1].id})
    recent = await events.list_async({"created": {"gte": int(START) + 3}})

    ticks = [e.data.object["id"] for page in (first, second, last) for e in page.data]
    assert ticks == [f"tick_{n}" for n in (4, 3, 2, 1, 0)]
    assert (first.has_more, second.has_more, last.has_more) == (True, True, False)
    assert [e.created for e in recent.data] == [int(START) + 4, int(START) + 3]
    one = await events.retrieve_async(first.data[0].id)
    assert (one.id, one.api_version) == (first.data[0].id, "2025-06-30.basil")


async def test_events_list_filters_by_type_and_refuses_a_limit_over_100(world: World) -> None:
    world.standin.emit("test.a", {"id": "a"})
    world.standin.emit("test.b", {"id": "b"})

    only_a = await world.client.v1.events.list_async({"type": "test.a"})

    assert [e.type for e in only_a.data] == ["test.a"]
    with pytest.raises(stripe.InvalidRequestError):
        await world.client.v1.events.list_async({"limit": 101})


async def test_control_endpoint_without_its_flag_is_a_400(world: World) -> None:
    session = await world.create()
    world.standin.pay(session.id, payment_status="unpaid")
    async with httpx.AsyncClient(base_url=f"{world.standin.url}/_standin") as control:
        refused = await control.post(f"/sessions/{session.id}/async", json={})
        settled = await control.post(f"/sessions/{session.id}/async", json={"succeeded": True})

    assert refused.status_code == 400 and refused.json()["error"]["param"] == "succeeded"
    assert settled.json()["payment_status"] == "paid"


async def test_public_url_is_the_base_of_checkout_urls() -> None:
    async with stripe_world(public_url="https://pay.example.test/") as world:
        session = await world.create()

        assert session.url == f"https://pay.example.test/checkout/{session.id}"
