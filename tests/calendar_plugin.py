"""pytest plugin: ``--calendar-shift=DAYS`` runs the session as if today were DAYS away.

Python's wall clock (``datetime.now``, ``time.time``) moves by that many days, ticking on from
there (time-machine); monotonic timers do not move. A test that stages a fixed instant on one
side and reads the real clock on the other passes today and fails on some later day; under a
shift it fails now. ``make test`` runs the tests that stage instants a year ahead and a day
behind (the ``calendar`` target). Python only: PostgreSQL's ``now()`` and the broker keep the
real time, which the code must never compare with an instant Python read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--calendar-shift",
        type=float,
        default=None,
        metavar="DAYS",
        help="run with the wall clock moved DAYS days (negative: back)",
    )


def pytest_configure(config: pytest.Config) -> None:
    days = config.getoption("--calendar-shift")
    if days is None:
        return
    import time_machine  # a dev dependency, needed only for a shifted run

    traveller = time_machine.travel(datetime.now(UTC) + timedelta(days=days), tick=True)
    traveller.start()
    config.add_cleanup(traveller.stop)


def pytest_report_header(config: pytest.Config) -> str | None:
    days = config.getoption("--calendar-shift")
    return None if days is None else f"calendar shifted {days:+g} days: now {datetime.now(UTC)}"
