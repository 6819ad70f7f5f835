"""`gpucloud payments ...`: ops tools for the payments context."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from gateways.cli.common import DataDir, JsonOut, fail, settings_for
from gateways.cli.output import show
from infra.bootstrap import build_system
from infra.settings import Settings
from infra.stripe_api import PaymentProviderError
from workers.payment_reconcile import Reconciliation, reconcile

payments_app = typer.Typer(help="Payments: Stripe top-ups.", no_args_is_help=True)
err = Console(stderr=True)


@payments_app.command("reconcile")
def reconcile_command(
    since: Annotated[
        str,
        typer.Option(help="Stripe events created at or after this (ISO 8601; no zone: UTC)."),
    ],
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Apply Stripe events the webhook missed and report drift; exit 1 when there is any."""
    settings = settings_for(data_dir)
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        fail(f"--since {since!r} is not an ISO 8601 time, like 2026-12-01T00:00:00Z")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        found = asyncio.run(_run(settings, moment, json_out))
    except PaymentProviderError as down:
        fail(f"{down}: check GPUCLOUD_STRIPE_SECRET_KEY and GPUCLOUD_STRIPE_API_BASE")
    show(json_out, found.as_dict(), _note(found))
    if found.drift:
        raise typer.Exit(1)


async def _run(settings: Settings, since: datetime, quiet: bool) -> Reconciliation:
    system = build_system(settings)
    await system.open()
    try:
        with Progress(console=err, disable=quiet) as bar:
            task = bar.add_task("Stripe events", total=None)
            return await reconcile(system, since, lambda n: bar.advance(task, n))
    finally:
        await system.close()


def _note(found: Reconciliation) -> str:
    if found.drift:
        return f"{len(found.drift)} drift(s) to look into; {found.missed} missed event(s) applied"
    return f"no drift; {found.missed} missed event(s) applied"
