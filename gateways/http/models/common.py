"""Shapes every context's requests share: strict bodies, regions, instants, list queries."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from projections.pagination import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT, PageRequest

REGION = r"^[a-z]{2,}(-[a-z]+)+-[0-9]{1,2}$"
Region = Annotated[str, StringConstraints(pattern=REGION), Field(examples=["eu-west-1"])]
RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _rfc3339(value: object) -> object:
    """Pydantic reads a number, or a string of one, as Unix time; the contract says date-time."""
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with a time zone, like 2026-01-31T12:00:00Z")


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListQuery(BaseModel):
    """Keyset pagination: send a page's ``next_cursor`` back, with the same filters and sort."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(
        default=None, max_length=MAX_CURSOR_CHARS, description="next_cursor of a page"
    )
    direction: Literal["asc", "desc"] = "asc"
    sort: str = "created_at"

    def filters(self) -> dict[str, Any]:
        return {}

    def page(self, tenant_id: UUID | None) -> PageRequest:
        filters = {k: v for k, v in self.filters().items() if v is not None}
        return PageRequest(tenant_id, filters, self.sort, self.direction, self.limit, self.cursor)
