"""Keyset pagination without a database: cursors, their checks, limits, and the SQL shape."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from projections.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursorError,
    InvalidPageRequestError,
    ListSpec,
    PageRequest,
    Position,
    build_page_query,
    decode_cursor,
    encode_cursor,
    fingerprint,
)

SPEC = ListSpec("items", ("id", "tenant_id", "created_at", "name"), ("created_at", "name"))
FP = fingerprint(SPEC, PageRequest(tenant_id=None))
KEY = b"k" * 32  # the server's signing secret


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        date(2024, 5, 1),
        uuid4(),
        42,
        Decimal("12.3400"),
        1.5,
        "Acme GmbH",
    ],
)
def test_a_cursor_round_trips_its_position_with_the_value_type(value: Any) -> None:
    position = Position("created_at", "desc", value, uuid4())
    decoded = decode_cursor(encode_cursor(position, FP, KEY), FP, KEY)
    assert decoded == position
    assert type(decoded.value) is type(value)


def test_a_cursor_is_url_safe_text() -> None:
    cursor = encode_cursor(Position("name", "asc", "a/b+c?", uuid4()), FP, KEY)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_null_sort_value_cannot_make_a_cursor() -> None:
    with pytest.raises(TypeError):
        encode_cursor(Position("name", "asc", None, uuid4()), FP, KEY)


def _tampered() -> list[str]:
    good = encode_cursor(Position("created_at", "asc", 7, uuid4()), FP, KEY)
    body = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    moved = _b64(json.dumps({**body, "v": ["i", 8]}).encode())
    bad_type = {**body, "v": ["x", "7"]}
    return [
        "",
        "%%%",
        "not base64 at all!",
        _b64(b"not json"),
        _b64(b"[1, 2, 3]"),
        _b64(b'{"s": "created_at"}'),
        moved,
        _b64(json.dumps(bad_type).encode()),
        good[:-3],
        "A" * 5000,
    ]


@pytest.mark.parametrize("cursor", _tampered())
def test_a_malformed_or_edited_cursor_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor, FP, KEY)


def test_a_cursor_sealed_under_another_secret_is_invalid_whatever_it_holds() -> None:
    """Forging needs the server's secret: the old keyless check was public, and a forged
    cursor with a value of another type reached PostgreSQL (a 500)."""
    for value in (uuid4(), 10**30, "text", "\x00", float("nan"), float("inf")):
        forged = encode_cursor(Position("created_at", "asc", value, uuid4()), FP, b"guess" * 8)
        with pytest.raises(InvalidCursorError):
            decode_cursor(forged, FP, KEY)


def test_a_well_formed_cursor_that_fails_its_check_after_decoding_is_invalid() -> None:
    body = {"s": "created_at", "d": "asc", "v": ["t", "not a date"], "i": ["u", "nope"]}
    forged = _b64(json.dumps({**body, "f": "0" * 24}).encode())
    with pytest.raises(InvalidCursorError):
        decode_cursor(forged, FP, KEY)


@pytest.mark.parametrize(
    "other",
    [
        PageRequest(tenant_id=uuid4()),
        PageRequest(tenant_id=None, filters={"state": "ready"}),
        PageRequest(tenant_id=None, sort="name"),
        PageRequest(tenant_id=None, direction="desc"),
    ],
)
def test_a_cursor_from_another_scope_filter_sort_or_direction_is_invalid(
    other: PageRequest,
) -> None:
    cursor = encode_cursor(Position("created_at", "asc", 1, uuid4()), FP, KEY)
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor, fingerprint(SPEC, other), KEY)


def test_the_default_sort_and_its_explicit_name_share_cursors() -> None:
    assert fingerprint(SPEC, PageRequest(tenant_id=None, sort="created_at")) == FP


def test_invalid_cursor_is_a_value_error_the_edge_can_map_to_400() -> None:
    assert issubclass(InvalidCursorError, InvalidPageRequestError)
    assert issubclass(InvalidCursorError, ValueError)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_a_limit_out_of_bounds_is_refused(limit: int) -> None:
    with pytest.raises(InvalidPageRequestError):
        PageRequest(tenant_id=None, limit=limit)


@pytest.mark.parametrize("limit", [1, MAX_LIMIT])
def test_the_limit_bounds_are_inclusive_and_one_extra_row_is_fetched(limit: int) -> None:
    _, params = build_page_query(SPEC, PageRequest(tenant_id=None, limit=limit), KEY)
    assert params == [limit + 1]


def test_the_default_limit_is_50() -> None:
    assert PageRequest(tenant_id=None).limit == DEFAULT_LIMIT == 50


def test_an_unknown_sort_field_or_direction_is_refused() -> None:
    with pytest.raises(InvalidPageRequestError):
        build_page_query(SPEC, PageRequest(tenant_id=None, sort="id; DROP TABLE items"), KEY)
    with pytest.raises(InvalidPageRequestError):
        PageRequest(tenant_id=None, direction="sideways")  # type: ignore[arg-type]


def test_a_spec_must_select_its_id_and_sort_fields() -> None:
    with pytest.raises(ValueError):
        ListSpec("items", ("id", "name"), ("created_at",))


def test_the_query_scopes_by_tenant_and_binds_every_value() -> None:
    tenant, last = uuid4(), uuid4()
    first = PageRequest(tenant_id=tenant, filters={"state": "ready"}, direction="desc")
    cursor = encode_cursor(Position("created_at", "desc", 5, last), fingerprint(SPEC, first), KEY)
    query, params = build_page_query(SPEC, replace(first, cursor=cursor), KEY)
    text = query.as_string(None)
    assert '"state" = %s AND "tenant_id" = %s AND ("created_at", "id") < (%s, %s)' in text
    assert text.endswith('ORDER BY "created_at" DESC, "id" DESC LIMIT %s')
    assert params == ["ready", tenant, 5, last, DEFAULT_LIMIT + 1]


def test_time_bounds_restrict_the_sort_column_and_bind_the_cursor() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    bounded = PageRequest(tenant_id=None, since=start, until=end)

    query, params = build_page_query(SPEC, bounded, KEY)

    text = query.as_string(None)
    assert '"created_at" >= %s' in text and '"created_at" < %s' in text
    assert params[:2] == [start, end]
    assert fingerprint(SPEC, bounded) != fingerprint(SPEC, replace(bounded, until=None))
