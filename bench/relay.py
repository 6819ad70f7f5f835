"""Benchmark: the relay draining the event store to Kafka, against raw batched produce.

    .venv/bin/python bench/relay.py [--events 20000] [--batches 500,2000] [--rounds 3]

Real components: PostgreSQL from DATABASE_URL (default: the local server), a fresh schema
dropped at the end, and the broker from KAFKA_BOOTSTRAP_SERVERS or an embedded Tansu.
The baseline sends the very messages the relay would send (same keys, values and headers)
with the relay's own producer settings, all at once, then gathers the acknowledgements.
Each round runs every variant once; the best round counts.
Prints rates and ratios; never asserts a timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Sequence
from uuid import uuid4

import harness  # first: puts the repository root on sys.path
from harness import Stopwatch, console, report

from domain.tenant import Tenant
from gateways.processes import relays_for
from infra.bootstrap import System, build_system, producer_factory
from infra.cloudevents import OutboundMessage, to_message
from infra.settings import Settings
from infra.topics import ensure_topics

SAVE_CHUNK = 1000
BASELINE_TOPIC = "bench.baseline"
BASELINE = "baseline: raw batched produce"


def store(system: System, events: int) -> None:
    """N Tenant.Created events, many aggregates per save (one transaction each)."""
    with harness.progress() as bar:
        task = bar.add_task("storing events", total=events)
        for start in range(0, events, SAVE_CHUNK):
            count = min(SAVE_CHUNK, events - start)
            tenants = [Tenant.register(uuid4(), f"t{start + i}", "h") for i in range(count)]
            system.identity.save(*tenants)
            bar.advance(task, count)


def outbound(system: System, events: int) -> list[OutboundMessage]:
    app = system.identity
    with Stopwatch() as read:
        notes = app.recorder.select_notifications(1, events)
    report("read notifications (PostgreSQL)", len(notes), read.seconds)
    with Stopwatch() as convert:
        messages = [to_message(app.name, app.mapper, n) for n in notes]
    report("to_message (CloudEvents)", len(messages), convert.seconds)
    size = sum(len(m.value) + sum(len(k) + len(v) for k, v in m.headers) for m in messages)
    console.print(f"  average message: {size / len(messages):.0f} bytes (value and headers)")
    return messages


async def baseline(settings: Settings, messages: Sequence[OutboundMessage]) -> float:
    """Raw aiokafka: send every message to another topic, then gather the futures."""
    producer = producer_factory(settings)
    await producer.start()
    try:
        with Stopwatch() as clock:
            futures = [
                await producer.send(BASELINE_TOPIC, value=m.value, key=m.key, headers=m.headers)
                for m in messages
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return clock.seconds


async def drain(system: System, batch: int) -> float:
    """Reset the relay's position to 0 and time publish_pending() until nothing is left."""
    sized = dataclasses.replace(system, settings=system.settings.with_(relay_batch=batch))
    relay = relays_for(sized)[0]
    await relay.positions.reset(0)
    await relay._producer()  # connect (and create topics) outside the timing, as the baseline
    try:
        with Stopwatch() as clock:
            while await relay.publish_pending():
                pass
        assert await relay.lag() == 0
    finally:
        await relay.close()
    return clock.seconds


async def measure(
    system: System, messages: Sequence[OutboundMessage], batches: list[int], rounds: int
) -> dict[str, list[float]]:
    """Each round: the baseline, then the relay at each batch size; interleaved."""
    seconds: dict[str, list[float]] = {BASELINE: []}
    with harness.progress() as bar:
        task = bar.add_task("rounds x variants", total=rounds * (1 + len(batches)))
        for _ in range(rounds):
            seconds[BASELINE].append(await baseline(system.settings, messages))
            bar.advance(task)
            for b in batches:
                seconds.setdefault(f"relay batch={b}", []).append(await drain(system, b))
                bar.advance(task)
    return seconds


async def run(events: int, batches: list[int], rounds: int) -> None:
    url = harness.database_url()
    with harness.fresh_schema(url) as schema, harness.broker() as bootstrap:
        settings = Settings(
            DATABASE_URL=url,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            GPUCLOUD_DB_SCHEMA=schema,
            GPUCLOUD_BROKER_EPOCH=f"bench-{secrets.token_hex(4)}",
        )
        idempotent = settings.kafka_idempotent_producer
        console.print(f"schema {schema}; idempotent producer {idempotent}; best of {rounds}")
        await ensure_topics(bootstrap, [BASELINE_TOPIC], settings.kafka_partitions)
        system = build_system(settings)
        await system.open()
        try:
            with Stopwatch() as saving:
                store(system, events)
            report("store via Identity.save (batched)", events, saving.seconds)
            seconds = await measure(system, outbound(system, events), batches, rounds)
        finally:
            await system.close()
    base = events / min(seconds[BASELINE])
    rates = {label: report(label, events, min(s), base) for label, s in seconds.items()}
    relay = {label: rate for label, rate in rates.items() if label.startswith("relay")}
    best = max(relay, key=relay.__getitem__)
    console.print(
        f"[bold]relay[/] at its best ({best}): {rates[best]:,.0f} events/s, "
        f"{rates[best] / base:.2f}x the raw produce baseline ({base:,.0f} events/s); "
        "target >= 0.4x"
    )


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0], 20_000)
    args.add_argument("--batches", default="500,2000", help="relay batch sizes, comma-separated")
    args.add_argument("--rounds", type=int, default=3, help="rounds; the best counts (3)")
    ns = args.parse_args()
    asyncio.run(run(ns.events, [int(b) for b in ns.batches.split(",")], ns.rounds))


if __name__ == "__main__":
    main()
