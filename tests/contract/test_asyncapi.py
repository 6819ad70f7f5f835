"""asyncapi/asyncapi.yaml: FastStream's AsyncAPI, committed, valid by the AsyncAPI parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateways.http.contract import asyncapi_document
from tests.contract.rules import ROOT, load, money_violations

REGENERATE = "run `.venv/bin/python tools/export_contracts.py` and commit the result"
VALIDATOR = ROOT / "tools" / "asyncapi-validator"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """The official @asyncapi/parser, run by tools/asyncapi-validator/validate.mjs."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js 20 is needed to validate the AsyncAPI document; install it")
    if not (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the AsyncAPI validator is not installed: run `make test`")
    command = [node, str(VALIDATOR / "validate.mjs"), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_committed_asyncapi_is_what_faststream_generates() -> None:
    assert load("asyncapi/asyncapi.yaml") == asyncapi_document(), (
        f"asyncapi/asyncapi.yaml drifted from the code: {REGENERATE}"
    )


def test_the_committed_asyncapi_is_valid() -> None:
    result = validate(ROOT / "asyncapi" / "asyncapi.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def _without_info(doc: dict[str, Any]) -> None:
    del doc["info"]


def _publish_action(doc: dict[str, Any]) -> None:
    for operation in doc["operations"].values():
        operation["action"] = "publish"  # AsyncAPI 2 wording; 3.0 knows send and receive


def _dangling_ref(doc: dict[str, Any]) -> None:
    for channel in doc["channels"].values():
        channel["messages"]["Message"] = {"$ref": "#/components/messages/Nowhere"}


@pytest.mark.parametrize("breakage", [_without_info, _publish_action, _dangling_ref])
def test_the_validator_rejects_a_broken_document(breakage: Any, tmp_path: Path) -> None:
    doc = load("asyncapi/asyncapi.yaml")
    breakage(doc)
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = validate(broken)
    assert result.returncode != 0, result.stdout
    assert "INVALID" in result.stdout


def test_no_money_field_is_a_json_number() -> None:
    assert money_violations(load("asyncapi/asyncapi.yaml")) == []
