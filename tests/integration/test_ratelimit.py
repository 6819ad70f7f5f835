"""Rate limiting against real PostgreSQL: token buckets shared by every replica."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from psycopg_pool import AsyncConnectionPool

from infra.db import async_pool, migrate
from infra.ratelimit import PostgresRateLimiter
from infra.settings import Settings
from tests.support import eventually, roles

pytestmark = pytest.mark.integration

SLOW = 0.001  # tokens per second: nothing refills during a test


@pytest.fixture
async def pools(database_url: str, schema: str) -> AsyncIterator[list[AsyncConnectionPool]]:
    """Two pools on the same schema: two API replicas."""
    migrate(database_url, schema)
    async with AsyncExitStack() as stack:
        opened = []
        for _ in range(2):
            pool = async_pool(database_url, schema, size=10)
            await pool.open()
            stack.push_async_callback(pool.close)
            opened.append(pool)
        yield opened


def new_key() -> str:
    return f"key-{secrets.token_hex(4)}"


async def test_a_burst_is_allowed_then_refused_with_a_retry_after(
    pools: list[AsyncConnectionPool],
) -> None:
    limiter, key = PostgresRateLimiter(pools[0], rate_per_second=0.5, burst=5), new_key()
    decisions = [await limiter.take(key) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[0].retry_after_seconds == 0
    assert decisions[-1].retry_after_seconds == 2  # one token at 0.5/s: 2 s, rounded up


async def test_a_refused_key_is_allowed_again_once_a_token_refilled(
    pools: list[AsyncConnectionPool],
) -> None:
    limiter, key = PostgresRateLimiter(pools[0], rate_per_second=20, burst=2), new_key()
    taken = 0
    while (decision := await limiter.take(key)).allowed:  # a slow machine may refill a token
        taken += 1
        assert taken < 10
    assert taken >= 2 and decision.retry_after_seconds == 1  # under 0.05 s, rounded up
    await asyncio.sleep(0.11)  # 20/s: two tokens back since the refusal (the burst caps it)
    assert [(await limiter.take(key)).allowed for _ in range(2)] == [True, True]


async def test_two_replicas_share_one_bucket(pools: list[AsyncConnectionPool]) -> None:
    one, two = (PostgresRateLimiter(p, rate_per_second=SLOW, burst=3) for p in pools)
    key = new_key()
    assert (await one.take(key)).allowed and (await two.take(key)).allowed
    assert (await one.take(key)).remaining == 0
    assert not (await two.take(key)).allowed
    assert not (await one.take(key)).allowed


async def test_fifty_concurrent_takes_on_a_burst_of_ten_allow_exactly_ten(
    pools: list[AsyncConnectionPool],
) -> None:
    limiters = [PostgresRateLimiter(p, rate_per_second=SLOW, burst=10) for p in pools]
    key = new_key()
    decisions = await asyncio.gather(*(limiters[i % 2].take(key) for i in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after_seconds >= 1 for d in decisions if not d.allowed)


async def test_different_keys_have_their_own_buckets(pools: list[AsyncConnectionPool]) -> None:
    limiter = PostgresRateLimiter(pools[0], rate_per_second=SLOW, burst=1)
    first, second = new_key(), new_key()
    assert (await limiter.take(first)).allowed
    assert not (await limiter.take(first)).allowed
    assert (await limiter.take(second)).allowed


async def test_cleanup_forgets_buckets_idle_for_over_an_hour(
    pools: list[AsyncConnectionPool],
) -> None:
    limiter = PostgresRateLimiter(pools[0], rate_per_second=1, burst=2)
    idle, busy = new_key(), new_key()
    await limiter.take(idle)
    await limiter.take(busy)
    async with pools[0].connection() as conn:
        await conn.execute(
            "UPDATE rate_limit_buckets SET updated_at = updated_at - interval '61 minutes' "
            "WHERE key = %s",
            (idle,),
        )
    assert await limiter.cleanup() == 1
    async with pools[0].connection() as conn:
        cur = await conn.execute("SELECT key FROM rate_limit_buckets")
        assert [row[0] for row in await cur.fetchall()] == [busy]


async def test_the_worker_forgets_idle_buckets_and_keeps_those_in_use(
    settings: Settings,
) -> None:
    quick = settings.with_(rate_limit_cleanup_seconds=0.1, worker_interval_seconds=60.0)
    migrate(settings.database_url or "", settings.db_schema)
    pool = async_pool(settings.database_url or "", settings.db_schema)
    await pool.open()
    limiter = PostgresRateLimiter(pool, rate_per_second=1, burst=2)
    idle, busy = new_key(), new_key()
    try:
        for key in (idle, busy):
            await limiter.take(key)
        await _age(pool, idle, minutes=61)
        async with roles(quick, "worker"):
            assert await eventually(lambda: _only(pool, busy), timeout=10)
    finally:
        await pool.close()


async def _age(pool: AsyncConnectionPool, key: str, minutes: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE rate_limit_buckets SET updated_at = updated_at - make_interval(mins => %s) "
            "WHERE key = %s",
            (minutes, key),
        )


async def _keys(pool: AsyncConnectionPool) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT key FROM rate_limit_buckets ORDER BY key")
        return [row[0] for row in await cur.fetchall()]


async def _only(pool: AsyncConnectionPool, key: str) -> bool:
    return await _keys(pool) == [key]


def test_a_limiter_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError):
        PostgresRateLimiter(None, rate_per_second=0, burst=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PostgresRateLimiter(None, rate_per_second=1, burst=0)  # type: ignore[arg-type]
