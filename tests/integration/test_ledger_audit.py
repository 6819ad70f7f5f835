"""The auditor's tools against real PostgreSQL: verify, tampering, statements in the past."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import psycopg
import pytest

from domain.ledger_hash import ledger_id_of
from infra.bootstrap import build_system
from infra.settings import Settings
from tests.support import gpucloud

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def book(settings: Settings) -> UUID:
    """A tenant's ledger: 10 credited, 3 debited, a hold of 2 captured as 1, day by day."""
    tenant = uuid4()
    system = build_system(settings)
    try:
        ledgers = system.ledgers
        ledgers.credit(tenant, "pay-1", 10_000_000, T0)
        ledgers.debit(tenant, "use-1", 3_000_000, T0 + timedelta(days=1))
        hold = ledgers.hold(
            tenant, "hold-1", 2_000_000, T0 + timedelta(days=9), T0 + timedelta(days=2)
        )
        assert hold.hold_id is not None
        ledgers.capture(tenant, "cap-1", hold.hold_id, 1_000_000, T0 + timedelta(days=3))
    finally:
        system.close_write_side()
    return tenant


def test_verify_passes_on_an_honest_ledger_and_prints_balances(settings: Settings) -> None:
    tenant = book(settings)
    answer = gpucloud(settings, "ledger", "verify", "--json")
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    [ledger] = [b for b in report["balances"] if b["tenant_id"] == str(tenant)]
    assert (ledger["posted"], ledger["held"], ledger["available"]) == (6_000_000, 0, 6_000_000)
    assert report["ok"] and len(report["digest"]) == 64


def stored(settings: Settings, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute(f"SET search_path TO {settings.db_schema}")
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_one_changed_byte_fails_verify_and_names_the_event(settings: Settings) -> None:
    book(settings)
    stored(
        settings,
        "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
        "'3000000', '3000001'), 'UTF8') WHERE originator_version = 3",
    )
    answer = gpucloud(settings, "ledger", "verify", "--json")
    assert answer.returncode == 1
    assert "event 3" in json.loads(answer.stdout)["first_problem"]


def test_a_deleted_event_in_the_middle_fails_verify(settings: Settings) -> None:
    tenant = book(settings)
    stored(settings, "DELETE FROM ledger_events WHERE originator_version = 2")
    answer = gpucloud(settings, "ledger", "verify", "--tenant", str(tenant), "--json")
    assert answer.returncode == 1
    assert json.loads(answer.stdout)["ok"] is False


def test_a_statement_gives_the_balance_as_it_stood_at_an_instant(settings: Settings) -> None:
    tenant = book(settings)
    at = (T0 + timedelta(days=1, hours=12)).isoformat()
    then = gpucloud(settings, "ledger", "statement", "--tenant", str(tenant), "--at", at)
    period = gpucloud(
        settings, "ledger", "statement", "--tenant", str(tenant), "--format", "csv",
        "--from", (T0 + timedelta(days=1)).isoformat(),
    )  # fmt: skip
    assert then.returncode == 0, then.stderr
    assert json.loads(then.stdout)["closing"] == 7_000_000  # credited 10, debited 3
    rows = period.stdout.strip().splitlines()
    assert rows[1].endswith(",opening,,10000000,,") and rows[-1].endswith(",closing,,6000000,,")


def test_verify_of_an_unknown_tenant_is_a_clear_error(settings: Settings) -> None:
    answer = gpucloud(settings, "ledger", "verify", "--tenant", str(uuid4()))
    assert answer.returncode == 2 and "check the tenant id" in answer.stderr


def many_ledgers(settings: Settings, count: int) -> list[UUID]:
    """``count`` tenants' ledgers with a few postings each, saved in bulk."""
    from domain.ledger import Ledger

    tenants = [uuid4() for _ in range(count)]
    system = build_system(settings)
    try:
        for start in range(0, count, 50):
            group = [Ledger.open(t, T0) for t in tenants[start : start + 50]]
            for ledger in group:
                ledger.credit("pay-1", 5_000_000, T0)
                ledger.debit("use-1", 1_234_567, T0 + timedelta(hours=1))
            system.ledgers.save(*group)
    finally:
        system.close_write_side()
    return tenants


def test_worker_processes_give_the_same_report_and_catch_a_change(settings: Settings) -> None:
    tenants = many_ledgers(settings, 130)  # three batches
    alone = gpucloud(settings, "ledger", "verify", "--workers", "1", "--json")
    parallel = gpucloud(settings, "ledger", "verify", "--workers", "2", "--json")
    assert alone.returncode == parallel.returncode == 0, parallel.stderr
    one, two = json.loads(alone.stdout), json.loads(parallel.stdout)
    assert (two["ledgers"], two["events"]) == (130, 390)
    assert two["digest"] == one["digest"] and two["balances"] == one["balances"]

    stored(
        settings,
        "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
        "'1234567', '1234568'), 'UTF8') WHERE originator_version = 3 AND originator_id = %s",
        ledger_id_of(tenants[120]),  # in the third batch, checked by a worker
    )
    tampered = gpucloud(settings, "ledger", "verify", "--workers", "2", "--json")
    assert tampered.returncode == 1
    problem = json.loads(tampered.stdout)["first_problem"]
    assert "event 3" in problem and str(ledger_id_of(tenants[120])) in problem
