"""The one retry policy for a lost race (handlers/retry.py)."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError

from handlers.retry import retry_on_conflict


def flaky(losses: int, calls: list[int]) -> int:
    calls.append(1)
    if len(calls) <= losses:
        raise IntegrityError("another writer saved first")
    return len(calls)


def test_a_lost_race_is_run_again_after_forgetting_what_was_stale() -> None:
    calls: list[int] = []
    forgotten: list[int] = []
    assert retry_on_conflict(lambda: flaky(3, calls), lambda: forgotten.append(1)) == 4
    assert len(forgotten) == 3


def test_the_last_lost_race_reaches_the_caller_and_other_errors_are_not_retried() -> None:
    calls: list[int] = []
    with pytest.raises(IntegrityError):
        retry_on_conflict(lambda: flaky(10, calls), attempts=4)
    assert len(calls) == 4

    def refused() -> None:
        calls.append(1)
        raise ValueError("a rule, not a race")

    calls.clear()
    with pytest.raises(ValueError):
        retry_on_conflict(refused)
    assert len(calls) == 1
