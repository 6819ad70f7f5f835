"""Billing windows: aligned, prorated by the second, and adding up without rounding drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.billing import cumulative_charge, windows
from domain.errors import ValidationFailedError

EPOCH = datetime(2026, 11, 28, tzinfo=UTC)
instants = st.integers(0, 3 * 86_400).map(lambda s: EPOCH + timedelta(seconds=s))


@given(
    start=instants,
    length=st.integers(0, 6 * 3600),
    price=st.integers(1, 50_000_000),
    gpus=st.integers(1, 16),
)
def test_the_windows_add_up_to_the_rounded_charge_of_the_whole_run(
    start: datetime, length: int, price: int, gpus: int
) -> None:
    end = start + timedelta(seconds=length)

    billed = windows(start, end, price, gpus)

    exact = price * gpus * length / 3600
    assert abs(sum(w.amount for w in billed) - round(exact)) <= 1
    assert sum(w.seconds for w in billed) == length
    assert all(w.end - w.start <= timedelta(minutes=1) for w in billed)
    assert all(w.start.minute == (w.end - timedelta(microseconds=1)).minute for w in billed)


def test_first_and_last_windows_are_prorated_by_the_second() -> None:
    start = EPOCH + timedelta(seconds=30)
    billed = windows(start, EPOCH + timedelta(minutes=2, seconds=15), 3_600_000_000, 1)
    assert [w.seconds for w in billed] == [30, 60, 15]
    assert [w.amount for w in billed] == [30_000_000, 60_000_000, 15_000_000]


def test_half_a_micro_dollar_rounds_up() -> None:
    assert cumulative_charge(1, 1, 1800) == 1  # 0.5 micro-dollar
    assert cumulative_charge(1, 1, 1799) == 0


@pytest.mark.parametrize(
    ("start", "end", "price", "gpus"),
    [
        (EPOCH, EPOCH - timedelta(seconds=1), 1, 1),
        (EPOCH.replace(tzinfo=None), EPOCH, 1, 1),
        (EPOCH, EPOCH, 0, 1),
        (EPOCH, EPOCH, 1, True),
        (EPOCH, EPOCH, 1.5, 1),
    ],
)
def test_impossible_windows_are_refused(
    start: datetime, end: datetime, price: int, gpus: int
) -> None:
    with pytest.raises(ValidationFailedError):
        windows(start, end, price, gpus)
