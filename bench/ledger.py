"""Benchmark: ledger postings through the Ledgers application, and `ledger verify`.

    .venv/bin/python bench/ledger.py [--postings 3000] [--tenants 200] [--rounds 3]
                                     [--events 100000] [--ledgers 200]

Real PostgreSQL from DATABASE_URL (default: the local server), fresh schemas migrated with
infra.db.migrate and dropped at the end. The baseline inserts one row shaped like a posting
per statement (autocommit) from one client. The application variants debit tenants opened
and funded beforehand (untimed), round-robin over ``--tenants`` of them so that each stream
stays short: one writer (``Ledgers.debit``, a transaction per posting); four threads with an
application each, on distinct tenants; batched (``Ledgers.decide_many``: a debit on each
tenant's ledger, all of them in one transaction). Each round runs every variant once, on
fresh tenants, interleaved; the best round counts. Then a history of ``--events`` events
over ``--ledgers`` ledgers is stored with batched saves, and read and verified as
`gpucloud ledger verify` does.
Prints rates and ratios; never asserts a timing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

import harness  # first: puts the repository root on sys.path
import psycopg
from harness import Stopwatch, console

from domain.ledger import Ledger
from domain.ledger_hash import REVENUE, cash_account, ledger_id_of
from domain.ledger_terms import Receipt
from domain.ledger_verify import LedgerStream, verify
from gateways.cli.audit import verify_all
from handlers.ledgers import Ledgers
from infra.auditor_reads import ledger_stream
from infra.db import conninfo, migrate
from infra.eventstore import open_app
from infra.settings import Settings

BASELINE = "baseline: raw single-row commits"
ONE_WRITER = "Ledgers.debit, 1 writer"
FOUR_WRITERS = "Ledgers.debit, 4 writers"
BATCHED = "decide_many, batched"
WRITERS = 4
FUNDS = 10**15  # the most one credit may carry: no debit here comes near the floor
SAVE_EVENTS = 2_000  # at most, in one save: at 8,000 the pipelined insert hung (psycopg 3.3)
POSTINGS_GOAL = 3_000
RATIO_GOAL = 0.5
VERIFY_GOAL = 50_000
NOW = datetime.now(UTC)
PLAIN = """CREATE TABLE plain_postings (
    id bigserial PRIMARY KEY, ledger_id uuid NOT NULL, key text NOT NULL, kind text NOT NULL,
    amount bigint NOT NULL, debit_account text NOT NULL, credit_account text NOT NULL,
    at timestamptz NOT NULL, UNIQUE (ledger_id, key))"""
INSERT = """INSERT INTO plain_postings
    (ledger_id, key, kind, amount, debit_account, credit_account, at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)"""
Variant = Callable[[list[UUID], int, str], float]


def rate_line(label: str, count: int, seconds: float, unit: str, base: float | None) -> float:
    """Print one result line (as harness.report, in the given unit); returns the rate."""
    rate = count / seconds if seconds > 0 else float("inf")
    ratio = f"  {rate / base:5.2f}x baseline" if base else ""
    console.print(f"  {label:<34} {count:>7} in {seconds:6.2f}s = {rate:>9,.0f} {unit}/s{ratio}")
    return rate


class Bench:
    """The variants on one schema: each ``(tenants, postings, tag)`` -> seconds taken."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.setup = self.app()

    def app(self) -> Ledgers:
        return open_app(Ledgers, self.url, self.schema)

    def funded(self, count: int) -> list[UUID]:
        """``count`` new tenants, each with an open ledger and one big credit: one save."""
        tenants = [uuid4() for _ in range(count)]
        ledgers = [Ledger.open(t, NOW) for t in tenants]
        for ledger in ledgers:
            ledger.credit("fund", FUNDS, NOW)
        self.setup.save(*ledgers)
        return tenants

    def check(self, label: str, tenants: list[UUID], postings: int) -> None:
        """Every posting landed once: the tenants' balances went down by ``postings``."""
        if label == BASELINE:
            return
        spent = sum(FUNDS - self.setup.ledger(t).posted for t in tenants)
        if spent != postings:
            console.print(f"[red]  {label}: {spent} postings stored, not {postings}[/]")

    def baseline(self, tenants: list[UUID], postings: int, tag: str) -> float:
        """One client, autocommit, one INSERT per posting (the rows built beforehand)."""
        rows = []
        for i in range(postings):
            tenant = tenants[i % len(tenants)]
            rows.append((ledger_id_of(tenant), f"{tag}-{i}", "debit", 1, cash_account(tenant)))
        conn = psycopg.connect(conninfo(self.url, self.schema), autocommit=True)
        with conn, Stopwatch() as clock:
            for row in rows:
                conn.execute(INSERT, (*row, REVENUE, NOW))
        return clock.seconds

    def one_writer(self, tenants: list[UUID], postings: int, tag: str) -> float:
        app = self.app()
        try:
            with Stopwatch() as clock:
                debit_round_robin(app, tenants, postings, tag)
        finally:
            app.close()
        return clock.seconds

    def four_writers(self, tenants: list[UUID], postings: int, tag: str) -> float:
        """WRITERS threads, an application each, each on its own share of the tenants."""
        apps = [self.app() for _ in range(WRITERS)]
        try:
            with ThreadPoolExecutor(WRITERS) as pool, Stopwatch() as clock:
                futures = [
                    pool.submit(
                        debit_round_robin, app, tenants[w::WRITERS], postings // WRITERS, tag
                    )
                    for w, app in enumerate(apps)
                ]
                for future in futures:
                    future.result()
        finally:
            for app in apps:
                app.close()
        return clock.seconds

    def batched(self, tenants: list[UUID], postings: int, tag: str) -> float:
        """``Ledgers.decide_many``: a debit on every tenant's ledger, one transaction each
        round over the tenants (ledgers read once, in two queries, then kept in memory)."""
        app = self.app()
        done = 0
        try:
            with Stopwatch() as clock:
                while done < postings:
                    chosen = tenants[: postings - done]
                    outcomes = app.decide_many(
                        [(t, partial(debit_one, key=f"{tag}-{done + i}"))
                         for i, t in enumerate(chosen)]
                    )  # fmt: skip
                    assert all(isinstance(o, Receipt) for o in outcomes), outcomes[:3]
                    done += len(chosen)
        finally:
            app.close()
        return clock.seconds


def debit_one(ledger: Ledger, key: str) -> Receipt:
    return ledger.debit(key, 1, NOW)


def debit_round_robin(app: Ledgers, tenants: list[UUID], postings: int, tag: str) -> None:
    """``postings`` debits of 1, one ``Ledgers.debit`` (one transaction) each."""
    for i in range(postings):
        app.debit(tenants[i % len(tenants)], f"{tag}-{i}", 1, NOW)


def measure(bench: Bench, postings: int, tenants: int, rounds: int) -> dict[str, list[float]]:
    """Each round: the baseline, then every application variant, each on fresh tenants."""
    variants: dict[str, tuple[Variant, int]] = {
        BASELINE: (bench.baseline, postings),
        ONE_WRITER: (bench.one_writer, postings),
        FOUR_WRITERS: (bench.four_writers, postings // WRITERS * WRITERS),
        f"{BATCHED} ({tenants} ledgers/txn)": (bench.batched, postings),
    }
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    with harness.progress() as bar:
        task = bar.add_task("rounds x variants", total=rounds * len(variants))
        for r in range(rounds):
            for label, (variant, count) in variants.items():
                chosen = bench.funded(tenants)
                seconds[label].append(variant(chosen, count, f"r{r}"))
                bench.check(label, chosen, count)
                bar.advance(task)
    return seconds


def store_history(app: Ledgers, ledgers: int, per_ledger: int) -> None:
    """``ledgers`` ledgers of ``per_ledger`` events (Opened, Credited, then Debited ones),
    decided in memory and saved at most SAVE_EVENTS events to a transaction."""
    with harness.progress() as bar:
        task = bar.add_task("storing ledger history", total=ledgers)
        chunk = max(1, SAVE_EVENTS // per_ledger)
        for start in range(0, ledgers, chunk):
            group = [Ledger.open(uuid4(), NOW) for _ in range(min(chunk, ledgers - start))]
            for ledger in group:
                ledger.credit("fund", FUNDS, NOW)
                for k in range(per_ledger - 2):
                    ledger.debit(f"d{k}", 1, NOW)
            app.save(*group)
            bar.advance(task, len(group))


def audit(app: Ledgers, events: int, rounds: int) -> dict[str, float]:
    """Best of ``rounds``: read every stream (``ledger_ids`` then ``stream``), then verify
    the streams read, in memory; the two are timed apart."""
    best = {"read": float("inf"), "verify": float("inf")}
    with harness.progress() as bar:
        task = bar.add_task("reading and verifying", total=rounds)
        for _ in range(rounds):
            with Stopwatch() as reading:
                streams: list[LedgerStream] = [ledger_stream(app, i) for i in app.ledger_ids()]
            with Stopwatch() as checking:
                report = verify(streams)
            if not report.ok or report.events != events:
                console.print(f"[red]  verify: {report.events} events, {report.first_problem}[/]")
            for key, clock in (("read", reading), ("verify", checking)):
                best[key] = min(best[key], clock.seconds)
            bar.advance(task)
    return best


def audit_as_cli(
    app: Ledgers, url: str, schema: str, events: int, rounds: int, workers: int
) -> float:
    """Best of ``rounds``: what `gpucloud ledger verify --workers N` does (batched stream
    reads, worker processes), timed whole: start of the workers included."""
    settings = Settings(DATABASE_URL=url, GPUCLOUD_DB_SCHEMA=schema)
    ids, best = list(app.ledger_ids()), float("inf")
    for _ in range(rounds):
        with Stopwatch() as clock:
            report = verify_all(app, settings, ids, workers, quiet=True)
        if not report.ok or report.events != events:
            console.print(f"[red]  verify: {report.events} events, {report.first_problem}[/]")
        best = min(best, clock.seconds)
    return best


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def postings_section(url: str, postings: int, tenants: int, rounds: int) -> dict[str, float]:
    with harness.fresh_schema(url) as schema:
        migrate(url, schema)
        console.print(
            f"schema {schema}: {postings} postings round-robin over {tenants} tenants, "
            f"{WRITERS} writers for the threaded variant, best of {rounds}"
        )
        with psycopg.connect(conninfo(url, schema), autocommit=True) as conn:
            conn.execute(PLAIN)
        bench = Bench(url, schema)
        try:
            seconds = measure(bench, postings, tenants, rounds)
        finally:
            bench.setup.close()
    counts = {label: postings for label in seconds}
    counts[FOUR_WRITERS] = postings // WRITERS * WRITERS
    base = counts[BASELINE] / min(seconds[BASELINE])
    return {
        label: rate_line(
            label, counts[label], min(s), "postings", None if label == BASELINE else base
        )
        for label, s in seconds.items()
    }


def verify_section(url: str, events: int, ledgers: int, rounds: int) -> dict[str, float]:
    per_ledger = max(2, events // ledgers)
    total = per_ledger * ledgers
    with harness.fresh_schema(url) as schema:
        migrate(url, schema)
        console.print(
            f"schema {schema}: {ledgers} ledgers x {per_ledger} events = {total}, best of {rounds}"
        )
        app = open_app(Ledgers, url, schema)
        try:
            with Stopwatch() as storing:
                store_history(app, ledgers, per_ledger)
            rate_line("store history (batched saves)", total, storing.seconds, "events", None)
            best = audit(app, total, rounds)
            cli = {w: audit_as_cli(app, url, schema, total, rounds, w) for w in (1, 2)}
        finally:
            app.close()
    for workers, seconds in cli.items():
        rate_line(
            f"`ledger verify` path, {workers} process(es): batched reads + verify",
            total, seconds, "events", None,
        )  # fmt: skip
    return {
        "verify (CLI)": total / min(cli.values()),
        "read + verify": rate_line(
            "a query per ledger (`stream`) + verify()",
            total,
            best["read"] + best["verify"],
            "events",
            None,
        ),
        "read": rate_line("  of which the reads", total, best["read"], "events", None),
        "verify": rate_line(
            "verify() alone, streams in memory", total, best["verify"], "events", None
        ),
    }


def run(postings: int, tenants: int, rounds: int, events: int, ledgers: int) -> None:
    url = harness.database_url()
    with Stopwatch() as whole:
        rates = postings_section(url, postings, tenants, rounds)
        audits = verify_section(url, events, ledgers, rounds)
    base = rates[BASELINE]
    console.print(f"[bold]summary[/] ({whole.seconds:.0f}s in all)")
    parts = []
    for label, rate in rates.items():
        if label == BASELINE:
            continue
        ok = rate >= POSTINGS_GOAL and rate >= RATIO_GOAL * base
        parts.append(f"{label} {rate:,.0f}/s = {rate / base:.2f}x {verdict(ok)}")
    console.print(
        f"  postings goal >= {POSTINGS_GOAL:,}/s and >= {RATIO_GOAL}x raw commits "
        f"({base:,.0f}/s): " + "; ".join(parts)
    )
    whole_rate, alone = audits["verify (CLI)"], audits["verify"]
    console.print(
        f"  verify goal >= {VERIFY_GOAL:,} events/s: read + verify {whole_rate:,.0f}/s "
        f"{verdict(whole_rate >= VERIFY_GOAL)}; verify() alone {alone:,.0f}/s "
        f"{verdict(alone >= VERIFY_GOAL)}"
    )


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0], 100_000)
    args.add_argument("--postings", type=int, default=3_000, help="postings a variant (3000)")
    args.add_argument("--tenants", type=int, default=200, help="tenants a variant (200)")
    args.add_argument("--ledgers", type=int, default=200, help="ledgers in the history (200)")
    args.add_argument("--rounds", type=int, default=3, help="rounds; the best counts (3)")
    ns = args.parse_args()
    run(ns.postings, max(ns.tenants, WRITERS), ns.rounds, ns.events, ns.ledgers)


if __name__ == "__main__":
    main()
