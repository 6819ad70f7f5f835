"""Identity read models: users, API keys (no secrets), and the per-tenant audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from infra.messages import names as n
from projections.envelope import Envelope, columns
from projections.runner import Projection

USERS = Projection(name="users", topics=(n.USER_TOPIC,), tables=("users",))
API_KEYS = Projection(name="api_keys", topics=(n.APIKEY_TOPIC,), tables=("api_keys",))
AUDIT = Projection(
    name="audit",
    topics=(n.TENANT_TOPIC, n.USER_TOPIC, n.APIKEY_TOPIC, n.LEDGER_TOPIC),
    tables=("audit_events",),
)


@USERS.on(n.USER_CREATED)
async def users_created(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "INSERT INTO users (id, tenant_id, email, role, created_at) SELECT * FROM "
        "unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::timestamptz[])",
        columns(envs, "user_id", "tenant_id", "email", "role", "created_at"),
    )


KEY_FIELDS = (
    "key_id", "tenant_id", "user_id", "role", "read_only", "name", "prefix", "expires_at",
    "created_at",
)  # fmt: skip


@API_KEYS.on(n.APIKEY_CREATED)
async def keys_created(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "INSERT INTO api_keys (id, tenant_id, user_id, role, read_only, name, prefix, "
        "expires_at, created_at) SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], "
        "%s::text[], %s::boolean[], %s::text[], %s::text[], %s::timestamptz[], "
        "%s::timestamptz[])",
        columns(envs, *KEY_FIELDS),
    )


@API_KEYS.on(n.APIKEY_REVOKED)
async def keys_revoked(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "UPDATE api_keys SET revoked_at = r.at FROM unnest(%s::uuid[], %s::timestamptz[]) "
        "AS r(id, at) WHERE api_keys.id = r.id",
        columns(envs, "key_id", "revoked_at"),
    )


async def audit_all(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    """Every event of the context, with who caused it; the platform's own under the nil id."""
    await cur.execute(
        "INSERT INTO audit_events (id, tenant_id, type, subject, sequence, actor, occurred_at, "
        "data) SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], "
        "%s::bigint[], %s::text[], %s::timestamptz[], %s::jsonb[]) ON CONFLICT (id) DO NOTHING",
        [
            [e.event_id for e in envs],
            [e.tenant_id for e in envs],
            [e.ce_type for e in envs],
            [e.subject for e in envs],
            [e.sequence for e in envs],
            [e.actor for e in envs],
            [e.time for e in envs],
            [Jsonb(e.data) for e in envs],
        ],
    )


AUDIT.every_event = audit_all
