"""How the relay sorts a batch: what goes out, what is quarantined, what waits behind it."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import Notification

from infra.cloudevents import OutboundMessage
from infra.relay_quarantine import dead_letter, sort_batch

A, B, C = uuid4(), uuid4(), uuid4()
POISON = "gpucloud.identity.Tenant.Poison"


def note(position: int, subject: UUID, version: int, topic: str = "t.Ok") -> Notification:
    return Notification(subject, version, topic, b"{}", position)


def build(context: str, mapper: Any, n: Notification) -> OutboundMessage:
    if n.topic == POISON:
        raise KeyError(n.topic)
    return OutboundMessage("topic", str(n.originator_id).encode(), b"", [("pos", b"%d" % n.id)])


def positions(messages: list[OutboundMessage]) -> list[int]:
    return [int(m.headers[0][1]) for m in messages]


def test_a_poisoned_event_is_kept_and_the_rest_of_the_batch_goes_out() -> None:
    notes = [note(1, A, 1), note(2, B, 1, POISON), note(3, C, 1)]

    batch = sort_batch("identity", None, notes, {}, build)  # type: ignore[arg-type]

    assert positions(batch.messages) == [1, 3]
    assert [(k.note.id, k.error) for k in batch.kept] == [(2, f"KeyError: '{POISON}'")]
    assert batch.kept[0].dead_letter_topic == "identity.tenant.v1.dlq"


def test_later_events_of_a_poisoned_aggregate_wait_behind_it_others_do_not() -> None:
    notes = [note(1, A, 1, POISON), note(2, B, 1), note(3, A, 2), note(4, A, 3)]

    batch = sort_batch("identity", None, notes, {}, build)  # type: ignore[arg-type]

    assert positions(batch.messages) == [2]
    assert [(k.note.id, k.error is None) for k in batch.kept] == [(1, False), (3, True), (4, True)]
    assert [k.note.id for k in batch.poisoned] == [1]
    assert batch.held_on == {}  # held because of this batch, not of rows already kept


def test_a_subject_kept_already_holds_its_events_from_the_kept_sequence_on() -> None:
    subject = str(C)
    notes = [note(7, C, 4), note(8, C, 5), note(9, C, 6)]  # e.g. a republish from before 5

    batch = sort_batch("identity", None, notes, {subject: 5}, build)  # type: ignore[arg-type]

    assert positions(batch.messages) == [7]
    assert [(k.note.id, k.error) for k in batch.kept] == [(8, None), (9, None)]
    assert batch.held_on == {subject: 5}


def test_the_dead_letter_topic_is_the_aggregates_even_for_an_unknown_type() -> None:
    assert dead_letter(note(1, A, 1, "gpucloud.ledger.Ledger.Renamed")) == "ledger.ledger.v1.dlq"
    assert dead_letter(note(1, A, 1, "gpucloud.compute.Allocation.X")) == (
        "compute.allocation.v1.dlq"
    )
    assert dead_letter(note(1, A, 1, "gpucloud.nowhere.Thing.Done")) == "relay.unrouted.v1.dlq"
