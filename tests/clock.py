"""A clock for tests: starts at a chosen instant and runs on at the pace of real time.

Built into the System (``build_system(settings, clock)``), it is the one clock every component
the test drives reads, so a test staged at a fixed instant behaves the same on any calendar
day. ``advance`` jumps ahead, as a worker that was down for a while would see it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class TestClock:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a test clock starts at a timezone-aware instant")
        self.start, self._origin, self._skipped = start.astimezone(UTC), time.monotonic(), 0.0

    def __call__(self) -> datetime:
        elapsed = time.monotonic() - self._origin + self._skipped
        return self.start + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> None:
        self._skipped += seconds
