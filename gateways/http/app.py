"""The HTTP API process: FastAPI app factory, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from pydantic import BaseModel

from gateways.http import (
    allocations,
    catalog,
    identity,
    ledger,
    payments,
    problems,
    responses,
)
from gateways.http.auth import document_roles
from gateways.http.edge import EdgeMiddleware
from infra.bootstrap import System
from infra.ratelimit import FailureThrottle, PostgresRateLimiter

VERSION = "0.1.0"


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


NOT_READY: responses.Responses = {
    503: {
        "model": Readiness,
        "description": "Not ready: a dependency does not answer",
        "headers": responses.RETRY_AFTER,
    }
}


def create_app(system: System) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await system.open()
        s = system.settings
        if s.rate_limit_per_second > 0:
            app.state.limiter = PostgresRateLimiter(
                system.pool, s.rate_limit_per_second, s.rate_limit_burst
            )
        if s.auth_failures_per_second > 0:
            app.state.auth_throttle = FailureThrottle(
                system.pool, s.auth_failures_per_second, s.auth_failure_burst
            )
        yield
        await system.close()

    app = FastAPI(
        title="gpucloud API",
        version=VERSION,
        description="Control plane of a GPU rental cloud. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
    )
    app.state.system = system
    problems.install(app)
    app.include_router(identity.router)
    app.include_router(ledger.router)
    app.include_router(catalog.router)
    app.include_router(allocations.router)
    app.include_router(payments.router)
    app.add_api_route(
        "/healthz", healthz, methods=["GET"], tags=["ops"], operation_id="healthz",
        response_model=Health,
    )  # fmt: skip
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], tags=["ops"], operation_id="readyz",
        response_model=Readiness, responses=NOT_READY,
    )  # fmt: skip
    app.mount("/metrics", make_asgi_app())
    app.add_middleware(EdgeMiddleware, max_body=system.settings.max_body_bytes)
    document_roles(app.routes)
    responses.install(app)
    return app


async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Readiness: PostgreSQL answers a query and the broker answers a metadata request."""
    system: System = request.app.state.system
    checks = {"postgres": await _check_postgres(system), "kafka": await _check_kafka(system)}
    ready = all(v == "ok" for v in checks.values())
    headers = {} if ready else {"Retry-After": "2"}
    body = {"status": "ready" if ready else "not-ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


async def _check_postgres(system: System) -> str:
    try:
        async with asyncio.timeout(2):
            async with system.pool.connection() as conn:
                await conn.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"failed: {type(exc).__name__}"


async def _check_kafka(system: System) -> str:
    client = AIOKafkaClient(bootstrap_servers=system.settings.kafka_bootstrap_servers)
    try:
        async with asyncio.timeout(2):
            await client.bootstrap()
        return "ok"
    except Exception as exc:
        return f"failed: {type(exc).__name__}"
    finally:
        await client.close()
