"""HTTP routes for tenants: thin, they parse, dispatch to the Tenants application, and map."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, TypeVar
from uuid import UUID

from anyio import CapacityLimiter, fail_after, to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import NotFoundError
from gateways import consistency
from gateways.problems import ProblemError
from infra import metrics
from infra.bootstrap import System
from infra.eventstore import event_metadata
from infra.observability import correlation_id
from projections.tenants import TENANTS, get_tenant

bearer = HTTPBearer(auto_error=False, description="Platform ops key (identity issue: API keys)")
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]
PositionToken = Annotated[str | None, Header(alias=consistency.HEADER, max_length=500)]


class CreateTenant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100, examples=["Acme Research"])


class TenantOut(BaseModel):
    id: UUID
    name: str
    created_at: datetime
    version: int


def system(request: Request) -> System:
    sys: System = request.app.state.system
    return sys


def require_ops(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """Foundation-level auth: one platform ops token. The identity issue brings API keys."""
    expected = system(request).settings.ops_token
    if creds is None or not expected or not secrets.compare_digest(creds.credentials, expected):
        raise ProblemError(
            401,
            "unauthenticated",
            "send `Authorization: Bearer <ops key>`",
            {"WWW-Authenticate": "Bearer"},
        )
    return "ops"


T = TypeVar("T")
router = APIRouter(prefix="/v1/tenants", tags=["tenants"])
_limiter = CapacityLimiter(8)


async def run_command(fn: Callable[[], T], deadline: float) -> T:
    """Run a blocking eventsourcing call in a worker thread, answering 503 past ``deadline``.

    The store write is one transaction, so a command cut off here either committed or did
    not: the client retries with the same Idempotency-Key and gets the same answer.
    """
    try:
        with fail_after(deadline):
            return await to_thread.run_sync(fn, limiter=_limiter, abandon_on_cancel=True)
    except TimeoutError as exc:
        raise ProblemError(
            503,
            "command-timeout",
            "the command did not finish in time; retry with the same Idempotency-Key",
            {"Retry-After": "2"},
        ) from exc


def _trace_header() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@router.post("", status_code=201, response_model=TenantOut, operation_id="createTenant")
async def create_tenant(
    body: CreateTenant,
    request: Request,
    response: Response,
    actor: Annotated[str, Depends(require_ops)],
    idempotency_key: IdempotencyKey = None,
) -> TenantOut:
    sys = system(request)
    rid = correlation_id.get()
    with event_metadata(
        correlation_id=rid, causation_id=rid, traceparent=_trace_header(), actor=actor
    ):
        written = await run_command(
            partial(sys.tenants.create, body.name, idempotency_key), sys.settings.command_timeout
        )
    metrics.COMMANDS.labels("tenant.create", "created" if written.created else "replayed").inc()
    tenant = await run_command(partial(sys.tenants.get, written.id), sys.settings.command_timeout)
    response.headers["Location"] = f"/v1/tenants/{written.id}"
    response.headers[consistency.HEADER] = consistency.make_token(
        TENANTS.name, str(written.id), written.version
    )
    return TenantOut(
        id=tenant.id, name=tenant.name, created_at=tenant.created_on, version=tenant.version
    )


@router.get("/{tenant_id}", response_model=TenantOut, operation_id="getTenant")
async def read_tenant(
    tenant_id: UUID,
    request: Request,
    actor: Annotated[str, Depends(require_ops)],
    position: PositionToken = None,
) -> TenantOut:
    sys = system(request)
    await consistency.wait_for(sys.pool, position, sys.settings.read_wait_seconds)
    async with sys.pool.connection() as conn:
        row = await get_tenant(conn, tenant_id)
    if row is None:
        raise NotFoundError(f"tenant {tenant_id} not found")
    return TenantOut(**row)
