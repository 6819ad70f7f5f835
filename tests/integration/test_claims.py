"""Capacity claims against real PostgreSQL: racing claimers, each with its own application.

Every racer has its own Inventory (its own connection pool) on the same database and schema,
and they all start at a barrier, so the claims really race for the same node version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from uuid import UUID, uuid4

import pytest

from domain.catalog import CapacityExhaustedError
from handlers.inventory import Inventory
from infra.db import migrate
from infra.eventstore import open_app
from infra.settings import Settings

pytestmark = pytest.mark.integration

Outcome = tuple[int, ...] | CapacityExhaustedError


@contextmanager
def inventories(settings: Settings, count: int) -> Iterator[list[Inventory]]:
    """``count`` applications on one store, opened one by one (each creates its tables)."""
    migrate(settings.database_url or "", settings.db_schema)
    apps: list[Inventory] = []
    try:
        for _ in range(count):
            apps.append(open_app(Inventory, settings.database_url or "", settings.db_schema))
        yield apps
    finally:
        for app in apps:
            app.close()


def race(apps: list[Inventory], node_id: UUID) -> list[Outcome]:
    """Each app claims one GPU under its own claim id, all released at once by a barrier."""
    barrier = threading.Barrier(len(apps))

    def claimer(number: int) -> Callable[[], Outcome]:
        def run() -> Outcome:
            barrier.wait(timeout=30)
            try:
                return apps[number].claim(node_id, f"claim-{number}", uuid4(), 1)
            except CapacityExhaustedError as refused:
                return refused

        return run

    with ThreadPoolExecutor(max_workers=len(apps)) as pool:
        futures = [pool.submit(claimer(number)) for number in range(len(apps))]
        return [future.result(timeout=60) for future in futures]


def winners(outcomes: list[Outcome]) -> list[tuple[int, ...]]:
    return [outcome for outcome in outcomes if isinstance(outcome, tuple)]


def test_sixteen_racers_for_four_gpus_four_win_distinct_gpus(settings: Settings) -> None:
    with inventories(settings, 16) as apps:
        node = apps[0].register_node(region="eu-west-1", gpu_model="NVIDIA H100", gpu_count=4)

        outcomes = race(apps, node.id)

        won = winners(outcomes)
        assert len(won) == 4
        assert sum(isinstance(o, CapacityExhaustedError) for o in outcomes) == 12
        assert sorted(index for indices in won for index in indices) == [0, 1, 2, 3]
        stored = apps[0].get_node(node.id)
        assert len(stored.claims) == 4
        assert (stored.free_gpus, stored.version) == ((), 5)


@pytest.mark.parametrize("racers", [2, 8])
def test_concurrent_claims_on_the_last_free_gpu_exactly_one_wins(
    settings: Settings, racers: int
) -> None:
    with inventories(settings, racers) as apps:
        node = apps[0].register_node(region="eu-west-1", gpu_model="NVIDIA H100", gpu_count=1)

        outcomes = race(apps, node.id)

        assert winners(outcomes) == [(0,)]
        assert sum(isinstance(o, CapacityExhaustedError) for o in outcomes) == racers - 1
        assert list(apps[-1].get_node(node.id).claims.values()) == [(0,)]


def test_a_repeated_claim_after_a_race_returns_the_same_gpus(settings: Settings) -> None:
    with inventories(settings, 2) as (first, second):
        node = first.register_node(region="eu-west-1", gpu_model="NVIDIA H100", gpu_count=2)
        allocation = uuid4()

        claimed = first.claim(node.id, "claim-a", allocation, 1)
        repeated = second.claim(node.id, "claim-a", allocation, 1)

        assert claimed == repeated == (0,)
        assert second.get_node(node.id).version == 2
