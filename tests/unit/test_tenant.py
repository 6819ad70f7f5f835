"""Tenant aggregate, given / when / then."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.errors import IdempotencyKeyReusedError, ValidationFailedError
from domain.tenant import Tenant, check_tenant_name
from handlers.identity import Identity, id_for_key, request_hash


def test_registering_a_tenant_records_created_with_the_clean_name() -> None:
    tenant_id = uuid4()

    tenant = Tenant.register(tenant_id, "  Acme Research  ", "h")

    events = tenant.collect_events()
    assert [type(e).__name__ for e in events] == ["Created"]
    assert events[0].name == "Acme Research"  # type: ignore[attr-defined]
    assert events[0].originator_id == tenant_id


def test_created_event_has_a_stable_type_name_not_a_module_path() -> None:
    assert Tenant.Created.TOPIC == "gpucloud.identity.Tenant.Created"  # type: ignore[attr-defined]
    assert Tenant.TOPIC == "gpucloud.identity.Tenant"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad<script>", "tab\tname"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailedError):
        check_tenant_name(name)


def test_replaying_the_stream_rebuilds_the_same_state() -> None:
    tenant = Tenant.register(uuid4(), "Acme", "h")
    events = tenant.collect_events()

    replayed = events[0].mutate(None)

    assert replayed is not None
    assert (replayed.id, replayed.name, replayed.version) == (tenant.id, "Acme", 1)


def test_same_key_names_the_same_aggregate_and_no_key_a_fresh_one() -> None:
    assert id_for_key("tenant", "k1") == id_for_key("tenant", "k1")
    assert id_for_key("tenant", "k1") != id_for_key("tenant", "k2")
    assert id_for_key("tenant", None) != id_for_key("tenant", None)


def test_request_hash_ignores_key_order_but_not_values() -> None:
    assert request_hash(a=1, b=2) == request_hash(b=2, a=1)
    assert request_hash(a=1) != request_hash(a=2)


def test_a_key_reused_with_another_name_is_refused_in_memory() -> None:
    app = Identity(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    now = datetime.now(UTC)
    first = app.create_tenant("Acme", "key-1", now)

    again = app.create_tenant("Acme", "key-1", now)
    with pytest.raises(IdempotencyKeyReusedError):
        app.create_tenant("Other", "key-1", now)

    assert (again.tenant.id, again.tenant.created, first.tenant.created) == (
        first.tenant.id,
        False,
        True,
    )
    assert again.key is None and first.key is not None  # a key's secret is shown once
    assert app.recorder.max_notification_id() == 3  # tenant, owner, owner's key; once
