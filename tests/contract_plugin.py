"""pytest plugin: every event the relay builds during a test run must match the contract.

For the whole session it wraps `infra.relay.to_message` (the name the relay calls) to record each
OutboundMessage, unchanged. At session end each one is checked against `asyncapi/asyncapi.yaml`:
its JSON value against the payload schema of its topic's messages (any one may match), its
headers against the declared headers, and the CloudEvents headers of ARCHITECTURE section 8.
Any violation is listed in the terminal summary and the run's exit status becomes 1.
Register in tests/conftest.py: `pytest_plugins = ["tests.contract_plugin"]`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import yaml
from jsonschema import Draft202012Validator

from infra import relay
from infra.cloudevents import OutboundMessage
from tests.contract.rules import load, resolve

SHOWN = 50
# ARCHITECTURE section 8, kept apart from the contract's own list so the contract cannot loosen it.
REQUIRED_HEADERS = (
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_subject",
    "ce_time",
    "ce_specversion",
    "ce_tenantid",
    "ce_sequence",
    "ce_correlationid",
)
_PATCHER = pytest.StashKey[Any]()
_VIOLATIONS = pytest.StashKey[list[str]]()


class Recorder:
    """The messages the relay built in this session, each with the test that was running."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, OutboundMessage]] = []
        self.test = "<no test running>"

    def wrap(self, build: Callable[..., OutboundMessage]) -> Callable[..., OutboundMessage]:
        @functools.wraps(build)
        def recording(*args: Any, **kwargs: Any) -> OutboundMessage:
            message = build(*args, **kwargs)
            self.messages.append((self.test, message))
            return message

        return recording


RECORDER = Recorder()


def check_message(message: OutboundMessage, document: dict[str, Any]) -> list[str]:
    """What is wrong with one message by the contract; empty when it conforms."""
    problems = _missing_headers(message)
    declared = _declared_messages(document, message.topic)
    if not declared:
        return [*problems, f"topic {message.topic!r} is not in asyncapi.yaml"]
    failures = [_against(document, spec, message) for spec in declared]
    return problems if not all(failures) else problems + min(failures, key=len)


def _missing_headers(message: OutboundMessage) -> list[str]:
    headers = _headers(message)
    problems = [f"header {h} missing or empty" for h in REQUIRED_HEADERS if not headers.get(h)]
    if headers.get("ce_subject") and message.key.decode(errors="replace") != headers["ce_subject"]:
        problems.append("the Kafka key is not ce_subject (the aggregate id)")
    return problems


def _declared_messages(document: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    return [
        resolve(document, ref)
        for channel in document.get("channels", {}).values()
        if channel.get("address") == topic
        for ref in channel.get("messages", {}).values()
    ]


def _against(document: dict[str, Any], spec: dict[str, Any], message: OutboundMessage) -> list[str]:
    try:
        payload = json.loads(message.value)
    except ValueError as exc:
        return [f"the value is not JSON: {exc}"]
    problems = _schema_errors(document, spec.get("payload"), payload, "payload")
    return problems + _schema_errors(document, spec.get("headers"), _headers(message), "headers")


def _schema_errors(document: dict[str, Any], schema: Any, instance: Any, part: str) -> list[str]:
    """Validate with the document's components at the root, so `#/components/...` resolves."""
    if schema is None:
        return [] if part == "headers" else ["the message declares no payload"]
    root = {**schema, "components": document.get("components", {})}
    validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{part}/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def _headers(message: OutboundMessage) -> dict[str, str]:
    return {name: value.decode(errors="replace") for name, value in message.headers}


def violations(recorded: list[tuple[str, OutboundMessage]], document: dict[str, Any]) -> list[str]:
    return [
        f"{test}: {message.topic} {_headers(message).get('ce_type', '?')}: {problem}"
        for test, message in recorded
        for problem in check_message(message, document)
    ]


def pytest_configure(config: pytest.Config) -> None:
    patcher = mock.patch.object(relay, "to_message", RECORDER.wrap(relay.to_message))
    patcher.start()
    config.stash[_PATCHER] = patcher


def pytest_unconfigure(config: pytest.Config) -> None:
    if (patcher := config.stash.get(_PATCHER, None)) is not None:
        patcher.stop()


def pytest_runtest_logstart(nodeid: str) -> None:
    RECORDER.test = nodeid


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Runs inside the terminal reporter's sessionfinish, so the summary below still prints;
    wrap_session returns session.exitstatus afterwards, so the 1 set here is the exit code."""
    found = _session_violations()
    session.config.stash[_VIOLATIONS] = found
    if found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _session_violations() -> list[str]:
    if not RECORDER.messages:
        return []
    try:
        return violations(RECORDER.messages, load("asyncapi/asyncapi.yaml"))
    except (OSError, yaml.YAMLError, KeyError) as exc:  # unreadable, or a dangling $ref
        return [f"asyncapi/asyncapi.yaml cannot be used: {exc!r}"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    found = config.stash.get(_VIOLATIONS, [])
    count = len(RECORDER.messages)
    if not found:
        if count:
            terminalreporter.write_line(f"event contract: {count} relayed events match asyncapi")
        return
    terminalreporter.section("event contract violations (asyncapi/asyncapi.yaml)", red=True)
    for line in found[:SHOWN]:
        terminalreporter.write_line(line, red=True)
    terminalreporter.write_line(f"{len(found)} violations in {count} relayed events", red=True)
    # Also counted in the final "N passed, ..." line, where the eye goes.
    terminalreporter.stats.setdefault("event contract violations", []).extend(found)
