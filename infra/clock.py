"""The wall clock: the only place production code reads the time of day.

Everything else asks the ``Clock`` it was given (``System.clock``), so a test or a replay can
drive every component from one instant. ``tests/unit/test_clock_reads.py`` keeps it that way.
"""

from __future__ import annotations

from datetime import UTC, datetime


def wall_clock() -> datetime:
    return datetime.now(UTC)
