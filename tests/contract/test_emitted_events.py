"""The session-wide event check (tests/contract_plugin.py) on real and on broken messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import relay
from infra.bootstrap import System, build_system
from infra.cloudevents import OutboundMessage, to_message
from infra.eventstore import event_metadata
from infra.settings import Settings
from tests import contract_plugin
from tests.contract.rules import ROOT, load
from tests.contract_plugin import check_message

TENANT = "0b6a3c8e-6f1e-4a57-9d65-2f1d3c4b5a69"
REGISTER = 'register the plugin in tests/conftest.py: pytest_plugins = ["tests.contract_plugin"]'
HEADERS = {
    "ce_id": "1c1f7f2d-5d0a-5e0c-8d6f-3b7f3f6c2a10",
    "ce_type": "cloud.gpu.tenant.created.v1",
    "ce_source": "/gpucloud/identity",
    "ce_subject": TENANT,
    "ce_time": "2026-01-02T03:04:05.123456Z",
    "content-type": "application/json",
    "ce_tenantid": TENANT,
    "ce_sequence": "1",
    "ce_position": "7",
    "ce_correlationid": "req-1",
    "ce_causationid": "req-1",
    "ce_specversion": "1.0",
}


def sample(**payload: Any) -> OutboundMessage:
    """A hand-made message that conforms, with ``payload`` fields changed."""
    value = {"schema_version": 1, "tenant_id": TENANT, "name": "Acme", **payload}
    value.setdefault("created_at", HEADERS["ce_time"])
    encoded = [(name, text.encode()) for name, text in HEADERS.items()]
    return OutboundMessage(
        "identity.tenant.v1", TENANT.encode(), json.dumps(value).encode(), encoded
    )


def with_header(name: str, text: str | None) -> OutboundMessage:
    message = sample()
    kept = [(n, v) for n, v in message.headers if n != name]
    return replace(message, headers=kept + ([(name, text.encode())] if text is not None else []))


@pytest.fixture
def write_side(settings: Settings) -> Iterator[System]:
    """This test's applications on PostgreSQL (no read pool): events to relay."""
    built = build_system(settings)
    yield built
    built.close_write_side()


def stored_tenant_event(system: System) -> Any:
    with event_metadata(correlation_id="req-7", causation_id="req-7"):
        system.identity.create_tenant("Acme Research", None, datetime.now(UTC))
    return system.identity.recorder.select_notifications(1, 10)[0]  # the tenant's event


def test_a_created_tenant_is_an_event_the_contract_accepts(write_side: System) -> None:
    message = to_message(
        write_side.identity.name, write_side.identity.mapper, stored_tenant_event(write_side)
    )
    assert check_message(message, load("asyncapi/asyncapi.yaml")) == []


def test_the_relay_records_every_message_it_builds(
    write_side: System, pytestconfig: pytest.Config
) -> None:
    assert pytestconfig.pluginmanager.has_plugin("tests.contract_plugin"), REGISTER
    note = stored_tenant_event(write_side)
    message = relay.to_message(write_side.identity.name, write_side.identity.mapper, note)
    assert contract_plugin.RECORDER.messages[-1][1] is message
    assert message == to_message(write_side.identity.name, write_side.identity.mapper, note)


def test_the_hand_made_sample_conforms() -> None:
    assert check_message(sample(), load("asyncapi/asyncapi.yaml")) == []


BROKEN: list[tuple[Callable[[], OutboundMessage], str]] = [
    (lambda: sample(balance=1.5), "Additional properties are not allowed"),
    (lambda: sample(tenant_id="not-a-uuid"), "payload/tenant_id: 'not-a-uuid' is not a 'uuid'"),
    (lambda: sample(created_at="yesterday"), "is not a 'date-time'"),
    (lambda: sample(schema_version=2), "payload/schema_version: 1 was expected"),
    (lambda: with_header("ce_tenantid", None), "header ce_tenantid missing"),
    (lambda: with_header("ce_correlationid", ""), "header ce_correlationid missing"),
    (lambda: with_header("ce_type", "cloud.gpu.ledger.posted.v1"), "headers/ce_type"),
    (lambda: with_header("ce_specversion", "0.3"), "headers/ce_specversion"),
    (lambda: with_header("ce_sequence", "0"), "headers/ce_sequence"),
    (lambda: with_header("ce_time", "noon"), "headers/ce_time: 'noon' is not a 'date-time'"),
    (lambda: replace(sample(), topic="identity.nothing.v1"), "is not in asyncapi.yaml"),
    (lambda: replace(sample(), value=b"{not json"), "the value is not JSON"),
    (lambda: replace(sample(), key=b"another-aggregate"), "the Kafka key is not ce_subject"),
]


@pytest.mark.parametrize(("make", "reported"), BROKEN)
def test_a_broken_message_is_reported(make: Callable[[], OutboundMessage], reported: str) -> None:
    problems = check_message(make(), load("asyncapi/asyncapi.yaml"))
    assert any(reported in p for p in problems), problems


RUN = """
from tests.contract.test_emitted_events import sample
from tests.contract_plugin import RECORDER

def test_emits_one_event():
    RECORDER.wrap(sample)({payload})
"""


@pytest.mark.parametrize(("payload", "exit_code"), [("", 0), ("tenant_id='x'", 1)])
def test_a_violation_turns_the_whole_run_red(payload: str, exit_code: int, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_emits.py").write_text(RUN.format(payload=payload))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "tests.contract_plugin", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == exit_code, run.stdout + run.stderr
    assert ("event contract violations" in run.stdout) == bool(exit_code), run.stdout
