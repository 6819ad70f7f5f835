"""`gpucloud admin`: bootstrap identities straight through the identity application."""

from __future__ import annotations

from uuid import uuid4

from gateways.cli.output import show
from infra.bootstrap import build_system
from infra.eventstore import event_metadata
from infra.settings import Settings

SHOWN_ONCE = "[yellow]The API key is shown once: keep it now.[/]"


def create_tenant(settings: Settings, name: str, owner_email: str | None, json_out: bool) -> None:
    system = build_system(settings)
    try:
        with event_metadata(actor="cli:admin", correlation_id=f"cli-{uuid4()}"):
            opened = system.identity.create_tenant(name, None, system.clock(), owner_email)
    finally:
        system.close_write_side()
    assert opened.key is not None  # a fresh tenant always comes with its owner's key
    data = {"tenant_id": str(opened.tenant.id), "owner_user_id": str(opened.owner_id)}
    show(json_out, {**data, "api_key": opened.key.token}, SHOWN_ONCE)


def create_ops_key(settings: Settings, name: str, json_out: bool) -> None:
    system = build_system(settings)
    try:
        with event_metadata(actor="cli:admin", correlation_id=f"cli-{uuid4()}"):
            issued = system.identity.issue_ops_key(name, system.clock())
    finally:
        system.close_write_side()
    show(json_out, {"key_id": str(issued.id), "api_key": issued.token}, SHOWN_ONCE)
