"""HTTP routes for tenants: thin, they parse, dispatch to the Tenants application, and map."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import partial
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import NotFoundError
from gateways import consistency
from gateways.commands import blocking, dispatch
from gateways.problems import ProblemError
from infra import metrics
from infra.bootstrap import System
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


router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantOut, operation_id="createTenant")
async def create_tenant(
    body: CreateTenant,
    request: Request,
    response: Response,
    actor: Annotated[str, Depends(require_ops)],
    idempotency_key: IdempotencyKey = None,
) -> TenantOut:
    sys = system(request)
    deadline = sys.settings.command_timeout
    written = await dispatch(
        partial(sys.tenants.create, body.name, idempotency_key), actor, deadline
    )
    metrics.COMMANDS.labels("tenant.create", "created" if written.created else "replayed").inc()
    tenant = await blocking(partial(sys.tenants.get, written.id), deadline)
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
