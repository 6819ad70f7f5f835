"""One source of truth for message types, checked three ways.

Every event the store can hold has a wire model (else the relay quarantines it); every type a
projection handles is published on a topic it reads (else the handler never runs); every
published type reaches a consumer or is listed, with its reason, as downstream-only (else it is
dead weight nobody notices). Process managers take their triggers from the write side, not from
topics, so the projections are the topics' only consumers here; a process manager that ever
subscribes to a topic joins ``CONSUMERS``. Each check is also run on a broken input, to show it
can fail.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
from eventsourcing.domain import BaseAggregate, DomainEvent, _created_event_classes

import domain
from gateways.projector import PROJECTIONS
from infra.messages import WIRE, names
from infra.messages.wire import WireEvent
from projections.runner import Projection

CONSUMERS: tuple[Projection, ...] = PROJECTIONS
DOWNSTREAM_ONLY: dict[str, str] = {
    names.QUOTA_OPENED: "quotas are enforced on the write side (GpuQuota); for analytics",
    names.QUOTA_RESERVED: "GPUs taken from a tenant's quota; for analytics and alerts on it",
    names.QUOTA_FREED: "GPUs given back to a tenant's quota; for analytics",
    names.QUOTA_LIMIT_SET: "ops changed a tenant's limit; for notifications to the tenant",
    names.PAYMENT_INTENT_LINKED: "maps a Stripe PaymentIntent to its payment; for finance tools",
}


def _domain_classes() -> Iterator[type]:
    """Every class the domain package defines, nested ones (``Allocation.Reserved``) too."""
    for info in pkgutil.walk_packages(domain.__path__, "domain."):
        for value in vars(importlib.import_module(info.name)).values():
            if inspect.isclass(value) and value.__module__.startswith("domain"):
                yield value
                yield from _nested(value)


def _nested(cls: type) -> Iterator[type]:
    for value in vars(cls).values():
        if inspect.isclass(value) and value.__qualname__.startswith(cls.__qualname__ + "."):
            yield value
            yield from _nested(value)


def stored_event_classes(classes: Iterable[type]) -> set[type]:
    """The event classes the store can hold: the leaves of the domain's event hierarchies,
    less the ``Created`` base eventsourcing adds to an aggregate whose own created event has
    another name (``Allocation.Requested``, ``Ledger.Opened``...): that one is never stored."""
    found = set(classes)
    events = {c for c in found if issubclass(c, DomainEvent)}
    leaves = {c for c in events if not any(o is not c and issubclass(o, c) for o in events)}
    unused = {
        vars(agg)["Created"]
        for agg in found
        if issubclass(agg, BaseAggregate)
        and "Created" in vars(agg)
        and vars(agg)["Created"] not in _created_event_classes.get(agg, [])
    }
    return leaves - unused


def without_wire_model(events: Iterable[type], wire: Mapping[type, WireEvent]) -> list[str]:
    return sorted(c.__qualname__ for c in events if c not in wire)


def handled_but_not_published(
    consumers: Iterable[Projection], wire: Mapping[type, WireEvent]
) -> list[str]:
    """Handlers whose type is not published on any topic their projection reads."""
    published = {(w.kafka_topic, w.ce_type) for w in wire.values()}
    return sorted(
        f"{p.name}: {ce_type}"
        for p in consumers
        for ce_type in p.handlers
        if not any((topic, ce_type) in published for topic in p.topics)
    )


def consumed(consumers: Iterable[Projection], wire: Mapping[type, WireEvent]) -> set[str]:
    """The types some consumer applies: its own handlers, or every type of its topics for one
    that takes every event (the audit log)."""
    taken: set[str] = set()
    for p in consumers:
        taken |= set(p.handlers)
        if p.every_event is not None:
            taken |= {w.ce_type for w in wire.values() if w.kafka_topic in p.topics}
    return taken


def published_to_nobody(
    consumers: Iterable[Projection],
    wire: Mapping[type, WireEvent],
    downstream_only: Mapping[str, str],
) -> list[str]:
    """Published types no consumer applies and the list does not name, and listed ones that
    are not published or are consumed after all (the list stays short and true)."""
    types = {w.ce_type for w in wire.values()}
    taken = consumed(consumers, wire)
    unlisted = {t for t in types - taken if t not in downstream_only}
    stale = {f"listed but {'consumed' if t in taken else 'unpublished'}: {t}"
             for t in downstream_only if t in taken or t not in types}  # fmt: skip
    return sorted(unlisted | stale)


def test_every_stored_domain_event_has_a_wire_model() -> None:
    events = stored_event_classes(_domain_classes())
    assert len(events) >= len(WIRE)  # the walk found the events (not an empty pass)
    assert without_wire_model(events, WIRE) == []


def test_an_event_without_a_wire_model_is_named() -> None:
    class Forgotten(DomainEvent):
        pass

    events = stored_event_classes([*_domain_classes(), Forgotten])

    assert without_wire_model(events, WIRE) == [Forgotten.__qualname__]


def test_the_library_created_base_is_not_a_stored_event() -> None:
    from domain.allocation import Allocation

    events = stored_event_classes(_domain_classes())

    assert vars(Allocation)["Requested"] in events
    assert vars(Allocation)["Created"] not in events


def test_every_handled_type_is_published_on_a_topic_its_projection_reads() -> None:
    assert handled_but_not_published(CONSUMERS, WIRE) == []


@pytest.mark.parametrize(
    ("topic", "ce_type"),
    [
        (names.ALLOCATION_TOPIC, "cloud.gpu.allocation.reservd.v1"),  # a typo
        (names.LEDGER_TOPIC, names.ALLOCATION_RUNNING),  # published, not on the topic read
    ],
)
def test_a_handler_of_an_unpublished_type_is_named(topic: str, ce_type: str) -> None:
    wrong = Projection("wrong", (topic,))

    async def apply(cur: Any, envs: Any) -> None:
        return None

    wrong.on(ce_type)(apply)

    assert handled_but_not_published([*CONSUMERS, wrong], WIRE) == [f"wrong: {ce_type}"]


def test_every_published_type_reaches_a_consumer_or_is_listed() -> None:
    assert published_to_nobody(CONSUMERS, WIRE, DOWNSTREAM_ONLY) == []


def test_a_published_type_nobody_consumes_is_named() -> None:
    without_nodes = [p for p in CONSUMERS if p.name != "nodes"]

    missing = published_to_nobody(without_nodes, WIRE, DOWNSTREAM_ONLY)

    assert names.NODE_REGISTERED in missing
    assert names.NODE_CLAIM_RELEASED in missing


def test_a_stale_downstream_only_entry_is_named() -> None:
    listed = {**DOWNSTREAM_ONLY, names.SKU_CREATED: "consumed by skus", "cloud.gpu.x.v1": "?"}

    assert published_to_nobody(CONSUMERS, WIRE, listed) == [
        "listed but consumed: cloud.gpu.sku.created.v1",
        "listed but unpublished: cloud.gpu.x.v1",
    ]


def test_the_names_module_imports_nothing() -> None:
    """Projections may import it (see the import contract) because it is only strings."""
    tree = ast.parse(inspect.getsource(names))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports == []


def test_every_ce_type_in_the_names_module_is_published() -> None:
    spelled = {v for k, v in vars(names).items() if k.isupper() and v.startswith("cloud.gpu.")}
    assert spelled == {w.ce_type for w in WIRE.values()}
