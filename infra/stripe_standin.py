"""A local Stripe stand-in: a DEVELOPMENT AND TEST TOOL, never for production.

No Stripe-compatible server is published on the package registries, so the project ships this
one. It keeps everything in memory, checks no card, moves no money and signs webhooks with a
shared test secret; it answers only the subset of the Stripe HTTP API that gpucloud calls, with
the official ``stripe`` library as the client (form-encoded bodies, bracketed nested keys):

- ``POST /v1/checkout/sessions`` (mode ``payment``, ``line_items[][price_data]`` only, the
  ``Idempotency-Key`` header honoured), ``GET /v1/checkout/sessions/{id}``;
- ``GET /v1/events`` (``limit``, ``starting_after``, ``ending_before``, ``type``,
  ``created[gte|gt|lte|lt]``), ``GET /v1/events/{id}``;
- ``POST /v1/refunds`` (``payment_intent``, ``amount``);
- ``GET /v1/payment_intents/{id}``, ``/v1/charges/{id}``, ``/v1/refunds/{id}``,
  ``/v1/disputes/{id}``.

Besides the API it serves a plain HTML checkout page (``/checkout/{id}``) whose Pay button
completes the session, and it delivers each event as a signed webhook (``Stripe-Signature``
made by the library's own ``WebhookSignature``), at least once, retrying on failure.

Test controls, with no authentication (JSON bodies; each is also a method of
:class:`StripeStandIn`), stand for what a customer, a bank or Stripe itself would do:

- ``POST /_standin/sessions/{id}/pay`` ``{"payment_status": "paid"|"unpaid"}``
- ``POST /_standin/sessions/{id}/async`` ``{"succeeded": bool}``
- ``POST /_standin/sessions/{id}/expire``
- ``POST /_standin/charges/{id}/dispute`` ``{"amount"?: int}``
- ``POST /_standin/disputes/{id}/funds`` ``{"withdrawn": bool}``
- ``POST /_standin/disputes/{id}/close`` ``{"won": bool}``
- ``POST /_standin/events`` ``{"type": str, "object": {...}, "livemode"?: bool}``
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import html
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

Json = dict[str, Any]

API_VERSION = "2025-06-30.basil"
SESSION_LIFETIME = 24 * 3600
WEBHOOK_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
}

log = logging.getLogger(__name__)


class StripeRequestError(Exception):
    """An answer in Stripe's error shape: ``{"error": {"type", "message", "code"?, ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_
        self.code, self.param = code, param

    def body(self) -> Json:
        error: Json = {"type": self.type, "message": self.message}
        error |= {k: v for k, v in (("code", self.code), ("param", self.param)) if v}
        return {"error": error}


class SessionNotOpenError(StripeRequestError):
    """The session was already completed or expired: the checkout page shows 409."""


def missing(kind: str, id_: str, param: str | None = None) -> StripeRequestError:
    return StripeRequestError(404, f"No such {kind}: '{id_}'", code="resource_missing", param=param)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


# --- form bodies -------------------------------------------------------------------------------


def parse_form(encoded: str) -> Json:
    """``a[b][0][c]=1`` -> ``{"a": {"b": [{"c": "1"}]}}``, the way Stripe reads its parameters.

    Values stay strings, as they arrive; dicts whose keys are all indexes become lists.
    """
    root: Json = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        *parents, leaf = key.replace("]", "").split("[")
        node = root
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise StripeRequestError(400, f"Invalid nested parameter: {key}", param=key)
        node[leaf] = value
    return {name: _listify(value) for name, value in root.items()}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def integer(params: Json, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeRequestError(400, f"Invalid integer: {value}", param=name) from None


def mapping(params: Json, name: str) -> Json:
    """A nested parameter such as ``metadata``; absent or ``""`` (Stripe's "unset") is empty."""
    value = params.get(name) or {}
    if not isinstance(value, dict):
        raise StripeRequestError(400, f"Invalid object: {name}", param=name)
    return value


def line_item_amount(item: Json) -> tuple[int, str]:
    """(unit_amount * quantity, currency) of one ``line_items[i]``; only ``price_data`` here."""
    price = item.get("price_data")
    if not isinstance(price, dict):
        raise StripeRequestError(400, "The stand-in takes price_data only", param="line_items")
    unit = integer(price, "unit_amount")
    if unit is None or "currency" not in price:
        raise StripeRequestError(400, "price_data needs unit_amount and currency")
    return unit * (integer(item, "quantity", 1) or 0), str(price["currency"]).lower()


# --- options and the event log -----------------------------------------------------------------


@dataclass
class StandInOptions:
    secret_key: str = "sk_test_standin"
    webhook_url: str | None = None
    webhook_secret: str = "whsec_standin"
    public_url: str | None = None
    duplicate_every: int = 0
    reorder: bool = False
    clock: Callable[[], float] = time.time
    retry_seconds: tuple[float, ...] = (0.2, 0.5, 1, 2, 5, 10)


def list_page(events: list[Json], params: Json) -> Json:
    """``GET /v1/events``: newest first, filtered, then cut at the cursor and the limit."""
    limit = integer(params, "limit", 10) or 0
    if not 1 <= limit <= 100:
        raise StripeRequestError(400, "limit must be between 1 and 100", param="limit")
    chosen = [e for e in reversed(events) if _matches(e, params)]
    if after := params.get("starting_after"):
        chosen = chosen[_position(chosen, after, "starting_after") + 1 :]
        page = chosen[:limit]
    elif before := params.get("ending_before"):
        chosen = chosen[: _position(chosen, before, "ending_before")]
        page = chosen[-limit:]
    else:
        page = chosen[:limit]
    return {"object": "list", "data": page, "has_more": len(chosen) > limit, "url": "/v1/events"}


def _position(events: list[Json], id_: str, param: str) -> int:
    for index, event in enumerate(events):
        if event["id"] == id_:
            return index
    raise StripeRequestError(400, f"No such event: '{id_}'", code="resource_missing", param=param)


COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


def _matches(event: Json, params: Json) -> bool:
    if params.get("type") and event["type"] != params["type"]:
        return False
    created = params.get("created")
    if isinstance(created, dict):
        bounds = {op: integer(created, op) for op in COMPARISONS if op in created}
        return all(COMPARISONS[op](event["created"], b or 0) for op, b in bounds.items())
    return created is None or event["created"] == integer(params, "created")


# --- webhook delivery --------------------------------------------------------------------------


@dataclass
class Deliveries:
    """Sends queued events to the webhook URL one at a time, at least once.

    A failing event is retried after each of ``retry_seconds`` and holds up those behind it
    until it is answered 2xx or given up on; given up or dropped, it stays in the event list.
    """

    options: StandInOptions
    answered: int = 0
    queue: list[Json] = field(default_factory=list)
    drops_left: int = 0
    _numbered: int = 0
    _wake: asyncio.Event | None = None

    def enqueue(self, event: Json) -> None:
        if self.options.webhook_url is None:
            return
        if self.drops_left > 0:
            self.drops_left -= 1
            return
        self.queue.append(event)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        if self.queue:
            self._wake.set()
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for event in self._take_burst():
                    await self._deliver(http, event)

    def _take_burst(self) -> list[Json]:
        burst, self.queue = self.queue, []
        return burst[::-1] if self.options.reorder else burst

    async def _deliver(self, http: httpx.AsyncClient, event: Json) -> None:
        self._numbered += 1
        every = self.options.duplicate_every
        copies = 2 if every > 0 and self._numbered % every == 0 else 1
        body = json.dumps(event).encode()
        for _ in range(copies):
            await self._send_with_retries(http, body, event["id"])

    async def _send_with_retries(self, http: httpx.AsyncClient, body: bytes, id_: str) -> None:
        if await self._send(http, body):
            return
        for delay in self.options.retry_seconds:
            await asyncio.sleep(delay)
            if await self._send(http, body):
                return
        log.warning("stripe stand-in gave up delivering %s", id_)

    async def _send(self, http: httpx.AsyncClient, body: bytes) -> bool:
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), self.options.webhook_secret, timestamp=int(self.options.clock())
        )
        headers = {**WEBHOOK_HEADERS, "Stripe-Signature": signature}
        try:
            answer = await http.post(str(self.options.webhook_url), content=body, headers=headers)
        except httpx.HTTPError:
            return False
        if answer.is_success:
            self.answered += 1
        return answer.is_success


# --- the stand-in ------------------------------------------------------------------------------


class StripeStandIn:
    """The in-memory Stripe account, its HTTP server and its webhook deliverer.

    The control methods (``pay``, ``refund``, ``dispute``...) change state at once and queue
    their events; the deliverer sends them once the server runs. Call them from the event
    loop's thread.
    """

    def __init__(self, options: StandInOptions | None = None) -> None:
        self.options = options or StandInOptions()
        self.events: list[Json] = []
        self.sessions: dict[str, Json] = {}
        self.payment_intents: dict[str, Json] = {}
        self.charges: dict[str, Json] = {}
        self.refunds: dict[str, Json] = {}
        self.disputes: dict[str, Json] = {}
        self._deliveries = Deliveries(self.options)
        self._replies: dict[str, tuple[Json, Json]] = {}
        self._intent_metadata: dict[str, Json] = {}
        self._url: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._server: uvicorn.Server | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the Stripe stand-in is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on a real socket as a task of this event loop; port 0 picks a free one."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        config = uvicorn.Config(build_app(self), log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        self._url = f"http://{host}:{sock.getsockname()[1]}"
        self._tasks = [serving, asyncio.create_task(self._deliveries.run())]

    async def stop(self) -> None:
        """Stop serving; events still queued are not delivered."""
        if self._server is None:
            return
        self._server.should_exit = True
        serving, delivering = self._tasks
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering
        await serving
        self._server, self._tasks = None, []

    async def __aenter__(self) -> StripeStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- webhook controls

    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` events are recorded (listable) but never delivered."""
        self._deliveries.drops_left += n

    async def delivered(self, count: int, timeout: float = 10) -> None:
        """Wait until ``count`` deliveries in all were answered 2xx."""
        deadline = time.monotonic() + timeout
        while self._deliveries.answered < count:
            if time.monotonic() > deadline:
                got = self._deliveries.answered
                raise TimeoutError(f"{got} of {count} webhook deliveries answered in {timeout}s")
            await asyncio.sleep(0.01)

    def emit(self, type_: str, obj: Json, livemode: bool = False) -> Json:
        """Record an event with a snapshot of ``obj`` and queue it for delivery."""
        event: Json = {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.options.clock()),
            "livemode": livemode,
            "type": type_,
            "data": {"object": json.loads(json.dumps(obj))},  # a snapshot, and JSON for sure
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
        }
        self.events.append(event)
        self._deliveries.enqueue(event)
        return event

    # -- the API

    def idempotent(
        self, key: str | None, request: Json, make: Callable[[], Json]
    ) -> tuple[Json, bool]:
        """Stripe's rule: a key replays its first answer, or is refused for other parameters.

        Answers (answer, replayed). Failed requests are not remembered.
        """
        if key is None:
            return make(), False
        if key not in self._replies:
            answer = make()
            self._replies[key] = (request, copy.deepcopy(answer))
            return answer, False
        seen, answer = self._replies[key]
        if seen != request:
            raise StripeRequestError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type_="idempotency_error",
            )
        return copy.deepcopy(answer), True

    def create_session(self, params: Json) -> Json:
        if params.get("mode") != "payment":
            raise StripeRequestError(400, "The stand-in takes mode=payment only", param="mode")
        amount, currency = self._total(params.get("line_items"))
        now = int(self.options.clock())
        id_ = new_id("cs_test_")
        session: Json = {
            "id": id_,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": currency,
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "payment_intent": None,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": mapping(params, "metadata"),
            "url": f"{(self.options.public_url or self.url).rstrip('/')}/checkout/{id_}",
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "expires_at": integer(params, "expires_at", now + SESSION_LIFETIME),
            "created": now,
            "livemode": False,
        }
        self.sessions[id_] = session
        self._intent_metadata[id_] = mapping(mapping(params, "payment_intent_data"), "metadata")
        return session

    @staticmethod
    def _total(items: Any) -> tuple[int, str]:
        if not isinstance(items, list) or not items:
            raise StripeRequestError(400, "Missing required param: line_items.", param="line_items")
        amounts = [line_item_amount(item) for item in items]
        if len({currency for _, currency in amounts}) != 1:
            raise StripeRequestError(400, "All line items must share one currency")
        return sum(amount for amount, _ in amounts), amounts[0][1]

    def session(self, id_: str) -> Json:
        """The session; an open one past its ``expires_at`` expires now (with its event), as
        Stripe would have expired it in the meantime."""
        if id_ not in self.sessions:
            raise missing("checkout.session", id_)
        session = self.sessions[id_]
        if session["status"] == "open" and self.options.clock() >= session["expires_at"]:
            self._expire(session)
        return session

    def refund(self, payment_intent: str, amount: int | None = None) -> Json:
        """Refund ``amount`` cents (None: what is left) of the intent's charge."""
        charge = self._charge_of(payment_intent)
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            raise StripeRequestError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = left if amount is None else amount
        if not 0 < amount <= left:
            raise StripeRequestError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount ({left})",
                param="amount",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = self._new_object("re_", "refund", amount, charge, status="succeeded")
        self.refunds[refund["id"]] = refund
        self.emit("charge.refunded", charge)
        return refund

    def _charge_of(self, payment_intent: str) -> Json:
        intent = self.payment_intents.get(payment_intent)
        if intent is None:
            raise missing("payment_intent", payment_intent, param="payment_intent")
        if intent["latest_charge"] is None:
            raise StripeRequestError(
                400,
                f"PaymentIntent {payment_intent} has no charge to refund",
                code="payment_intent_unexpected_state",
            )
        return self.charges[intent["latest_charge"]]

    def _new_object(self, prefix: str, kind: str, amount: int, charge: Json, **more: Any) -> Json:
        return {
            "id": new_id(prefix),
            "object": kind,
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "metadata": {},
            "created": int(self.options.clock()),
            "livemode": False,
            **more,
        }

    # -- test controls: the customer

    def pay(self, session_id: str, payment_status: str = "paid") -> Json:
        """Complete the session; ``"unpaid"`` stands for an async payment method pending."""
        if payment_status not in ("paid", "unpaid"):
            raise StripeRequestError(400, "payment_status is paid or unpaid")
        session = self._open_session(session_id)
        intent = self._new_intent(session)
        session.update(status="complete", payment_status=payment_status)
        session["payment_intent"] = intent["id"]
        if payment_status == "paid":
            self._settle(intent, session)
        self.emit("checkout.session.completed", session)
        return session

    def async_payment(self, session_id: str, succeeded: bool) -> Json:
        """Settle a pending async payment: succeeded, or failed."""
        session = self.session(session_id)
        intent = self.payment_intents.get(session["payment_intent"] or "")
        if intent is None or intent["status"] != "processing":
            raise StripeRequestError(400, f"Session {session_id} has no payment pending")
        if succeeded:
            self._settle(intent, session)
            self.emit("checkout.session.async_payment_succeeded", session)
        else:
            intent["status"] = "requires_payment_method"
            self.emit("checkout.session.async_payment_failed", session)
        return session

    def expire(self, session_id: str) -> Json:
        return self._expire(self._open_session(session_id))

    def _expire(self, session: Json) -> Json:
        session["status"] = "expired"
        self.emit("checkout.session.expired", session)
        return session

    def _open_session(self, id_: str) -> Json:
        session = self.session(id_)
        if session["status"] != "open":
            raise SessionNotOpenError(
                400,
                f"Checkout session {id_} is {session['status']}, not open",
                code="checkout_session_not_open",
            )
        return session

    def _new_intent(self, session: Json) -> Json:
        intent: Json = {
            "id": new_id("pi_"),
            "object": "payment_intent",
            "amount": session["amount_total"],
            "currency": session["currency"],
            "status": "processing",
            "latest_charge": None,
            "metadata": copy.deepcopy(self._intent_metadata[session["id"]]),
            "created": int(self.options.clock()),
            "livemode": False,
        }
        self.payment_intents[intent["id"]] = intent
        return intent

    def _settle(self, intent: Json, session: Json) -> None:
        """The money arrived: the intent succeeds with a charge, the session is paid."""
        charge: Json = {
            "id": new_id("ch_"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "refunded": False,
            "disputed": False,
            "paid": True,
            "status": "succeeded",
            "payment_intent": intent["id"],
            "metadata": copy.deepcopy(intent["metadata"]),
            "currency": intent["currency"],
            "created": int(self.options.clock()),
            "livemode": False,
        }
        self.charges[charge["id"]] = charge
        intent.update(status="succeeded", latest_charge=charge["id"])
        session["payment_status"] = "paid"

    # -- test controls: the bank

    def dispute(self, charge_id: str, amount: int | None = None) -> Json:
        """The cardholder disputes the charge: ``charge.dispute.created``."""
        charge = self.charges.get(charge_id)
        if charge is None:
            raise missing("charge", charge_id)
        amount = charge["amount"] if amount is None else amount
        if not 0 < amount <= charge["amount"]:
            raise StripeRequestError(400, "A dispute is for at most the charge's amount")
        dispute = self._new_object(
            "dp_",
            "dispute",
            amount,
            charge,
            status="needs_response",
            reason="fraudulent",
            balance_transactions=[],
        )
        charge["disputed"] = True
        self.disputes[dispute["id"]] = dispute
        self.emit("charge.dispute.created", dispute)
        return dispute

    def dispute_funds(self, dispute_id: str, withdrawn: bool) -> Json:
        """The disputed amount leaves the balance, or comes back to it."""
        dispute = self._dispute(dispute_id)
        dispute["balance_transactions"].append(
            {
                "id": new_id("txn_"),
                "object": "balance_transaction",
                "amount": -dispute["amount"] if withdrawn else dispute["amount"],
                "currency": dispute["currency"],
                "type": "adjustment",
                "reporting_category": "dispute" if withdrawn else "dispute_reversal",
                "created": int(self.options.clock()),
            }
        )
        moved = "withdrawn" if withdrawn else "reinstated"
        self.emit(f"charge.dispute.funds_{moved}", dispute)
        return dispute

    def close_dispute(self, dispute_id: str, won: bool) -> Json:
        dispute = self._dispute(dispute_id)
        if dispute["status"] in ("won", "lost"):
            raise StripeRequestError(400, f"Dispute {dispute_id} is already closed")
        dispute["status"] = "won" if won else "lost"
        self.emit("charge.dispute.closed", dispute)
        return dispute

    def _dispute(self, id_: str) -> Json:
        if id_ not in self.disputes:
            raise missing("dispute", id_)
        return self.disputes[id_]

    def collection(self, name: str) -> dict[str, Json]:
        """The objects ``GET /v1/{name}/{id}`` reads."""
        events = {event["id"]: event for event in self.events}
        stores = {
            "events": events,
            "payment_intents": self.payment_intents,
            "charges": self.charges,
            "refunds": self.refunds,
            "disputes": self.disputes,
        }
        if name not in stores:
            raise StripeRequestError(404, f"Unrecognized request URL (GET: /v1/{name})")
        return stores[name]


# --- HTTP --------------------------------------------------------------------------------------


def build_app(standin: StripeStandIn) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_exception_handler(StripeRequestError, stripe_error_answer)
    app.add_exception_handler(StarletteHTTPException, unrouted_answer)
    app.include_router(api_routes(standin))
    app.include_router(checkout_routes(standin))
    app.include_router(control_routes(standin))
    return app


def stripe_answer(body: Json, status: int = 200, replayed: bool = False) -> JSONResponse:
    headers = {"Request-Id": new_id("req_")}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=status, headers=headers)


async def stripe_error_answer(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StripeRequestError):
        raise exc
    return stripe_answer(exc.body(), exc.status)


async def unrouted_answer(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    message = f"Unrecognized request URL ({request.method}: {request.url.path})"
    return stripe_answer(StripeRequestError(status, message).body(), status)


def api_routes(standin: StripeStandIn) -> APIRouter:
    async def authorize(request: Request) -> None:
        if presented_key(request.headers.get("Authorization", "")) != standin.options.secret_key:
            raise StripeRequestError(401, "Invalid API Key provided", code="api_key_invalid")

    api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @api.post("/checkout/sessions")
    async def create_session(request: Request) -> Response:
        return await idempotently(standin, request, standin.create_session)

    @api.get("/checkout/sessions/{id_}")
    async def retrieve_session(id_: str) -> Response:
        return stripe_answer(standin.session(id_))

    @api.post("/refunds")
    async def create_refund(request: Request) -> Response:
        def refund(params: Json) -> Json:
            intent = str(params.get("payment_intent") or "")
            if not intent:
                raise StripeRequestError(400, "Missing required param: payment_intent.")
            return standin.refund(intent, integer(params, "amount"))

        return await idempotently(standin, request, refund)

    @api.get("/events")
    async def list_events(request: Request) -> Response:
        return stripe_answer(list_page(standin.events, parse_form(request.url.query)))

    @api.get("/{collection}/{id_}")
    async def retrieve(collection: str, id_: str) -> Response:
        objects = standin.collection(collection)
        if id_ not in objects:
            raise missing(collection.rstrip("s"), id_)
        return stripe_answer(objects[id_])

    return api


def presented_key(authorization: str) -> str:
    """The secret key of ``Bearer sk_...`` or of Basic ``sk_...:`` (``curl -u sk_...:``)."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            return base64.b64decode(credentials).decode().partition(":")[0]
    return ""


async def idempotently(
    standin: StripeStandIn, request: Request, create: Callable[[Json], Json]
) -> Response:
    params = parse_form((await request.body()).decode())
    key = request.headers.get("Idempotency-Key")
    answer, replayed = standin.idempotent(
        key, {"path": request.url.path, "params": params}, lambda: create(params)
    )
    return stripe_answer(answer, replayed=replayed)


# --- the checkout page -------------------------------------------------------------------------


def checkout_routes(standin: StripeStandIn) -> APIRouter:
    pages = APIRouter(prefix="/checkout")

    @pages.get("/{id_}", response_class=HTMLResponse)
    async def checkout(id_: str) -> Response:
        if id_ not in standin.sessions:
            return page("Not found", f"<p>No checkout session {html.escape(id_)}.</p>", 404)
        return page("Checkout", checkout_body(standin.session(id_)))

    @pages.post("/{id_}/pay")
    async def pay(id_: str) -> Response:
        if id_ not in standin.sessions:
            return page("Not found", f"<p>No checkout session {html.escape(id_)}.</p>", 404)
        try:
            session = standin.pay(id_)
        except SessionNotOpenError as exc:
            return page("Cannot pay", f"<p>{html.escape(exc.message)}.</p>", 409)
        if not session["success_url"]:
            return page("Paid", "<p>Payment complete.</p>")
        target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", id_)
        return RedirectResponse(target, status_code=303)

    return pages


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><p><em>Stripe stand-in: test mode, no money moves.</em></p>"
        f"{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status)


def checkout_body(session: Json) -> str:
    amount = f'<p class="amount">{html.escape(money(session))}</p>'
    if session["status"] != "open":
        return amount + f"<p>This checkout session is {session['status']}.</p>"
    form = (
        f'<form method="post" action="/checkout/{session["id"]}/pay">'
        '<button type="submit">Pay</button></form>'
    )
    cancel = session["cancel_url"]
    link = f'<p><a href="{html.escape(cancel)}">Cancel</a></p>' if cancel else ""
    return amount + form + link


def money(session: Json) -> str:
    units = f"{session['amount_total'] / 100:,.2f}"
    currency = str(session["currency"]).upper()
    return f"${units}" if currency == "USD" else f"{units} {currency}"


# --- test controls -----------------------------------------------------------------------------


def control_routes(standin: StripeStandIn) -> APIRouter:
    """``/_standin/...``: no authentication, JSON bodies; never expose the stand-in."""
    controls = APIRouter(prefix="/_standin")

    def add(path: str, act: Callable[[str, Json], Json]) -> None:
        async def control(id_: str, request: Request) -> Response:
            return stripe_answer(act(id_, await json_body(request)))

        controls.add_api_route(path, control, methods=["POST"])

    add("/sessions/{id_}/pay", lambda i, b: standin.pay(i, str(b.get("payment_status", "paid"))))
    add("/sessions/{id_}/async", lambda i, b: standin.async_payment(i, flag(b, "succeeded")))
    add("/sessions/{id_}/expire", lambda i, b: standin.expire(i))
    add("/charges/{id_}/dispute", lambda i, b: standin.dispute(i, integer(b, "amount")))
    add("/disputes/{id_}/funds", lambda i, b: standin.dispute_funds(i, flag(b, "withdrawn")))
    add("/disputes/{id_}/close", lambda i, b: standin.close_dispute(i, flag(b, "won")))

    @controls.post("/events")
    async def emit(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body.get("type"), str) or not isinstance(body.get("object"), dict):
            raise StripeRequestError(400, "An event needs a type and an object")
        return stripe_answer(standin.emit(body["type"], body["object"], bool(body.get("livemode"))))

    return controls


async def json_body(request: Request) -> Json:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise StripeRequestError(400, "The body is not JSON") from None
    if not isinstance(body, dict):
        raise StripeRequestError(400, "The body is a JSON object")
    return body


def flag(body: Json, name: str) -> bool:
    if not isinstance(body.get(name), bool):
        raise StripeRequestError(400, f"Missing required boolean: {name}", param=name)
    return bool(body[name])
