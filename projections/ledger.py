"""Ledger read models: balances, postings, holds, and the platform accounts (revenue, payment
clearing, promotional credit, adjustments), which no aggregate keeps: they are sums of legs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

from infra.messages import names as n
from projections.envelope import Envelope, columns
from projections.runner import Projection

LEDGER = Projection(
    name="ledger",
    topics=(n.LEDGER_TOPIC,),
    tables=("ledger_balances", "ledger_postings", "ledger_holds", "platform_accounts"),
)
POSTINGS = (
    n.LEDGER_CREDITED, n.LEDGER_DEBITED, n.LEDGER_REFUNDED, n.LEDGER_ADJUSTED,
    n.LEDGER_CLAWED_BACK,
    n.LEDGER_HOLD_PLACED, n.LEDGER_HOLD_CAPTURED,
)  # fmt: skip
RELEASES = (n.LEDGER_HOLD_VOIDED, n.LEDGER_HOLD_EXPIRED)


@LEDGER.on(n.LEDGER_OPENED)
async def opened(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await cur.execute(
        "INSERT INTO ledger_balances (tenant_id, ledger_id, floor, opened_at, updated_at) "
        "SELECT t, l, f, a, a FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], "
        "%s::timestamptz[]) AS o(t, l, f, a) ON CONFLICT (tenant_id) DO NOTHING",
        columns(envs, "tenant_id", "ledger_id", "floor", "at"),
    )


async def postings(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    """Record each posting, then move balances, holds and platform accounts by its legs."""
    await _record(cur, envs)
    await _move_balances(cur, envs)
    await _move_platform_accounts(cur, envs)
    await _track_holds(cur, envs)


for _type in (*POSTINGS, *RELEASES):
    LEDGER.on(_type)(postings)


@LEDGER.on(n.LEDGER_BALANCE_DEPLETED)
async def depleted(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await _set_depleted(cur, envs, True)


@LEDGER.on(n.LEDGER_BALANCE_RESTORED)
async def restored(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    await _set_depleted(cur, envs, False)


async def _set_depleted(cur: AsyncCursor[Any], envs: Sequence[Envelope], flag: bool) -> None:
    await cur.execute(
        "UPDATE ledger_balances SET depleted = %s WHERE tenant_id = ANY(%s::uuid[])",
        (flag, [e.data["tenant_id"] for e in envs]),
    )


async def _record(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    fields = ("kind", "key", "debit_account", "credit_account", "amount", "hold_id", "at", "hash")
    await cur.execute(
        "INSERT INTO ledger_postings (id, tenant_id, version, kind, key, debit_account, "
        "credit_account, amount, hold_id, at, hash) SELECT * FROM unnest(%s::uuid[], "
        "%s::uuid[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
        "%s::bigint[], %s::text[], %s::timestamptz[], %s::text[]) ON CONFLICT (id) DO NOTHING",
        [
            [e.event_id for e in envs],
            [e.data["tenant_id"] for e in envs],
            [e.sequence for e in envs],
            *columns(envs, *fields),
        ],
    )


def cash_delta(env: Envelope) -> tuple[int, int]:
    """How a posting moves the tenant's posted and held balances."""
    data, cash = env.data, f"tenant:{env.data['tenant_id']}:cash"
    amount = data["amount"]
    posted = (amount if data["credit_account"] == cash else 0) - (
        amount if data["debit_account"] == cash else 0
    )
    kind = data["kind"]
    if kind == "hold":
        return 0, amount
    if kind in ("void", "expire"):
        return 0, -amount
    if kind == "capture":
        return posted, -(amount + (data.get("released") or 0))
    return posted, 0


async def _move_balances(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    moves: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    last: dict[str, str] = {}
    for env in envs:
        posted, held = cash_delta(env)
        moves[env.data["tenant_id"]][0] += posted
        moves[env.data["tenant_id"]][1] += held
        last[env.data["tenant_id"]] = env.data["at"]
    await cur.execute(
        "UPDATE ledger_balances b SET posted = b.posted + m.p, held = b.held + m.h, "
        "updated_at = m.at FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], "
        "%s::timestamptz[]) AS m(t, p, h, at) WHERE b.tenant_id = m.t",
        (list(moves), [m[0] for m in moves.values()], [m[1] for m in moves.values()],
         [last[t] for t in moves]),
    )  # fmt: skip


async def _move_platform_accounts(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    sums: dict[str, int] = defaultdict(int)
    for env in envs:
        if env.data["kind"] in ("hold", "void", "expire"):
            continue  # reservations move no money
        debit, credit, amount = (env.data[f] for f in ("debit_account", "credit_account", "amount"))
        if debit.startswith("platform:"):
            sums[debit] -= amount
        if credit.startswith("platform:"):
            sums[credit] += amount
    if sums:
        await cur.execute(
            "INSERT INTO platform_accounts AS p (account, balance) SELECT * FROM "
            "unnest(%s::text[], %s::bigint[]) ON CONFLICT (account) DO UPDATE "
            "SET balance = p.balance + EXCLUDED.balance",
            (list(sums), list(sums.values())),
        )


async def _track_holds(cur: AsyncCursor[Any], envs: Sequence[Envelope]) -> None:
    placed = [e for e in envs if e.data["kind"] == "hold"]
    closed = [e for e in envs if e.data["kind"] in ("capture", "void", "expire")]
    if placed:
        await cur.execute(
            "INSERT INTO ledger_holds (id, tenant_id, amount, state, expires_at, placed_at) "
            "SELECT i, t, a, 'open', x, p FROM unnest(%s::text[], %s::uuid[], %s::bigint[], "
            "%s::timestamptz[], %s::timestamptz[]) AS h(i, t, a, x, p) ON CONFLICT DO NOTHING",
            columns(placed, "hold_id", "tenant_id", "amount", "expires_at", "at"),
        )
    states = {"capture": "captured", "void": "voided", "expire": "expired"}
    if closed:
        await cur.execute(
            "UPDATE ledger_holds h SET state = c.s, closed_at = c.at FROM unnest(%s::text[], "
            "%s::uuid[], %s::text[], %s::timestamptz[]) AS c(i, t, s, at) "
            "WHERE h.id = c.i AND h.tenant_id = c.t",
            [
                [e.data["hold_id"] for e in closed],
                [e.data["tenant_id"] for e in closed],
                [states[e.data["kind"]] for e in closed],
                [e.data["at"] for e in closed],
            ],
        )


async def balances(conn: AsyncConnection[Any], tenant_id: UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT posted, held, posted - held AS available, floor, depleted, updated_at "
            "FROM ledger_balances WHERE tenant_id = %s",
            (tenant_id,),
        )
        return await cur.fetchone()


async def expired_holds(conn: AsyncConnection[Any], now: Any, limit: int = 500) -> list[Any]:
    """Open holds past their expiry, oldest first: the worker voids them."""
    cur = await conn.execute(
        "SELECT tenant_id, id FROM ledger_holds WHERE state = 'open' AND expires_at <= %s "
        "ORDER BY expires_at LIMIT %s",
        (now, limit),
    )
    return await cur.fetchall()


async def platform_balances(conn: AsyncConnection[Any]) -> list[Any]:
    cur = await conn.execute("SELECT account, balance FROM platform_accounts ORDER BY account")
    return await cur.fetchall()
