"""Allocation read models: the tenant-facing allocations and their billed usage windows.

Each handler writes a run of same-type events with one statement. A transition folds its run
to the latest event per allocation and changes a row only when that event's version is higher
than the row's, so a redelivery or a replay over an existing row changes nothing. A billed
window counts once: ``cost_micro`` grows only by the windows actually inserted.

The process managers do not read these tables: their inboxes come from the write side
(infra/inboxes.py), so a rebuild here never touches a lease, an attempt count or a backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from infra.messages import names as n
from projections.envelope import Envelope, column, columns
from projections.pagination import InvalidPageRequestError, ListSpec, Page, PageRequest, fetch_page
from projections.runner import Projection

ALLOCATIONS = Projection(
    name="allocations",
    topics=(n.ALLOCATION_TOPIC,),
    tables=("allocations", "usage_windows"),
)

ALLOCATION_COLUMNS = (
    "id", "tenant_id", "sku_id", "region", "name", "state", "failure_reason", "node_id",
    "gpu_count", "created_at", "updated_at", "cost_micro", "version", "gpu_indices",
    "price_per_gpu_hour", "started_at", "released_at", "billing_ends_at", "billed_through",
    "release_reason", "failure_detail", "settled", "hold_id", "deadline_at",
)  # fmt: skip
ALLOCATION_LIST = ListSpec("allocations", ALLOCATION_COLUMNS, ("created_at",))
USAGE_COLUMNS = (
    "allocation_id", "tenant_id", "window_start", "window_end", "seconds", "gpus",
    "price_per_gpu_hour", "amount", "taken", "posting_key", "billed_at",
)  # fmt: skip
USAGE_LIST = ListSpec("usage_windows", USAGE_COLUMNS, ("window_start",), id_column="allocation_id")
USAGE_FILTERS = frozenset({"allocation_id"})

REQUESTED = (
    "WITH e AS (SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], "
    "%s::text[], %s::int[], %s::bigint[], %s::text[], %s::timestamptz[], %s::int[], "
    "%s::bigint[]) AS u(id, tenant, sku, region, name, gpus, price, hold, at, deadline, version)) "
    "INSERT INTO allocations AS a (id, tenant_id, sku_id, region, name, state, "
    "gpu_count, price_per_gpu_hour, hold_id, deadline_at, created_at, updated_at, cost_micro, "
    "version) SELECT id, tenant, sku, region, name, 'requested', gpus, price, hold, "
    "at + deadline * interval '1 second', at, at, 0, version FROM e "
    "ON CONFLICT (id) DO NOTHING"
)
TRANSITION = (
    "WITH e AS (SELECT DISTINCT ON (id) * FROM unnest(%s::uuid[], %s::bigint[], "
    "%s::timestamptz[]{types}) AS u(id, version, at{names}) ORDER BY id, version DESC) "
    "UPDATE allocations AS a SET {sets}, updated_at = e.at, version = e.version "
    "FROM e WHERE a.id = e.id AND a.version < e.version"
)
BILLING_STOPS = (
    "billing_ends_at = CASE WHEN a.started_at IS NULL THEN a.billing_ends_at "
    "ELSE COALESCE(a.billing_ends_at, date_trunc('second', e.at)) END"
)
BILLED = (
    "WITH e AS (SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], "
    "%s::timestamptz[], %s::int[], %s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[], "
    "%s::bigint[]) AS u(id, tenant, w_start, w_end, secs, amount, taken, posting_key, at, "
    "version)), billed AS (INSERT INTO usage_windows (allocation_id, tenant_id, window_start, "
    "window_end, seconds, gpus, price_per_gpu_hour, amount, taken, posting_key, billed_at) "
    "SELECT e.id, e.tenant, e.w_start, e.w_end, e.secs, a.gpu_count, a.price_per_gpu_hour, "
    "e.amount, e.taken, e.posting_key, e.at FROM e LEFT JOIN allocations AS a ON a.id = e.id "
    "ON CONFLICT (allocation_id, window_start) DO NOTHING "
    "RETURNING allocation_id, taken, window_end), "
    "sums AS (SELECT allocation_id AS id, sum(taken) AS taken, max(window_end) AS through "
    "FROM billed GROUP BY allocation_id), "
    "last AS (SELECT id, max(version) AS version, max(at) AS at FROM e GROUP BY id) "
    "UPDATE allocations AS a SET cost_micro = a.cost_micro + COALESCE(s.taken, 0), "
    "billed_through = GREATEST(a.billed_through, s.through), "
    "updated_at = GREATEST(a.updated_at, last.at), version = GREATEST(a.version, last.version) "
    "FROM last LEFT JOIN sums AS s USING (id) WHERE a.id = last.id"
)


def _sequences(envs: Sequence[Envelope]) -> list[int]:
    return [e.sequence for e in envs]


@ALLOCATIONS.on(n.ALLOCATION_REQUESTED)
async def requested(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    fields = ("allocation_id", "tenant_id", "sku_id", "region", "name", "gpus")
    more = ("price_per_gpu_hour", "hold_id", "at", "deadline_seconds")
    await cur.execute(REQUESTED, [*columns(envs, *fields, *more), _sequences(envs)])


def _transition(ce_type: str, sets: str, *fields: tuple[str, str]) -> None:
    """Register the handler of ``ce_type``: ``sets`` assigns from ``e`` (the event:
    id, version, at and ``fields``, each a payload field and its SQL type) and ``a`` (the row
    before the change)."""
    query = TRANSITION.format(
        types="".join(f", %s::{kind}[]" for _, kind in fields),
        names="".join(f", {field}" for field, _ in fields),
        sets=sets,
    )

    async def apply(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
        extra = [_values(envs, field, kind) for field, kind in fields]
        await cur.execute(
            query, [column(envs, "allocation_id"), _sequences(envs), column(envs, "at"), *extra]
        )

    apply.__name__ = ce_type.split(".")[-2]  # e.g. "reserved"
    ALLOCATIONS.on(ce_type)(apply)


def _values(envs: Sequence[Envelope], field: str, kind: str) -> list[Any]:
    """A payload field as an array; nested arrays travel as jsonb (``unnest`` would flatten)."""
    return [Jsonb(v) for v in column(envs, field)] if kind == "jsonb" else column(envs, field)


_transition(
    n.ALLOCATION_RESERVED,
    "state = 'reserved', node_id = e.node_id, "
    "gpu_indices = ARRAY(SELECT jsonb_array_elements_text(e.gpu_indices)::int)",
    ("node_id", "uuid"),
    ("gpu_indices", "jsonb"),
)
_transition(n.ALLOCATION_PROVISIONING_STARTED, "state = 'provisioning'")
_transition(n.ALLOCATION_RUNNING, "state = 'running', started_at = e.at")
_transition(
    n.ALLOCATION_FAILED,
    "state = 'failed', failure_reason = e.reason, failure_detail = e.detail, "
    "released_at = CASE WHEN a.started_at IS NULL THEN a.released_at ELSE e.at END, "
    + BILLING_STOPS,
    ("reason", "text"),
    ("detail", "text"),
)
_transition(
    n.ALLOCATION_RELEASE_REQUESTED,
    "state = e.state, release_reason = e.reason, " + BILLING_STOPS,
    ("state", "text"),
    ("reason", "text"),
)
_transition(n.ALLOCATION_RELEASED, "state = 'released', released_at = e.at")
_transition(
    n.ALLOCATION_RELEASE_FAILED,
    "state = 'release_failed', failure_detail = e.error",
    ("error", "text"),
)
_transition(n.ALLOCATION_SETTLED, "settled = true")


@ALLOCATIONS.on(n.ALLOCATION_WINDOW_BILLED)
async def window_billed(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    fields = ("allocation_id", "tenant_id", "start", "end", "seconds", "amount", "taken")
    await cur.execute(BILLED, [*columns(envs, *fields, "posting_key", "at"), _sequences(envs)])


async def list_allocations(conn: AsyncConnection[Any], request: PageRequest) -> Page:
    """A page of one tenant's allocations (``tenant_id=None``: every tenant's, for ops)."""
    return await fetch_page(conn, ALLOCATION_LIST, request)


async def get_allocation(
    conn: AsyncConnection[Any], allocation_id: UUID, tenant_id: UUID | None
) -> dict[str, Any] | None:
    """The allocation if it belongs to ``tenant_id`` (any tenant's when None, for ops): another
    tenant's id reads as missing. With the saga's view of it: how often its current step was
    tried and why the last try failed (a step stuck on a node says so here)."""
    columns = ", ".join(f"a.{c}" for c in ALLOCATION_COLUMNS)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {columns}, w.attempts AS step_attempts, w.last_error AS step_error "
            "FROM allocations a LEFT JOIN allocation_work w ON w.allocation_id = a.id "
            "WHERE a.id = %s AND (%s::uuid IS NULL OR a.tenant_id = %s::uuid)",
            (allocation_id, tenant_id, tenant_id),
        )
        return await cur.fetchone()


async def list_usage(conn: AsyncConnection[Any], request: PageRequest) -> Page:
    """A page of one tenant's billed windows by start (``tenant_id=None``: every tenant's, for
    ops); the only filter is ``allocation_id``."""
    unknown = set(request.filters) - USAGE_FILTERS
    if unknown:
        raise InvalidPageRequestError(f"usage can be filtered by allocation_id only: {unknown}")
    return await fetch_page(conn, USAGE_LIST, request)
