"""`gpucloud ledger verify` and `ledger statement`: the auditor's tools. Both read the event
store itself, never a read model, so they answer for what was recorded."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import typer

from domain.ledger_hash import ledger_id_of
from domain.ledger_verify import LedgerStream, Report
from gateways.cli import audit
from gateways.cli.common import DataDir, JsonOut, fail, settings_for
from gateways.cli.output import show
from infra.auditor_reads import ledger_stream, ledger_streams
from infra.bootstrap import build_system

ledger_app = typer.Typer(help="Audit the ledger from the event store.", no_args_is_help=True)
Tenant = Annotated[UUID | None, typer.Option("--tenant", help="One tenant's ledger only.")]


Workers = Annotated[
    int | None,
    typer.Option(
        min=1, max=32, help="Processes reading and checking streams (default: CPUs, at most 4)."
    ),
]


@ledger_app.command("verify")
def verify_command(
    tenant: Tenant = None,
    workers: Workers = None,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Replay every ledger stream: hashes, chain, balances, invariants. Exit 1 on a problem."""
    settings = settings_for(data_dir)
    system = build_system(settings)
    try:
        ids = [ledger_id_of(tenant)] if tenant else list(system.ledgers.ledger_ids())
        if tenant and not ledger_streams(system.ledgers, ids)[0].events:
            fail(f"no ledger for tenant {tenant}: check the tenant id")
        report = audit.verify_all(system.ledgers, settings, ids, workers, json_out)
    finally:
        system.close_write_side()
    _report(report, json_out)
    if not report.ok:
        raise typer.Exit(1)


def _report(report: Report, json_out: bool) -> None:
    balances = [
        {"tenant_id": str(s.tenant_id), "ledger_id": str(s.ledger_id), "events": s.events,
         "posted": s.posted, "held": s.held, "available": s.available}
        for s in report.ledgers
    ]  # fmt: skip
    problem = str(report.first_problem) if report.first_problem else None
    data: dict[str, Any] = {"ok": report.ok, "ledgers": len(report.ledgers)}
    data |= {"events": report.events, "digest": report.digest, "first_problem": problem}
    if json_out:
        sys.stdout.write(json.dumps({**data, "balances": balances}) + "\n")
        return
    show(False, data, None if report.ok else f"[red]{problem}[/]")


@ledger_app.command("statement")
def statement(
    tenant: Annotated[UUID, typer.Option("--tenant", help="Whose ledger.")],
    start: Annotated[str | None, typer.Option("--from", help="Postings from (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Postings until, excluded.")] = None,
    at: Annotated[str | None, typer.Option(help="As the ledger stood then (ISO 8601).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "json",
    data_dir: DataDir = None,
) -> None:
    """Opening balance, postings and closing balance of a period, as recorded at ``--at``."""
    if fmt not in ("csv", "json"):
        fail("--format must be csv or json")
    system = build_system(settings_for(data_dir))
    try:
        stream = ledger_stream(system.ledgers, ledger_id_of(tenant))
    finally:
        system.close_write_side()
    if not stream.events:
        fail(f"tenant {tenant} has no ledger")
    result = build_statement(stream, tenant, _instant(start), _instant(end), _instant(at))
    _print_statement(result, fmt)


def build_statement(
    stream: LedgerStream,
    tenant: UUID,
    start: datetime | None,
    end: datetime | None,
    at: datetime | None,
) -> dict[str, Any]:
    """Replay the stream's postings up to ``at``; sum those before ``start`` as the opening."""
    cash = f"tenant:{tenant}:cash"
    opening, lines = 0, []
    for event in stream.events:
        state = event.state or {}
        when = _time(state.get("at"))
        if "debit_account" not in state or when is None or (at and when > at):
            continue
        delta = _cash_delta(state, cash)
        if end and when >= end:
            continue
        if start and when < start:
            opening += delta
            continue
        line = {"at": when.isoformat(), "kind": state["kind"], "key": state["key"]}
        lines.append({**line, "amount": delta, "version": event.version, "hash": state["hash"]})
    closing = opening + sum(line["amount"] for line in lines)
    return {"tenant_id": str(tenant), "opening": opening, "postings": lines, "closing": closing}


def _instant(text: str | None) -> datetime | None:
    """An ISO 8601 instant; one without an offset is read as UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{text!r} is not an ISO 8601 time, like 2026-11-28T12:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cash_delta(state: Mapping[str, Any], cash: str) -> int:
    if state.get("kind") in ("hold", "void", "expire"):
        return 0  # reservations move no posted money
    amount = int(state["amount"])
    return (amount if state["credit_account"] == cash else 0) - (
        amount if state["debit_account"] == cash else 0
    )


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, dict):  # the store's transcoding of a datetime
        value = value.get("_data_")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _print_statement(result: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(result) + "\n")
        return
    out = csv.writer(sys.stdout)
    out.writerow(["at", "kind", "key", "amount", "version", "hash"])
    out.writerow(["", "opening", "", result["opening"], "", ""])
    for line in result["postings"]:
        out.writerow([line[k] for k in ("at", "kind", "key", "amount", "version", "hash")])
    out.writerow(["", "closing", "", result["closing"], "", ""])
