"""The `gpucloud` command line: process roles, the embedded stack, and ops tools."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from gateways import processes
from gateways.cli import admin, ops
from gateways.cli.catalog import node_app, sku_app
from gateways.cli.common import DataDir, JsonOut, refusals, settings_for
from gateways.cli.ledger import ledger_app
from gateways.cli.payments import payments_app
from gateways.cli.quarantine import quarantine_app
from gateways.cli.quota import quota_app
from gateways.cli.relay import relay_quarantine_app
from infra.observability import setup_logging
from infra.settings import Settings

app = typer.Typer(help="gpucloud: control plane of a GPU rental cloud.", no_args_is_help=True)
relay_app = typer.Typer(help="Run the relay, or republish stored events.")
projections_app = typer.Typer(help="Read models.", no_args_is_help=True)
events_app = typer.Typer(help="Inspect topics.", no_args_is_help=True)
app.add_typer(relay_app, name="relay")
relay_app.add_typer(relay_quarantine_app, name="quarantine")
app.add_typer(projections_app, name="projections")
projections_app.add_typer(quarantine_app, name="quarantine")
app.add_typer(events_app, name="events")
admin_app = typer.Typer(help="Bootstrap tenants and platform keys.", no_args_is_help=True)
admin_tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
admin_key_app = typer.Typer(help="Platform ops keys.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
admin_app.add_typer(admin_tenant_app, name="tenant")
admin_app.add_typer(admin_key_app, name="ops-key")
app.add_typer(node_app, name="node")
app.add_typer(sku_app, name="sku")
app.add_typer(ledger_app, name="ledger")
app.add_typer(quota_app, name="quota")
app.add_typer(payments_app, name="payments")


@app.command()
def up(
    data_dir: DataDir = None,
    api_port: Annotated[int | None, typer.Option(help="API port (default 8000).")] = None,
) -> None:
    """Start the whole system (embedded PostgreSQL and broker unless real ones are named)."""
    from gateways.stack import up as run_up

    s = Settings()
    s = s.with_(data_dir=data_dir or s.data_dir, api_port=api_port or s.api_port)
    setup_logging(s.log_level, "up")
    run_up(s)


@app.command()
def api(data_dir: DataDir = None) -> None:
    """Serve the HTTP API."""
    asyncio.run(processes.serve_api(settings_for(data_dir, "api")))


@relay_app.callback(invoke_without_command=True)
def relay(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Publish stored events to Kafka (one active relay; others wait as hot standby)."""
    if ctx.invoked_subcommand is None:
        asyncio.run(processes.run_relay(settings_for(data_dir, "relay")))


@relay_app.command("republish")
def republish(
    start: Annotated[int, typer.Option("--from", min=1, help="First notification id.")] = 1,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Publish the event log again from notification id N (consumers dedupe)."""
    asyncio.run(ops.republish(settings_for(data_dir, "cli"), start, json_out))


@app.command("stripe-standin")
def stripe_standin(data_dir: DataDir = None) -> None:
    """Run the Stripe stand-in: a DEVELOPMENT AND TEST TOOL (`up` starts it when
    GPUCLOUD_STRIPE_SECRET_KEY is unset). Its checkout page's Pay button completes a payment."""
    asyncio.run(processes.run_stripe_standin(settings_for(data_dir, "stripe-standin")))


@app.command()
def projector(data_dir: DataDir = None) -> None:
    """Run the projections (Kafka -> read models)."""
    asyncio.run(processes.run_projector(settings_for(data_dir, "projector")))


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run the process managers."""
    asyncio.run(processes.run_worker(settings_for(data_dir, "worker")))


@projections_app.command("rebuild")
def rebuild(name: str, data_dir: DataDir = None, json_out: JsonOut = False) -> None:
    """Empty read model NAME and replay it from the event store."""
    asyncio.run(ops.rebuild(settings_for(data_dir, "cli"), name, json_out))


@events_app.command("tail")
def tail(
    topic: str,
    limit: Annotated[int | None, typer.Option(help="Stop after N messages.")] = None,
    idle: Annotated[float, typer.Option(help="Stop after this many quiet seconds.")] = 2.0,
    follow: Annotated[bool, typer.Option("--follow", help="Keep waiting for new ones.")] = False,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Print the messages of TOPIC from the beginning."""
    s = settings_for(data_dir, "cli")
    asyncio.run(ops.tail(s, topic, limit, None if follow else idle, json_out))


@admin_tenant_app.command("create")
def admin_tenant_create(
    name: str,
    owner_email: Annotated[str | None, typer.Option(help="The owner's email.")] = None,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Open a tenant; prints its id and the owner's API key (shown once)."""
    with refusals():
        admin.create_tenant(settings_for(data_dir, "cli"), name, owner_email, json_out)


@admin_key_app.command("create")
def admin_ops_key_create(
    name: Annotated[str, typer.Option(help="What the key is for.")] = "ops",
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Issue a platform ops key; prints it (shown once)."""
    with refusals():
        admin.create_ops_key(settings_for(data_dir, "cli"), name, json_out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
