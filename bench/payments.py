"""Benchmark: the Stripe webhook, against the same FastAPI process answering an unsigned 2xx.

    .venv/bin/python bench/payments.py [--events 2000] [--concurrency 16] [--credits 40]

Real components: PostgreSQL from DATABASE_URL (default: the local server), a fresh schema
dropped at the end, the broker from KAFKA_BOOTSTRAP_SERVERS or an embedded Tansu, the API on a
real socket (uvicorn, in a thread of its own). The baseline is a route added to that very app
that reads the body and answers 200: the difference is the signature check, the inbox INSERT and
the route's own work. Then, with the relay, projector and worker running: the time from a
webhook to its credit visible in ``GET /v1/ledger`` (p50, p99). Prints rates, latencies and
ratios; never asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import harness  # first: puts the repository root on sys.path
import httpx
import uvicorn
from fastapi import Request
from harness import console, report
from stripe import WebhookSignature

from domain.payment import MICROS_PER_CENT
from gateways import processes
from gateways.http.app import create_app
from infra.bootstrap import build_system
from infra.embedded import free_port
from infra.settings import Settings

SECRET = "whsec_bench"
CENTS = 500


def event(kind: str, obj: dict[str, object], serial: int) -> bytes:
    body = {
        "id": f"evt_bench_{serial}_{time.monotonic_ns()}", "object": "event", "type": kind,
        "created": int(time.time()), "livemode": False, "data": {"object": obj},
    }  # fmt: skip
    return json.dumps(body).encode()


def serve(settings: Settings, roles: bool) -> tuple[str, Callable[[], None]]:
    """The API (and the relay, projector and worker when ``roles``) on a loop in a thread."""
    port, stop = free_port(), threading.Event()
    started = threading.Event()

    async def main() -> None:
        app = create_app(build_system(settings))

        async def unsigned(request: Request) -> dict[str, bool]:
            await request.body()
            return {"received": True}

        app.add_api_route("/bench/noop", unsigned, methods=["POST"])
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, access_log=False))
        halt = asyncio.Event()
        tasks = [asyncio.create_task(server.serve())]
        if roles:
            runs = (processes.run_relay, processes.run_projector, processes.run_worker)
            tasks += [asyncio.create_task(run(settings, halt)) for run in runs]
        while not server.started:
            await asyncio.sleep(0.02)
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        halt.set()
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    started.wait(60)

    def close() -> None:
        stop.set()
        thread.join(30)

    return f"http://127.0.0.1:{port}", close


async def hammer(
    url: str, path: str, bodies: list[bytes], concurrency: int, signed: bool
) -> tuple[float, list[float]]:
    """Send every body, ``concurrency`` at a time; the elapsed time and each latency."""
    latencies: list[float] = []
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency)

    async def one(http: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            headers = {"Content-Type": "application/json"}
            if signed:
                sig = WebhookSignature.generate_signature_header(body.decode(), SECRET)
                headers["Stripe-Signature"] = sig
            began = time.perf_counter()
            answer = await http.post(path, content=body, headers=headers)
            latencies.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        began = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(concurrency)))
        return time.perf_counter() - began, latencies


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def acknowledgements(settings: Settings, events: int, concurrency: int) -> None:
    url, close = serve(settings.with_(rate_limit_per_second=0), roles=False)
    try:
        bodies = [event("customer.created", {"id": f"cus_{n}"}, n) for n in range(events)]
        base_s, base_lat = asyncio.run(hammer(url, "/bench/noop", bodies, concurrency, False))
        hook_s, hook_lat = asyncio.run(
            hammer(url, "/v1/webhooks/stripe", bodies, concurrency, True)
        )
    finally:
        close()
    console.print(f"webhook acknowledgements, {concurrency} clients at a time:")
    baseline = report("baseline: unsigned 2xx, same app", events, base_s)
    report("verified + stored webhook", events, hook_s, baseline)
    for label, lat in (("baseline", base_lat), ("webhook", hook_lat)):
        console.print(
            f"  {label:<10} latency p50 {p(lat, 0.5):6.1f} ms  p99 {p(lat, 0.99):6.1f} ms"
        )
    console.print(f"  p99 ratio {p(hook_lat, 0.99) / p(base_lat, 0.99):.2f}x baseline")


def credits(settings: Settings, count: int) -> None:
    """Webhook to credit visible in GET /v1/ledger, one payment at a time."""
    url, close = serve(settings.with_(payments_poll_seconds=0.02), roles=True)
    system = build_system(settings)
    waits: list[float] = []
    try:
        for n in range(count):
            now = datetime.now(UTC)
            opened = system.identity.create_tenant(f"bench-{n}", None, now)
            assert opened.key is not None
            written = system.payments.checkout(opened.tenant.id, "k", CENTS * MICROS_PER_CENT, now)
            session = f"cs_bench_{n}_{time.monotonic_ns()}"
            system.payments.attach_session(written.id, session, "https://pay", now, now)
            obj = {
                "id": session, "amount_total": CENTS, "payment_status": "paid",
                "payment_intent": f"pi_{session}", "metadata": {"payment_id": str(written.id)},
            }  # fmt: skip
            body = event("checkout.session.completed", obj, n)
            waits.append(asyncio.run(_until_credited(url, body, opened.key.token)))
    finally:
        system.close_write_side()
        close()
    console.print(f"webhook to credit in GET /v1/ledger ({count} payments, one at a time):")
    console.print(
        f"  p50 {statistics.median(waits) * 1000:6.1f} ms  p99 {p(waits, 0.99):6.1f} ms  "
        f"max {max(waits) * 1000:6.1f} ms"
    )


async def _until_credited(url: str, body: bytes, key: str) -> float:
    sig = WebhookSignature.generate_signature_header(body.decode(), SECRET)
    headers = {"Content-Type": "application/json", "Stripe-Signature": sig}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        began = time.perf_counter()
        assert (await http.post("/v1/webhooks/stripe", content=body, headers=headers)).is_success
        while True:
            seen = await http.get("/v1/ledger", headers={"Authorization": f"Bearer {key}"})
            if seen.status_code == 200 and seen.json()["posted"] == CENTS * MICROS_PER_CENT:
                return time.perf_counter() - began
            await asyncio.sleep(0.005)


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0], 2000)
    args.add_argument("--concurrency", type=int, default=16)
    args.add_argument("--credits", type=int, default=40, help="payments timed to their credit")
    ns = args.parse_args()
    url = harness.database_url()
    with harness.fresh_schema(url) as schema, harness.broker() as bootstrap:
        settings = Settings(
            DATABASE_URL=url, GPUCLOUD_DB_SCHEMA=schema, KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            GPUCLOUD_BROKER_EPOCH=f"bench-{schema}", GPUCLOUD_STRIPE_WEBHOOK_SECRETS=SECRET,
            GPUCLOUD_RELAY_POLL_SECONDS=0.01,
        )  # fmt: skip
        build_system(settings).close_write_side()  # migrate once, before the threads race
        acknowledgements(settings, ns.events, ns.concurrency)
        credits(settings, ns.credits)


if __name__ == "__main__":
    main()
