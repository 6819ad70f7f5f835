"""Keyset (cursor) pagination for read-model list endpoints.

A page is ``ORDER BY sort, id`` after the last row of the previous page: ``(sort, id) > (v, i)``
(``<`` descending). Rows inserted while a client pages may show up or not, but rows that
existed when paging began are each seen exactly once, as long as their sort value does not
change. Sort columns must be NOT NULL; each list wants an index on (tenant column, sort, id).

The cursor is opaque to clients: base64url of a small JSON holding the sort field, direction,
the last row's sort value and id, and an HMAC over those and the query's filters under the
server's signing secret (``server_secrets``, shared by every replica). A cursor sent with other
filters, another sort or direction, edited or forged fails the check and raises
``InvalidCursorError`` (a 400): no value a client chose ever reaches the SQL as a cursor. The
tenant is kept apart by the ``WHERE`` clause, not by the cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

Direction = Literal["asc", "desc"]
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_CHARS = 1024


class InvalidPageRequestError(ValueError):
    """A list request no page can answer: unknown sort field, bad direction, limit out of range."""


class InvalidCursorError(InvalidPageRequestError):
    """A cursor this query did not issue: malformed, altered, or from other filters or sort."""


@dataclass(frozen=True)
class ListSpec:
    """What a list endpoint reads. Every name here is a trusted identifier, never user input;
    ``sort_fields[0]`` is the default sort. ``table`` may be qualified (``schema.table``)."""

    table: str
    columns: tuple[str, ...]
    sort_fields: tuple[str, ...]
    tenant_column: str = "tenant_id"
    id_column: str = "id"

    def __post_init__(self) -> None:
        missing = {self.id_column, *self.sort_fields} - set(self.columns)
        if missing or not self.sort_fields:
            raise ValueError(f"columns must include the id and every sort field: {missing}")


@dataclass(frozen=True)
class PageRequest:
    """One page of a list. ``tenant_id`` is required: ``None`` only for ops-wide lists."""

    tenant_id: UUID | None
    filters: Mapping[str, Any] = field(default_factory=dict)
    sort: str | None = None
    direction: Direction = "asc"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    since: Any = None  # sort value >= since
    until: Any = None  # sort value < until

    def __post_init__(self) -> None:
        if self.direction not in ("asc", "desc"):
            raise InvalidPageRequestError("direction must be 'asc' or 'desc'")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidPageRequestError(f"limit must be between 1 and {MAX_LIMIT}")


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's sort value and id, under a sort and direction."""

    sort: str
    direction: Direction
    value: Any
    id: Any


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


# Cursor values keep their type: [tag, text]. Exact types only (bool is not an int here).
_DUMP: dict[type, tuple[str, Callable[[Any], Any]]] = {
    datetime: ("t", datetime.isoformat),
    date: ("d", date.isoformat),
    UUID: ("u", str),
    int: ("i", int),
    Decimal: ("n", str),
    float: ("f", float),
    str: ("s", str),
}
_LOAD: dict[str, Callable[[Any], Any]] = {
    "t": datetime.fromisoformat,
    "d": date.fromisoformat,
    "u": UUID,
    "i": int,
    "n": Decimal,
    "f": float,
    "s": str,
}


def _dump(value: Any) -> list[Any]:
    if type(value) not in _DUMP:
        raise TypeError(f"cannot page on a {type(value).__name__} (NULL or unsupported type)")
    tag, dump = _DUMP[type(value)]
    return [tag, dump(value)]


def _load(item: Any) -> Any:
    tag, text = item
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        raise TypeError("a cursor value is a string or a number")
    return _LOAD[tag](text)


def fingerprint(spec: ListSpec, request: PageRequest) -> str:
    """What a cursor is bound to: the list, its scope and filters, its sort and direction."""
    scope = [spec.table, str(request.tenant_id), sort_field(spec, request), request.direction]
    filters = sorted((k, str(v)) for k, v in request.filters.items())
    return _digest([scope, filters, str(request.since), str(request.until)])


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _seal(key: bytes, value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()[:32]


def encode_cursor(position: Position, fingerprint: str, key: bytes) -> str:
    body: dict[str, Any] = {
        "s": position.sort,
        "d": position.direction,
        "v": _dump(position.value),
        "i": _dump(position.id),
    }
    body["f"] = _seal(key, [fingerprint, body])
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str, key: bytes) -> Position:
    """The position in ``cursor``, if this server issued it for a query with ``fingerprint``."""
    body = _unpack(cursor)
    check = str(body.pop("f", "")).encode()
    if not hmac.compare_digest(check, _seal(key, [fingerprint, body]).encode()):
        raise InvalidCursorError("the cursor is not one this API issued for this query")
    try:
        return Position(body["s"], body["d"], _load(body["v"]), _load(body["i"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCursorError("the cursor is malformed") from exc


def _unpack(cursor: str) -> dict[str, Any]:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursorError("the cursor is not one this API issued") from exc
    if not isinstance(body, dict):
        raise InvalidCursorError("the cursor is not one this API issued")
    return body


def sort_field(spec: ListSpec, request: PageRequest) -> str:
    sort = request.sort or spec.sort_fields[0]
    if sort not in spec.sort_fields:
        raise InvalidPageRequestError(f"sort must be one of {', '.join(spec.sort_fields)}")
    return sort


def build_page_query(
    spec: ListSpec, request: PageRequest, key: bytes
) -> tuple[sql.Composed, list[Any]]:
    """The SELECT for one page (``limit + 1`` rows: the extra one says a next page exists)."""
    sort = sort_field(spec, request)
    mark = fingerprint(spec, request)
    after = decode_cursor(request.cursor, mark, key) if request.cursor else None
    where, params = _where(spec, request, sort, after)
    order = sql.SQL("DESC" if request.direction == "desc" else "ASC")
    query = sql.SQL("SELECT {cols} FROM {table}{where} ORDER BY {sort} {o}, {id} {o} LIMIT %s")
    return query.format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns),
        table=sql.Identifier(*spec.table.split(".")),
        where=where,
        sort=sql.Identifier(sort),
        id=sql.Identifier(spec.id_column),
        o=order,
    ), [*params, request.limit + 1]


def _where(
    spec: ListSpec, request: PageRequest, sort: str, after: Position | None
) -> tuple[sql.Composable, list[Any]]:
    equal = dict(request.filters)
    if request.tenant_id is not None:
        equal[spec.tenant_column] = request.tenant_id
    parts = [sql.SQL("{} = %s").format(sql.Identifier(column)) for column in equal]
    params = list(equal.values())
    for bound, op in ((request.since, ">="), (request.until, "<")):
        if bound is not None:
            parts.append(sql.SQL("{} {} %s").format(sql.Identifier(sort), sql.SQL(op)))
            params.append(bound)
    if after is not None:
        keyset = sql.SQL("({}, {}) {} (%s, %s)").format(
            sql.Identifier(sort),
            sql.Identifier(spec.id_column),
            sql.SQL("<" if request.direction == "desc" else ">"),
        )
        parts.append(keyset)
        params += [after.value, after.id]
    if not parts:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


async def fetch_page(conn: AsyncConnection[Any], spec: ListSpec, request: PageRequest) -> Page:
    key = await signing_key(conn)
    query, params = build_page_query(spec, request, key)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    items = rows[: request.limit]
    more = len(rows) > request.limit
    return Page(items, _next_cursor(spec, request, items[-1], key) if more else None)


async def signing_key(conn: AsyncConnection[Any]) -> bytes:
    """The server's signing secret (made by migration 0009, shared by every replica)."""
    cur = await conn.execute("SELECT value FROM server_secrets WHERE name = 'signing'")
    row = await cur.fetchone()
    if row is None:
        raise LookupError("no signing secret: run the migrations (`gpucloud up` does)")
    return bytes(row[0])


def _next_cursor(spec: ListSpec, request: PageRequest, last: dict[str, Any], key: bytes) -> str:
    sort = sort_field(spec, request)
    position = Position(sort, request.direction, last[sort], last[spec.id_column])
    return encode_cursor(position, fingerprint(spec, request), key)
