"""`gpucloud projections quarantine`: the events projections could not apply.

``list`` shows them (the open ones, or ``--all``); ``replay NAME`` applies a projection's open
ones again after a fix, each subject's in order; ``discard ID...`` gives up on some (their
subject's held events can then be replayed). Exit status 1 when something is still failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer
from psycopg import AsyncConnection
from rich.table import Table

from gateways.cli.common import DataDir, JsonOut, fail, settings_for
from gateways.cli.output import console, show
from gateways.projector import PROJECTIONS
from infra.db import async_pool, migrate
from infra.settings import Settings
from projections import isolation, quarantine
from projections.runner import Projection

quarantine_app = typer.Typer(
    help="Events the projections could not apply: list, replay, discard.", no_args_is_help=True
)
Ids = Annotated[list[int] | None, typer.Option("--id", help="Only this quarantine id (repeat).")]


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[AsyncConnection[Any]]:
    url = settings.database_url or ""
    migrate(url, settings.db_schema)
    pool = async_pool(url, settings.db_schema, size=1)
    await pool.open()
    try:
        async with pool.connection() as conn:
            yield conn
    finally:
        await pool.close()


def projection_named(name: str) -> Projection:
    found = next((p for p in PROJECTIONS if p.name == name), None)
    if found is None:
        fail(f"no projection named {name!r}; known: {', '.join(p.name for p in PROJECTIONS)}")
    return found


@quarantine_app.command("list")
def list_quarantined(
    projection: Annotated[str | None, typer.Option(help="Only this projection.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """The quarantined events, oldest first."""

    async def run() -> list[dict[str, Any]]:
        async with _connection(settings_for(data_dir)) as conn:
            return await quarantine.listing(conn, projection, every)

    rows = asyncio.run(run())
    if json_out:
        show(True, {"quarantined": rows})
        return
    table = Table("id", "projection", "event", "subject@seq", "error", "state")
    for r in rows:
        state = r["resolution"] or ("held" if r["held"] else "failed")
        where = (
            f"{r['subject']}@{r['sequence']}"
            if r["subject"]
            else f"{r['topic']}@{r['kafka_offset']}"
        )
        table.add_row(str(r["id"]), r["projection"], r["ce_type"] or "-", where, r["error"], state)
    console.print(table if rows else "nothing in quarantine")


@quarantine_app.command("replay")
def replay(name: str, ids: Ids = None, data_dir: DataDir = None, json_out: JsonOut = False) -> None:
    """Apply projection NAME's quarantined events again (after the fix is deployed)."""
    projection = projection_named(name)

    async def run() -> isolation.Replayed:
        async with _connection(settings_for(data_dir)) as conn:
            return await isolation.replay(conn, projection, ids)

    done = asyncio.run(run())
    show(
        json_out,
        {"projection": name, "replayed": done.replayed, "still_failing": done.still_failing},
    )
    if done.still_failing:
        raise typer.Exit(1)


@quarantine_app.command("discard")
def discard(
    ids: Annotated[list[int], typer.Argument(help="Quarantine ids.")],
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Give up on these quarantined events (the read model will miss what they changed)."""

    async def run() -> int:
        async with _connection(settings_for(data_dir)) as conn:
            return await isolation.discard(conn, ids)

    show(json_out, {"discarded": asyncio.run(run())})
