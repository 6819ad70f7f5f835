"""Ledgers against real PostgreSQL: racing debits, racing expiry workers, stored-byte tampering.

The racers start together at a barrier, so they really decide against the same ledger
version. They share twenty applications (each its own connection pool, one to two
connections): a hundred pools would pass PostgreSQL's default ``max_connections`` of 100.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from domain.errors import DomainError
from domain.ledger import Ledger
from domain.ledger_hash import ledger_id_of
from domain.ledger_terms import InsufficientFundsError, Receipt
from domain.ledger_verify import verify
from handlers.ledgers import Ledgers
from infra.auditor_reads import ledger_stream
from infra.db import migrate
from infra.eventstore import postgres_env
from infra.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
USD = 1_000_000
APPS = 20
R = TypeVar("R")


@contextmanager
def ledger_apps(settings: Settings, count: int = APPS) -> Iterator[list[Ledgers]]:
    """``count`` applications on one store, opened one by one (each creates its tables)."""
    url = settings.database_url or ""
    migrate(url, settings.db_schema)
    env = {**postgres_env(url, settings.db_schema), "POSTGRES_POOL_SIZE": "1"}
    apps: list[Ledgers] = []
    try:
        for _ in range(count):
            apps.append(Ledgers(env={**env, "POSTGRES_MAX_OVERFLOW": "1"}))
        yield apps
    finally:
        for app in apps:
            app.close()


def race(
    apps: list[Ledgers], racers: int, command: Callable[[Ledgers, int], R]
) -> list[R | DomainError]:
    """Run ``command(app, number)`` in ``racers`` threads released at once by a barrier."""
    barrier = threading.Barrier(racers)

    def racer(number: int) -> R | DomainError:
        barrier.wait(timeout=60)
        try:
            return command(apps[number % len(apps)], number)
        except DomainError as refused:
            return refused

    with ThreadPoolExecutor(max_workers=racers) as pool:
        futures = [pool.submit(racer, number) for number in range(racers)]
        return [future.result(timeout=300) for future in futures]


def test_a_hundred_concurrent_debits_never_take_the_ledger_below_its_floor(
    settings: Settings,
) -> None:
    with ledger_apps(settings) as apps:
        tenant = uuid4()
        apps[0].open(tenant, NOW)
        apps[0].credit(tenant, "pay-1", 50 * USD, NOW)

        outcomes = race(apps, 100, lambda app, n: app.debit(tenant, f"usage-{n}", USD, NOW))

        won = [o for o in outcomes if isinstance(o, Receipt)]
        assert (len(won), sum(o.amount for o in won)) == (50, 50 * USD)
        assert sum(isinstance(o, InsufficientFundsError) for o in outcomes) == 50
        balances = apps[-1].balances(tenant)
        assert (balances.posted, balances.held, balances.available) == (0, 0, 0)
        stream = ledger_stream(apps[0], ledger_id_of(tenant))
        names = [event.name for event in stream.events]
        assert [names.count(n) for n in ("Debited", "PostingRejected", "BalanceDepleted")] == [
            50,
            50,
            1,
        ]
        report = verify([stream])
        assert report.ok, report.first_problem
        assert (report.ledgers[0].posted, report.ledgers[0].available) == (0, 0)


def test_retried_debits_racing_their_own_first_attempt_post_once(settings: Settings) -> None:
    with ledger_apps(settings, 4) as apps:
        tenant = uuid4()
        apps[0].credit(tenant, "pay-1", 10 * USD, NOW)

        outcomes = race(apps, 8, lambda app, n: app.debit(tenant, f"usage-{n % 2}", USD, NOW))

        assert all(isinstance(o, Receipt) for o in outcomes)
        assert len({(o.key, o.version, o.hash) for o in outcomes if isinstance(o, Receipt)}) == 2
        assert apps[0].balances(tenant).posted == 8 * USD


def test_two_expiry_workers_expire_a_hold_once(settings: Settings) -> None:
    with ledger_apps(settings, 2) as apps:
        tenant = uuid4()
        apps[0].credit(tenant, "pay-1", 10 * USD, NOW)
        hold_id = apps[0].hold(tenant, "hold-1", 4 * USD, NOW + timedelta(minutes=5), NOW).hold_id
        due = NOW + timedelta(minutes=5)

        outcomes = race(apps, 6, lambda app, _: app.expire_holds([(tenant, hold_id or "")], due))

        assert sorted(outcomes, key=str) == [0] * 5 + [1]
        names = [event.name for event in ledger_stream(apps[1], ledger_id_of(tenant)).events]
        assert names.count("HoldExpired") == 1
        assert apps[1].balances(tenant).available == 10 * USD


def test_a_process_deciding_on_its_last_save_never_answers_from_stale_state(
    settings: Settings,
) -> None:
    """Each application decides on the ledger as it last saved it; another process moved the
    ledger since. Every answer must still be the one the stored ledger gives."""
    with ledger_apps(settings, 2) as [mine, other]:
        tenant = uuid4()
        mine.credit(tenant, "pay-1", 10 * USD, NOW)  # ``mine`` now holds version 2
        other.debit(tenant, "usage-1", 3 * USD, NOW)

        with pytest.raises(InsufficientFundsError):  # 10 available as ``mine`` saw it, 7 now
            mine.debit(tenant, "usage-2", 8 * USD, NOW)
        hold_id = other.hold(tenant, "hold-1", USD, NOW + timedelta(minutes=1), NOW).hold_id
        # ``mine`` knows no such hold: a refusal that writes nothing is decided again, fresh
        assert mine.expire_holds([(tenant, hold_id or "")], NOW + timedelta(minutes=1)) == 1
        mine.debit(tenant, "usage-3", USD, NOW)
        first = other.debit(tenant, "usage-4", USD, NOW)
        assert mine.debit(tenant, "usage-4", USD, NOW) == replace(first, replayed=True)

        balances = other.balances(tenant)
        assert (balances.posted, balances.held) == (5 * USD, 0)
        names = [event.name for event in ledger_stream(mine, ledger_id_of(tenant)).events]
        assert (names.count("Debited"), names.count("PostingRejected")) == (3, 1)
        assert verify([ledger_stream(mine, ledger_id_of(tenant))]).ok


def test_many_ledgers_loaded_at_once_are_brought_up_to_date_from_memory(
    settings: Settings,
) -> None:
    """Billing preloads ledgers with ``find_many``: it starts from the ledgers as this process
    last saved them and must still see what another process wrote since."""
    with ledger_apps(settings, 2) as [mine, other]:
        tenants = [uuid4() for _ in range(3)]
        for tenant in tenants:
            mine.credit(tenant, "pay-1", 5 * USD, NOW)
        other.debit(tenants[1], "usage-1", 2 * USD, NOW)
        ids = [ledger_id_of(t) for t in tenants]

        loaded = mine.find_many(Ledger, ids)
        loaded[ids[0]].debit("usage-x", USD, NOW)  # a private copy: memory is not touched

        assert [loaded[i].available for i in ids] == [4 * USD, 3 * USD, 5 * USD]
        assert [loaded[i].version for i in ids] == [
            other.ledger(t).version + (n == 0) for n, t in enumerate(tenants)
        ]
        assert mine.find_many(Ledger, ids[:1])[ids[0]].available == 5 * USD


def transactions_of(settings: Settings, tenants: list[UUID]) -> int:
    """How many transactions wrote these tenants' ledger events (distinct xmin)."""
    table = sql.Identifier(settings.db_schema, "ledger_events")
    query = sql.SQL("SELECT count(DISTINCT xmin::text) FROM {} WHERE originator_id = ANY(%s)")
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        row = conn.execute(query.format(table), ([ledger_id_of(t) for t in tenants],)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_of_decisions_over_many_ledgers_commits_once_and_answers_each(
    settings: Settings,
) -> None:
    with ledger_apps(settings, 2) as [app, other]:
        tenants = [uuid4() for _ in range(5)]
        for tenant in tenants:
            app.credit(tenant, "pay-1", 2 * USD, NOW)
        before = transactions_of(settings, tenants)
        stranger = uuid4()  # no ledger

        outcomes = app.decide_many(
            [(t, lambda ledger, n=n: ledger.debit(f"usage-{n}", USD, NOW)) for n, t in
             enumerate(tenants)]
            + [(tenants[0], lambda ledger: ledger.debit("usage-big", 5 * USD, NOW)),
               (stranger, lambda ledger: ledger.debit("usage-x", USD, NOW))]
        )  # fmt: skip

        assert [type(o).__name__ for o in outcomes] == ["Receipt"] * 5 + [
            "InsufficientFundsError",
            "NotFoundError",
        ]
        assert transactions_of(settings, tenants) == before + 1
        assert [other.balances(t).posted for t in tenants] == [USD] * 5
        assert all(verify([ledger_stream(other, ledger_id_of(t))]).ok for t in tenants)


def test_a_batch_decided_on_stale_ledgers_is_decided_again(settings: Settings) -> None:
    with ledger_apps(settings, 2) as [app, other]:
        tenants = [uuid4() for _ in range(3)]
        for tenant in tenants:
            app.credit(tenant, "pay-1", 2 * USD, NOW)
        other.debit(tenants[1], "usage-0", 2 * USD, NOW)  # ``app`` still sees 2 USD there
        hold_id = other.hold(tenants[2], "hold-1", USD, NOW + timedelta(minutes=1), NOW).hold_id
        due = NOW + timedelta(minutes=1)

        expired = app.decide_many(
            [(tenants[0], lambda ledger: ledger.debit("usage-1", USD, NOW)),
             (tenants[2], lambda ledger: ledger.expire(hold_id or "", due))]
        )  # fmt: skip
        debited = app.decide_many(
            [(tenants[0], lambda ledger: ledger.debit("usage-2", USD, NOW)),
             (tenants[1], lambda ledger: ledger.debit("usage-1", USD, NOW))]
        )  # fmt: skip

        # the batch saved tenant 0 and wrote nothing on 2: that answer is decided again, fresh
        assert isinstance(expired[0], Receipt) and expired[1] is True
        # tenant 1 moved: the save fails on its version and the whole batch is decided again
        assert isinstance(debited[0], Receipt) and debited[0].key == "usage-2"
        assert isinstance(debited[1], InsufficientFundsError)
        assert [other.balances(t).available for t in tenants] == [0, 0, 2 * USD]


def flip_a_byte(settings: Settings, ledger_id: UUID, version: int) -> None:
    """Change one byte of one stored event's state, in place in PostgreSQL."""
    table = sql.Identifier(settings.db_schema, "ledger_events")
    query = sql.SQL(
        "UPDATE {} SET state = overlay(state PLACING convert_to(%s, 'UTF8') FROM position("
        "convert_to('\"amount\":', 'UTF8') IN state) + 9 FOR 1) "
        "WHERE originator_id = %s AND originator_version = %s"
    ).format(table)
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        assert conn.execute(query, ("9", ledger_id, version)).rowcount == 1


def test_a_byte_changed_in_postgresql_is_caught_and_named(settings: Settings) -> None:
    with ledger_apps(settings, 1) as [app]:
        tenant = uuid4()
        app.credit(tenant, "pay-1", 5 * USD, NOW)
        app.debit(tenant, "usage-1", 2 * USD, NOW)
        app.debit(tenant, "usage-2", USD, NOW)
        ledger_id = ledger_id_of(tenant)
        assert list(app.ledger_ids()) == [ledger_id]
        assert verify([ledger_stream(app, ledger_id)]).ok

        flip_a_byte(settings, ledger_id, 3)

        problem = verify([ledger_stream(app, ledger_id)]).first_problem
        assert problem is not None and (problem.ledger_id, problem.version) == (ledger_id, 3)
