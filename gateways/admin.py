"""`gpucloud admin`: bootstrap identities straight through the identity application."""

from __future__ import annotations

from datetime import UTC, datetime

from gateways.output import show
from infra.bootstrap import build_system
from infra.eventstore import event_metadata
from infra.settings import Settings

SHOWN_ONCE = "[yellow]The API key is shown once: keep it now.[/]"


def create_tenant(settings: Settings, name: str, owner_email: str | None, json_out: bool) -> None:
    identity = build_system(settings).identity
    try:
        with event_metadata(actor="cli:admin", correlation_id=f"cli-{datetime.now(UTC)}"):
            opened = identity.create_tenant(name, None, datetime.now(UTC), owner_email)
    finally:
        identity.close()
    assert opened.key is not None  # a fresh tenant always comes with its owner's key
    data = {"tenant_id": str(opened.tenant.id), "owner_user_id": str(opened.owner_id)}
    show(json_out, {**data, "api_key": opened.key.token}, SHOWN_ONCE)


def create_ops_key(settings: Settings, name: str, json_out: bool) -> None:
    identity = build_system(settings).identity
    try:
        with event_metadata(actor="cli:admin"):
            issued = identity.issue_ops_key(name, datetime.now(UTC))
    finally:
        identity.close()
    show(json_out, {"key_id": str(issued.id), "api_key": issued.token}, SHOWN_ONCE)
