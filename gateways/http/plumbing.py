"""What every route is built from: the headers it reads (``Idempotency-Key``,
``X-Position-Token``), the paging query types, reads that honour a position token, and
`command`, which runs one command for a write route.

`command` is what every write route used to spell out itself: run the handler's call in a
worker thread with the request's correlation id and actor on its events, within the one
configured deadline (``GPUCLOUD_COMMAND_TIMEOUT``, 503 past it); count the outcome
(``gpucloud_commands_total``); build the answer from the write model in the same thread (the
read model may not have the write yet); and mark the write (``Location`` and the position token
a read may send back). A route parses, calls `command` once, and answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import Header, Query, Request, Response

from domain.identity import Principal
from gateways.http import consistency
from gateways.http.auth import system_of
from gateways.http.dispatch import blocking, dispatch
from gateways.http.text import VISIBLE_ASCII
from infra import metrics
from infra.bootstrap import System
from projections.pagination import MAX_LIMIT

T = TypeVar("T")
R = TypeVar("R")

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=VISIBLE_ASCII),
]
RequiredIdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=VISIBLE_ASCII,
        description="required: the same key and body again give the same answer",
    ),
]
PositionToken = Annotated[
    str | None, Header(alias=consistency.HEADER, max_length=500, pattern=r"^[A-Za-z0-9_-]+$")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=1024, description="next_cursor of a page")]
Direction = Literal["asc", "desc"]

read_model = consistency.read_model  # a read-model connection, past the caller's token


@dataclass(frozen=True)
class Wrote:
    """Where a write is: the resource's URL, and the read model (subject, version) that a read
    sending the answer's position token back waits for."""

    location: str
    projection: str
    subject: UUID
    version: int


async def command(
    request: Request,
    response: Response,
    caller: Principal,
    name: str,
    run: Callable[[System], T],
    answer: Callable[[System, T], R],
    wrote: Callable[[T], Wrote] | None = None,
    created: Callable[[T], bool] = lambda result: bool(getattr(result, "created", False)),
) -> R:
    """Run ``run`` (the handler call) for ``caller``, count it as ``name``, answer with
    ``answer`` (from the write model) and mark the write ``wrote`` names."""
    sys = system_of(request)

    def in_thread() -> tuple[T, R]:
        try:
            result = run(sys)
        except Exception:
            metrics.COMMANDS.labels(name, "refused").inc()
            raise
        metrics.COMMANDS.labels(name, "created" if created(result) else "ok").inc()
        return result, answer(sys, result)

    result, body = await dispatch(in_thread, caller.actor, sys.settings.command_timeout)
    if wrote is not None:
        at = wrote(result)
        consistency.mark_written(
            request, response, at.location, at.projection, at.subject, at.version
        )
    return body


async def write_model(request: Request, position: str | None, read: Callable[[System], R]) -> R:
    """A read from the write model (exact, never behind), once the read models have passed the
    caller's position token: every read route honours the token the same way."""
    await consistency.wait_for(request, position)
    sys = system_of(request)
    return await blocking(partial(read, sys), sys.settings.command_timeout)
