"""What the benchmarks share: real PostgreSQL and broker, a throwaway schema, a report.

Importing this module also puts the repository root on ``sys.path``, so a benchmark run as
``.venv/bin/python bench/relay.py`` finds the project's packages without an install. Every
benchmark imports it before the project's modules (isort keeps third-party imports, which
this counts as, before first-party ones).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
console = Console(soft_wrap=True)


def parser(description: str, events: int) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--events", type=int, default=events, help=f"events (default {events})")
    return args


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A schema name no one uses; the schema is dropped at the end whatever happened."""
    name = f"bench_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextmanager
def broker() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else an embedded Tansu in a temporary folder."""
    if url := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        console.print(f"broker: {url} (KAFKA_BOOTSTRAP_SERVERS)")
        yield url
        return
    from infra.embedded import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="gpucloud-bench-") as folder:
        server = EmbeddedBroker(Path(folder))
        try:
            url = server.start()
            console.print(f"broker: embedded Tansu at {url}")
            yield url
        finally:
            server.stop()


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


class Stopwatch:
    """``with Stopwatch() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(label: str, events: int, seconds: float, baseline: float | None = None) -> float:
    """Print one result line; returns the rate in events/s."""
    rate = events / seconds if seconds > 0 else float("inf")
    ratio = f"  {rate / baseline:5.2f}x baseline" if baseline else ""
    console.print(f"  {label:<34} {events:>7} in {seconds:6.2f}s = {rate:>9,.0f} events/s{ratio}")
    return rate
