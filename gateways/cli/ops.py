"""Ops tools behind the CLI: republish, rebuild, tail. Long runs show a progress bar."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress

from gateways.cli.common import err, fail
from gateways.cli.output import show
from gateways.cli.quarantine import projection_named
from gateways.processes import relays_for
from infra.bootstrap import build_system
from infra.cloudevents import to_message
from infra.relay import AdvisoryLock
from infra.settings import Settings
from infra.topics import partition_counts
from projections.envelope import from_record
from projections.isolation import Isolator
from projections.runner import rebuild as forget

console = Console()


async def republish(settings: Settings, start: int, json_out: bool) -> None:
    system = build_system(settings)
    await system.open()
    lock = AdvisoryLock(settings.database_url or "", f"gpucloud.relay.{settings.db_schema}")
    try:
        relays = relays_for(system)
        for relay in relays:
            await relay.positions.reset(start - 1)
        got = await _try_lock(lock)
        if not got:
            show(json_out, {"republish_from": start, "by": "running relay"})
            return
        total = 0
        with Progress(console=err, disable=json_out) as bar:
            for relay in relays:
                todo = await relay.lag()
                task = bar.add_task(f"republishing {relay.app.name}", total=todo)
                while sent := await relay.publish_pending():
                    total += sent
                    bar.advance(task, sent)
                await relay.close()
        show(json_out, {"republish_from": start, "published": total, "by": "this command"})
    finally:
        await lock.release()
        await system.close()


async def _try_lock(lock: AdvisoryLock) -> bool:
    try:
        await asyncio.wait_for(lock.acquire(poll=0.1), timeout=1.0)
        return True
    except TimeoutError:
        return False


async def rebuild(settings: Settings, name: str, json_out: bool) -> None:
    projection = projection_named(name)
    system = build_system(settings)
    await system.open()
    applied = quarantined = 0
    isolator = Isolator(projection, settings.broker_epoch)
    try:
        async with system.pool.connection() as conn:
            await forget(conn, projection)
            for app in system.applications:
                head = await asyncio.to_thread(app.recorder.max_notification_id) or 0
                with Progress(console=err, disable=json_out) as bar:
                    task = bar.add_task(f"replaying {app.name}", total=head)
                    position = 0
                    while notes := await asyncio.to_thread(
                        app.recorder.select_notifications, position + 1, 1000
                    ):
                        batch = [_envelope(app.name, app.mapper, n) for n in notes]
                        ours = [e for e in batch if e.topic in projection.topics]
                        tally = await isolator.apply(conn, ours)
                        applied, quarantined = (
                            applied + tally.applied,
                            quarantined + tally.quarantined,
                        )
                        position = notes[-1].id
                        bar.update(task, completed=position)
    finally:
        await system.close()
    show(json_out, {"projection": name, "applied": applied, "quarantined": quarantined})


def _envelope(context: str, mapper: Any, note: Any) -> Any:
    msg = to_message(context, mapper, note)
    return from_record(msg.topic, -1, -1, dict(msg.headers), msg.value)


async def tail(
    settings: Settings, topic: str, limit: int | None, idle: float | None, json_out: bool
) -> None:
    bootstrap = settings.kafka_bootstrap_servers or ""
    count = (await partition_counts(bootstrap, [topic]))[topic]
    if count == 0:
        fail(f"topic {topic!r} does not exist; `gpucloud up` creates the system's topics")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(count)])
    seen = 0
    try:
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=int((idle or 1.0) * 1000))
            if not batch and idle is not None:
                break
            for records in batch.values():
                for r in records:
                    _print_record(r, json_out)
                    seen += 1
    finally:
        await consumer.stop()


def _print_record(r: Any, json_out: bool) -> None:
    headers = {k: v.decode(errors="replace") for k, v in r.headers}
    row = {"partition": r.partition, "offset": r.offset, "key": (r.key or b"").decode()}
    row |= {"headers": headers, "value": (r.value or b"").decode(errors="replace")}
    if json_out:
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
        return
    console.print(f"[bold]{r.partition}@{r.offset}[/] {headers.get('ce_type')} {row['value']}")
