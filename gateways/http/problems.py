"""RFC 9457 problem details: one table maps each error class to a status and a stable type."""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.allocation import InvalidTransitionError, SkuUnavailableError
from domain.catalog import CapacityExhaustedError
from domain.errors import (
    DomainError,
    IdempotencyKeyReusedError,
    NotFoundError,
    ValidationFailedError,
)
from domain.identity import AuthenticationFailedError
from domain.ledger_terms import (
    HoldAmountExceededError,
    HoldNotOpenError,
    InsufficientFundsError,
)
from domain.quota import QuotaExceededError
from projections.pagination import InvalidPageRequestError

TYPE_BASE = "https://gpucloud.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raised at the edge for errors that are not the domain's (auth, tokens, lagging reads)."""

    def __init__(
        self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers or {}


ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    AuthenticationFailedError: (401, "unauthenticated"),
    ValidationFailedError: (422, "validation-failed"),
    IdempotencyKeyReusedError: (422, "idempotency-key-reused"),
    NotFoundError: (404, "not-found"),
    CapacityExhaustedError: (409, "capacity-exhausted"),
    InsufficientFundsError: (422, "insufficient-funds"),
    HoldNotOpenError: (409, "hold-not-open"),
    HoldAmountExceededError: (422, "hold-amount-exceeded"),
    InvalidTransitionError: (409, "invalid-transition"),
    SkuUnavailableError: (409, "sku-unavailable"),
    QuotaExceededError: (409, "quota-exceeded"),
    # Not the domain's, but raised through the edge by the store and the list queries.
    IntegrityError: (409, "concurrent-update"),
    InvalidPageRequestError: (400, "invalid-page-request"),
}
RULE_VIOLATED = (400, "domain-rule-violated")
MALFORMED_JSON = (400, "malformed-json")
VALIDATION_FAILED = (422, "validation-failed")
DATABASE_UNAVAILABLE = (503, "database-unavailable")
UNAVAILABLE = (PersistenceError, psycopg.OperationalError, PoolTimeout)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, header or path, then names")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error the API answers has this body."""

    type: str = Field(
        description="a stable URI naming the problem", examples=[TYPE_BASE + "not-found"]
    )
    title: str
    status: int
    detail: str
    instance: str = Field(description="the path of the request")
    errors: list[FieldError] = Field(
        default=[], description="validation-failed only: what in the request is not valid"
    )


def answer_of(error: type[Exception]) -> tuple[int, str]:
    """The status and problem type an error class is answered with."""
    for cls in error.__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return RULE_VIOLATED


def problem(
    status: int,
    kind: str,
    detail: str,
    request: Request,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": TYPE_BASE + kind,
        "title": kind.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _domain(request: Request, exc: Exception) -> JSONResponse:
    status, kind = answer_of(type(exc))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, kind, str(exc), request, headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(*MALFORMED_JSON, "the request body is not valid JSON", request)
    return problem(*VALIDATION_FAILED, "the request is not valid", request, errors=errors)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem(exc.status_code, kind, str(exc.detail), request, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path. Starlette's 405 names only the methods of
    the first route that matched the path, but each of ours takes one method."""
    path = request.url.path
    return sorted(
        method
        for route in iter_route_contexts(request.app.routes)
        if (regex := getattr(route, "path_regex", None)) and regex.match(path)
        for method in getattr(route, "methods", None) or ()
    )


def _edge(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem(exc.status, exc.kind, exc.detail, request, exc.headers)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    detail = "another request changed this resource at the same moment; retry"
    return problem(*answer_of(IntegrityError), detail, request)


def _bad_page(request: Request, exc: Exception) -> JSONResponse:
    return problem(*answer_of(InvalidPageRequestError), str(exc), request)


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    detail = "the database is unavailable; retry shortly (nothing was written)"
    return problem(*DATABASE_UNAVAILABLE, detail, request, {"Retry-After": "2"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ProblemError, _edge)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(InvalidPageRequestError, _bad_page)
    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)
