"""The Tenant aggregate: the customer account everything else belongs to."""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import ValidationFailedError

NAME_MAX = 100
_NAME_CHARS = re.compile(r"^[\w .,'&()-]+$")


def check_tenant_name(name: str) -> str:
    """Tenant names are 1-100 printable characters; surrounding blanks are not kept."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > NAME_MAX or not _NAME_CHARS.match(cleaned):
        raise ValidationFailedError(
            f"tenant name must be 1-{NAME_MAX} letters, digits, spaces or .,'&()-"
        )
    return cleaned


class Tenant(Aggregate):
    """A tenant. Its id is also the id its other aggregates (ledger, allocations) key on."""

    TOPIC = "gpucloud.identity.Tenant"

    class Event(Aggregate.Event):
        TOPIC = "gpucloud.identity.Tenant.Event"

    @event("Created", topic="gpucloud.identity.Tenant.Created")
    def __init__(self, id: UUID, name: str, request_hash: str) -> None:
        self.name = name
        self.request_hash = request_hash

    @classmethod
    def register(cls, tenant_id: UUID, name: str, request_hash: str) -> Tenant:
        """Decide: validate the name, then record the creation."""
        return cls(id=tenant_id, name=check_tenant_name(name), request_hash=request_hash)
