"""`gpucloud relay quarantine`: the stored events the relay could not publish.

``list`` shows them (the open ones, or ``--all``); ``retry [ID...]`` publishes them again after
a fix, each aggregate's in sequence (an id stands for its aggregate's kept events; none: every
open one); ``discard ID...`` gives up on some, recording who (``--by``) and when (an
aggregate's held events then still wait for a retry). Exit status 1 when something still fails.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated, Any

import typer
from psycopg_pool import AsyncConnectionPool
from rich.table import Table

from gateways.cli.common import DataDir, JsonOut, settings_for
from gateways.cli.output import console, show
from infra import relay_retry
from infra.bootstrap import build_system, producer_factory
from infra.db import async_pool, migrate
from infra.messages import topics
from infra.settings import Settings
from infra.topics import ensure_topics

relay_quarantine_app = typer.Typer(
    help="Stored events the relay could not publish: list, retry, discard.",
    no_args_is_help=True,
)
By = Annotated[str, typer.Option("--by", help="Who decides (recorded); default: you.")]


async def _with_pool(settings: Settings, work: Any) -> Any:
    url = settings.database_url or ""
    migrate(url, settings.db_schema)
    pool = async_pool(url, settings.db_schema, size=1)
    await pool.open()
    try:
        return await work(pool)
    finally:
        await pool.close()


@relay_quarantine_app.command("list")
def list_kept(
    every: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """The kept events, oldest first."""

    async def listing(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            return await relay_retry.listing(conn, every)

    rows = asyncio.run(_with_pool(settings_for(data_dir), listing))
    if json_out:
        show(True, {"quarantined": rows})
        return
    table = Table("id", "context", "position", "subject@seq", "event", "error", "state")
    for r in rows:
        state = r["resolution"] or ("held" if r["held"] else "failed")
        where = f"{r['subject']}@{r['sequence']}"
        cells = (r["context"], str(r["notification_id"]), where, r["event_type"], r["error"] or "-")
        table.add_row(str(r["id"]), *cells, state)
    console.print(table if rows else "nothing in quarantine")


@relay_quarantine_app.command("retry")
def retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Quarantine ids (none: all).")] = None,
    by: By = "",
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Publish kept events again (after the fix is deployed), each aggregate's in order."""
    done = asyncio.run(_retry(settings_for(data_dir), ids or None, by or getpass.getuser()))
    show(json_out, {"published": done.published, "still_failing": done.still_failing})
    if done.still_failing:
        raise typer.Exit(1)


async def _retry(settings: Settings, ids: list[int] | None, by: str) -> relay_retry.Retried:
    system = build_system(settings)
    await system.open()
    await ensure_topics(settings.kafka_bootstrap_servers or "", topics(), settings.kafka_partitions)
    producer = producer_factory(settings)
    await producer.start()
    try:
        apps = {app.name: app for app in system.applications}
        return await relay_retry.retry(system.pool, apps, producer, ids, by)
    finally:
        await producer.stop()
        await system.close()


@relay_quarantine_app.command("discard")
def discard(
    ids: Annotated[list[int], typer.Argument(help="Quarantine ids.")],
    by: By = "",
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Give up on these kept events: no consumer will see them."""
    who = by or getpass.getuser()

    async def discarding(pool: AsyncConnectionPool) -> int:
        return await relay_retry.discard(pool, ids, who)

    show(json_out, {"discarded": asyncio.run(_with_pool(settings_for(data_dir), discarding))})
