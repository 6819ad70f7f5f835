"""Authentication and authorization at the edge: API keys, roles, tenant scoping.

Every route takes a `Guard` naming the roles it admits. The guard authenticates the bearer
key against the event store (a revoked or expired key fails on its very next request), applies
the per-key rate limit, then checks the role and, for mutating methods, that the key is not
read-only. `create_app` copies each guard's roles into the OpenAPI document as `x-roles`, so
the contract says who may call what, and a test walks it.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from domain.errors import NotFoundError
from domain.identity import OPS, ROLES, AuthenticationFailedError, Principal
from gateways.http.dispatch import blocking
from gateways.http.problems import ProblemError
from infra.bootstrap import System
from infra.ratelimit import FailureThrottle

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    bearerFormat="gpc_<prefix>_<secret>",
    description="An API key: `Authorization: Bearer gpc_...`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
READS = frozenset({"GET", "HEAD", "OPTIONS"})
UNAUTHENTICATED = (401, "unauthenticated")
FORBIDDEN = (403, "forbidden")
READ_ONLY_KEY = (403, "read-only-key")
RATE_LIMITED = (429, "rate-limited")


def system_of(request: Request) -> System:
    sys: System = request.app.state.system
    return sys


class Guard:
    """A route dependency: who may call. Ops may call every route that admits ``ops``."""

    def __init__(self, *roles: str) -> None:
        self.roles = roles

    async def __call__(self, request: Request, credentials: Credentials) -> Principal:
        principal = await authenticate(request, credentials)
        if principal.role not in self.roles:
            raise ProblemError(*FORBIDDEN, f"this needs one of: {', '.join(self.roles)}")
        if principal.read_only and request.method not in READS:
            raise ProblemError(*READ_ONLY_KEY, "this API key may only read")
        return principal

    def answers(self, method: str) -> list[tuple[int, str]]:
        """What this guard may answer instead of letting a ``method`` request through."""
        refusals = [UNAUTHENTICATED, RATE_LIMITED]
        if set(ROLES) - set(self.roles):
            refusals.append(FORBIDDEN)
        if method not in READS:
            refusals.append(READ_ONLY_KEY)
        return refusals


async def authenticate(request: Request, credentials: Credentials) -> Principal:
    if credentials is None:
        raise _unauthenticated("send `Authorization: Bearer <API key>`")
    sys = system_of(request)
    throttle: FailureThrottle | None = getattr(request.app.state, "auth_throttle", None)
    address = request.client.host if request.client else "unknown"
    if throttle is not None:
        _refuse_if_waiting(throttle.retry_after(address, time.monotonic()))
    check = partial(sys.identity.authenticate, credentials.credentials, sys.clock())
    try:
        principal = await blocking(check, sys.settings.command_timeout)
    except AuthenticationFailedError:
        if throttle is not None:
            _refuse_if_waiting(await throttle.failed(address, time.monotonic()))
        raise
    await _rate_limit(request, principal)
    request.state.principal = principal
    return principal


def _refuse_if_waiting(retry_after: int | None) -> None:
    """Too many failed authentications from this address: 429 before any key is checked."""
    if retry_after is not None:
        detail = f"too many failed authentications from this address; retry in {retry_after} s"
        raise ProblemError(*RATE_LIMITED, detail, {"Retry-After": str(retry_after)})


async def _rate_limit(request: Request, principal: Principal) -> None:
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is None:
        return
    decision = await limiter.take(str(principal.key_id))
    if not decision.allowed:
        retry = str(decision.retry_after_seconds)
        raise ProblemError(
            *RATE_LIMITED, f"too many requests; retry in {retry} s", {"Retry-After": retry}
        )


def _unauthenticated(detail: str) -> ProblemError:
    return ProblemError(*UNAUTHENTICATED, detail, {"WWW-Authenticate": "Bearer"})


def tenant_scope(principal: Principal, tenant_id: UUID, kind: str = "resource") -> UUID:
    """The tenant a request may touch: its own, or any for ops. Another tenant's id reads as
    not found, so ids never leak whether they exist."""
    if principal.role != OPS and principal.tenant_id != tenant_id:
        raise NotFoundError(f"{kind} not found")
    return tenant_id


def readable_tenant(principal: Principal, asked: UUID | None = None) -> UUID | None:
    """Whose rows a read shows: the caller's own tenant's; for ops every tenant's (None) or
    the one ``asked`` for. Asking for another tenant reads as not found."""
    if asked is not None:
        return tenant_scope(principal, asked, "tenant")
    return None if principal.role == OPS else own_tenant(principal)


def own_tenant(principal: Principal) -> UUID:
    """The caller's tenant, for commands a tenant issues (an ops key has none)."""
    if principal.tenant_id is None:
        raise NotFoundError("no tenant")
    return principal.tenant_id


def document_roles(routes: list[Any]) -> None:
    """Copy each route's guard roles into its OpenAPI operation as ``x-roles``. Call it with
    ``app.routes``; included routers (which FastAPI keeps as a whole) are walked too."""
    for route in routes:
        if hasattr(route, "original_router"):
            document_roles(route.original_router.routes)
        elif isinstance(route, APIRoute):
            guards = [d.call for d in route.dependant.dependencies if isinstance(d.call, Guard)]
            if guards:
                extra: dict[str, Any] = dict(route.openapi_extra or {})
                extra["x-roles"] = list(guards[0].roles)
                route.openapi_extra = extra


ANY_ROLE = Guard("owner", "member", "billing", "auditor", "ops")
OPS_ONLY = Guard(OPS)
OWNER = Guard("owner")
AUDIT = Guard("owner", "auditor")
