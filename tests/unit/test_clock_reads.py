"""No production code reads the wall clock but ``infra/clock.py``: everything asks the clock it
was given, so a test staged at one instant drives every component from that instant (13 tests
once went red five days after they were written, the saga reading the real clock while the
test staged its allocations at a fixed date)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "handlers", "projections", "gateways", "infra")
THE_CLOCK = ROOT / "infra" / "clock.py"
WALL_CLOCK_READS = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "time_ns"), ("time", "localtime"), ("time", "gmtime"),
}  # fmt: skip


def wall_clock_reads(source: str) -> list[str]:
    """Calls such as ``datetime.now(UTC)`` or ``time.time()``, as ``name.attr`` at line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if (name, node.func.attr) in WALL_CLOCK_READS:
                found.append(f"{name}.{node.func.attr} at line {node.lineno}")
    return found


def production_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p != THE_CLOCK)


def test_only_the_clock_module_reads_the_wall_clock() -> None:
    reads = {
        str(path.relative_to(ROOT)): found
        for path in production_modules()
        if (found := wall_clock_reads(path.read_text()))
    }
    assert reads == {}, "ask the injected clock (System.clock / a Clock argument) instead"


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import UTC, datetime\nx = datetime.now(UTC)",
        "import datetime\nx = datetime.datetime.now()",
        "import time\nx = time.time()",
        "from datetime import date\nx = date.today()",
    ],
)
def test_the_scan_sees_each_way_of_reading_the_clock(source: str) -> None:
    assert wall_clock_reads(source) != []


def test_the_scan_lets_monotonic_timers_and_given_clocks_be() -> None:
    assert wall_clock_reads("import time\nt = time.monotonic()\nn = self.clock()") == []
