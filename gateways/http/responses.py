"""Every problem an operation can answer, written into its OpenAPI responses.

`install` runs in `create_app` once the routes are built, and reads what each route has: the
edge's refusals (400 for a header or query string that is not text; on methods with a body, 413
and 415), a Guard (401; 403 unless it admits every role, and read-only-key on writes; 429; 503
when the key lookup times out or the database is down), parameters or a body that FastAPI
validates (422), a body (400 malformed-json), a path parameter naming a resource (404), a
cursor (400 invalid-page-request), a position token (400, 503 projection-behind), an
Idempotency-Key (422 idempotency-key-reused). What a handler raises beyond that is declared
beside its route with ``responses=raises(SomeError, ...)``, through `problems.ERROR_TABLE`, so
each number comes from the code that answers it. Each status lists its problem types in
``x-problem-types``.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from domain.errors import IdempotencyKeyReusedError, NotFoundError
from gateways.http import consistency, problems
from gateways.http.auth import Guard
from gateways.http.dispatch import COMMAND_TIMEOUT
from gateways.http.edge import (
    BODY_TOO_LARGE,
    MALFORMED_HEADER,
    MALFORMED_QUERY,
    UNSUPPORTED_MEDIA_TYPE,
    WITH_BODY,
)
from projections.pagination import InvalidPageRequestError

Answer = tuple[int, str]
Responses = dict[int | str, dict[str, Any]]
KINDS = "x-problem-types"
REF = "#/components/schemas/{model}"


def _header(description: str, pattern: str) -> dict[str, Any]:
    schema = {"type": "string", "pattern": pattern}
    return {"description": description, "required": True, "schema": schema}


HEADER_SCHEMAS = {
    "Retry-After": _header("seconds to wait before retrying", "^[0-9]+$"),
    "WWW-Authenticate": _header("the scheme to authenticate with", "^Bearer"),
}
RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}


def raises(*errors: type[Exception] | Answer) -> Responses:
    """A route's ``responses=``: the problems its handler raises, as exception classes (their
    status and type from `problems.ERROR_TABLE`) or as (status, type) of a `ProblemError`."""
    return _render(e if isinstance(e, tuple) else problems.answer_of(e) for e in errors)


def install(app: FastAPI) -> None:
    """Document every route's problems, and the Problem schema they all refer to."""
    document_problems(app.routes)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = generate().setdefault("components", {})
            schemas = {**components.get("schemas", {}), **problem_schemas()}
            components["schemas"] = dict(sorted(schemas.items()))
            components["headers"] = HEADER_SCHEMAS
        return app.openapi_schema  # type: ignore[return-value]  # generate() just set it

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def problem_schemas() -> dict[str, Any]:
    schema = problems.Problem.model_json_schema(ref_template=REF)
    return {**schema.pop("$defs", {}), "Problem": schema}


def document_problems(routes: Iterable[Any]) -> None:
    """Merge into each route's ``responses`` what it can answer. Idempotent: the routers are
    module globals, and every `create_app` walks them again."""
    for route in routes:
        if hasattr(route, "original_router"):
            document_problems(route.original_router.routes)
        elif isinstance(route, APIRoute):
            declared = [(int(s), k) for s, r in route.responses.items() for k in r.get(KINDS, ())]
            others = {s: r for s, r in route.responses.items() if KINDS not in r}
            route.responses = {**others, **_render([*declared, *answers_of(route)])}


def answers_of(route: APIRoute) -> list[Answer]:
    """The problems a route can answer for what it has, before its handler runs."""
    names = {field.alias for field in get_flat_params(route.dependant)}
    found: list[Answer] = [MALFORMED_HEADER, MALFORMED_QUERY]
    if WITH_BODY & set(route.methods or ()):
        found += [BODY_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE]
    for guard in _guards(route):
        found += [a for method in route.methods or () for a in guard.answers(method)]
        found += [COMMAND_TIMEOUT, problems.DATABASE_UNAVAILABLE]
    if names or route.body_field:
        found.append(problems.VALIDATION_FAILED)
    if route.body_field:
        found.append(problems.MALFORMED_JSON)
    if route.dependant.path_params:
        found.append(problems.answer_of(NotFoundError))
    if "cursor" in names:
        found.append(problems.answer_of(InvalidPageRequestError))
    if consistency.HEADER in names:
        found += [consistency.INVALID_TOKEN, consistency.BEHIND]
    if "Idempotency-Key" in names:
        found.append(problems.answer_of(IdempotencyKeyReusedError))
    return found


def _guards(route: APIRoute) -> list[Guard]:
    return [d.call for d in route.dependant.dependencies if isinstance(d.call, Guard)]


def _render(answers: Iterable[Answer]) -> Responses:
    kinds: dict[int, set[str]] = {}
    for status, kind in answers:
        kinds.setdefault(status, set()).add(kind)
    return {status: _response(status, sorted(kinds[status])) for status in sorted(kinds)}


def _response(status: int, kinds: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{HTTPStatus(status).phrase}: {', '.join(kinds)}",
        "content": {problems.MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}},
        KINDS: kinds,
    }
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response
