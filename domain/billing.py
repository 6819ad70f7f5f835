"""Usage billing arithmetic: minute windows aligned to UTC, prorated by the second.

A running allocation is billed per closed window. Each window's charge is the difference of the
cumulative charge at its two ends, each rounded (half up) to the micro-dollar, so the windows
of an allocation always add up to the rounded charge of its whole run: no rounding error piles
up, whatever the number of windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import ValidationFailedError

WINDOW = timedelta(minutes=1)
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Window:
    """One billed window: [start, end), within one UTC minute; ``seconds`` of use."""

    start: datetime
    end: datetime
    seconds: int
    amount: int  # micro-dollars


def cumulative_charge(price_per_gpu_hour: int, gpus: int, seconds: int) -> int:
    """round(price x GPUs x seconds / 3600), half up, in integers only."""
    return (2 * price_per_gpu_hour * gpus * seconds + SECONDS_PER_HOUR) // (2 * SECONDS_PER_HOUR)


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def windows(
    started: datetime,
    until: datetime,
    price_per_gpu_hour: int,
    gpus: int,
    since: datetime | None = None,
) -> list[Window]:
    """The windows from ``started`` to ``until`` (whole seconds; the first and last partial).
    ``since`` (a window edge already billed) skips the windows before it; the amounts are the
    same as if every window from ``started`` had been computed."""
    _check(started, until, price_per_gpu_hour, gpus)
    start, end = started.replace(microsecond=0), until.replace(microsecond=0)
    out, edge = [], max(start, since.replace(microsecond=0)) if since else start
    while edge < end:
        close = min(minute_floor(edge) + WINDOW, end)
        used = int((edge - start).total_seconds()), int((close - start).total_seconds())
        amount = cumulative_charge(price_per_gpu_hour, gpus, used[1]) - cumulative_charge(
            price_per_gpu_hour, gpus, used[0]
        )
        out.append(Window(edge, close, used[1] - used[0], amount))
        edge = close
    return out


def _check(started: datetime, until: datetime, price: int, gpus: int) -> None:
    if started.tzinfo is None or until.tzinfo is None:
        raise ValidationFailedError("billing instants must carry a time zone")
    if until < started:
        raise ValidationFailedError("a window cannot end before it starts")
    for value, name in ((price, "price_per_gpu_hour"), (gpus, "gpus")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationFailedError(f"{name} must be a positive integer")
