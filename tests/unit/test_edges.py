"""Pure helpers at the edges: position tokens, event metadata, CloudEvents mapping."""

import base64
import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import example, given
from hypothesis import strategies as st

from gateways.http.consistency import make_token, parse_token
from gateways.http.problems import ProblemError
from handlers.identity import Identity
from infra.cloudevents import event_id, to_message
from infra.eventstore import META_KEY, MetadataTranscoder, event_metadata
from projections.envelope import MalformedEventError, from_record

KEY, TENANT, SUBJECT = b"s" * 32, str(uuid4()), str(uuid4())


def test_position_token_round_trips() -> None:
    token = make_token(KEY, TENANT, "tenants", SUBJECT, 7)
    assert parse_token(KEY, TENANT, token) == ("tenants", SUBJECT, 7)


def _unsealed(body: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


FOREIGN = [
    "", "%%%", "bm90IGpzb24", make_token(KEY, TENANT, "x", SUBJECT, 1)[:-3],
    _unsealed({"t": TENANT, "p": "allocations", "s": SUBJECT, "q": 1}),  # the old, unsealed kind
    make_token(b"guessed" * 4, TENANT, "allocations", SUBJECT, 1),
    make_token(KEY, TENANT, "allocations", "n\x00", 1),
    make_token(KEY, str(uuid4()), "allocations", SUBJECT, 1),  # another tenant's
]  # fmt: skip


@pytest.mark.parametrize("token", FOREIGN)
def test_a_position_token_not_issued_to_this_tenant_is_a_400(token: str) -> None:
    with pytest.raises(ProblemError) as caught:
        parse_token(KEY, TENANT, token)
    assert caught.value.status == 400


def test_metadata_is_stored_beside_the_state_and_hidden_from_the_aggregate() -> None:
    transcoder = MetadataTranscoder()
    with event_metadata(correlation_id="c-1", causation_id=None):
        stored = transcoder.encode({"name": "Acme"})
    assert json.loads(stored)[META_KEY] == {"correlation_id": "c-1"}
    assert transcoder.decode(stored) == {"name": "Acme"}
    assert META_KEY not in json.loads(transcoder.encode({"name": "Acme"}))


def _library_transcoder(transcoder: JSONTranscoder) -> JSONTranscoder:
    """eventsourcing's own JSONTranscoder with the same transcodings registered."""
    library = JSONTranscoder()
    for transcoding in transcoder.names.values():
        library.register(transcoding)
    return library


_STORED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.uuids()
    | st.datetimes(timezones=st.just(UTC)) | st.decimals(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)  # fmt: skip


@given(st.dictionaries(st.text().filter(lambda k: k != META_KEY), _STORED, max_size=6))
@example({"big": 2**70 + 1, "small": -(2**64) - 1})
@example({"nested": [{"_type_": "uuid_hex", "_data_": uuid4().hex}]})
def test_the_fast_decoder_reads_what_the_library_reads(state: dict[str, object]) -> None:
    """The transcoder parses with orjson and revives transcoded values itself: whatever was
    stored, it must give what eventsourcing's own decoder gives (but the metadata key, which
    it takes out of the state on purpose and no aggregate's state uses)."""
    transcoder = MetadataTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    transcoder.register(DecimalAsStr())
    stored = transcoder.encode(state)

    assert transcoder.decode(stored) == _library_transcoder(transcoder).decode(stored)


@pytest.mark.parametrize(
    "stored",
    [b'{"a": {"_type_": "nope", "_data_": "x"}}', b'{"a": [{"_type_": "nope", "_data_": {}}]}'],
)
def test_a_stored_type_nobody_registered_fails_as_the_library_fails(stored: bytes) -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        MetadataTranscoder().decode(stored)


def _stored_tenant_notification(traceparent: str | None) -> tuple[Identity, object]:
    app = Identity(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.popo",
            "TRANSCODER_TOPIC": "infra.eventstore:MetadataTranscoder",
        }
    )
    with event_metadata(correlation_id="req-1", traceparent=traceparent):
        app.create_tenant("Acme", None, datetime.now(UTC))
    return app, app.recorder.select_notifications(1, 1)[0]


def test_a_stored_event_becomes_a_binary_mode_cloudevent() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    app, note = _stored_tenant_notification(tp)

    msg = to_message("identity", app.mapper, note)  # type: ignore[arg-type]

    headers = dict(msg.headers)
    subject = str(note.originator_id)  # type: ignore[attr-defined]
    assert msg.topic == "identity.tenant.v1"
    assert msg.key == subject.encode()
    assert headers["ce_type"] == b"cloud.gpu.tenant.created.v1"
    assert headers["ce_subject"] == subject.encode()
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_sequence"] == b"1"
    assert headers["ce_tenantid"] == subject.encode()
    assert headers["ce_correlationid"] == b"req-1"
    assert headers["ce_id"] == event_id(subject, 1).encode()
    assert headers["traceparent"] == tp.encode()
    assert json.loads(msg.value)["name"] == "Acme"


def test_an_envelope_reads_back_what_the_relay_wrote() -> None:
    app, note = _stored_tenant_notification(None)
    msg = to_message("identity", app.mapper, note)  # type: ignore[arg-type]

    env = from_record(msg.topic, 2, 41, dict(msg.headers), msg.value)

    assert (env.partition, env.offset, env.sequence) == (2, 41, 1)
    assert env.data["name"] == "Acme"
    assert env.trace_id is None


GOOD_HEADERS = {
    "ce_id": b"i",
    "ce_type": b"t",
    "ce_subject": b"s",
    "ce_tenantid": b"x",
    "ce_sequence": b"1",
    "ce_time": b"2026-01-01T00:00:00Z",
}


def test_a_well_formed_record_is_accepted() -> None:
    assert from_record("t", 0, 0, GOOD_HEADERS, b"{}").actor == "system"


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ({}, b"{}"),
        ({**GOOD_HEADERS, "ce_sequence": b"NaN"}, b"{}"),
        (GOOD_HEADERS, b"{"),
        ({k: v for k, v in GOOD_HEADERS.items() if k != "ce_id"}, b"{}"),
    ],
)
def test_malformed_messages_are_recognised(headers: dict[str, bytes], value: bytes) -> None:
    with pytest.raises(MalformedEventError):
        from_record("t", 0, 0, headers, value)


def test_the_hot_path_writes_what_the_cloudevents_sdk_would() -> None:
    from cloudevents.core.bindings.kafka import to_binary_event
    from cloudevents.core.v1.event import CloudEvent

    app, note = _stored_tenant_notification("00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    msg = to_message("identity", app.mapper, note)  # type: ignore[arg-type]
    ours = dict(msg.headers)
    attributes = {
        k.removeprefix("ce_"): v.decode()
        for k, v in ours.items()
        if k.startswith("ce_") and k != "ce_specversion"
    }
    attributes["datacontenttype"] = ours["content-type"].decode()
    attributes["time"] = datetime.fromisoformat(attributes["time"])  # type: ignore[assignment]

    sdk = to_binary_event(CloudEvent(attributes, json.loads(msg.value)))

    extras = ("traceparent", "correlation_id")
    assert {k: v for k, v in ours.items() if k not in extras} == sdk.headers
    assert json.loads(sdk.value) == json.loads(msg.value)


@pytest.mark.parametrize("sequence", [1, 2, 99999])
def test_event_ids_are_the_standard_uuid5_of_subject_and_sequence(sequence: int) -> None:
    from uuid import uuid5

    from infra.cloudevents import EVENT_ID_NAMESPACE

    subject = uuid4()
    assert event_id(subject, sequence) == str(uuid5(EVENT_ID_NAMESPACE, f"{subject}/{sequence}"))
