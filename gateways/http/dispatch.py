"""Dispatching commands from the edge: metadata, a worker thread, a deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from anyio import CapacityLimiter, fail_after, to_thread
from opentelemetry import propagate

from gateways.http.problems import ProblemError
from infra.eventstore import event_metadata
from infra.observability import correlation_id

T = TypeVar("T")
COMMAND_TIMEOUT = (503, "command-timeout")
_limiter = CapacityLimiter(8)


async def dispatch(fn: Callable[[], T], actor: str, deadline: float) -> T:
    """Run one command with the request's correlation id, trace and actor on its events."""
    rid = correlation_id.get()
    with event_metadata(
        correlation_id=rid, causation_id=rid, traceparent=_traceparent(), actor=actor
    ):
        return await blocking(fn, deadline)


async def blocking(fn: Callable[[], T], deadline: float) -> T:
    """Run a blocking eventsourcing call in a worker thread, answering 503 past ``deadline``.

    The store write is one transaction, so a command cut off here either committed or did
    not: the client retries with the same Idempotency-Key and gets the same answer.
    """
    try:
        with fail_after(deadline):
            return await to_thread.run_sync(fn, limiter=_limiter, abandon_on_cancel=True)
    except TimeoutError as exc:
        raise ProblemError(
            *COMMAND_TIMEOUT,
            "the command did not finish in time; retry with the same Idempotency-Key",
            {"Retry-After": "2"},
        ) from exc


def _traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
