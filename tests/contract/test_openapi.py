"""openapi/openapi.yaml: the code's OpenAPI, committed, valid, and safe with money."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from gateways.http.contract import openapi_document
from tests.contract.rules import load, money_violations

REGENERATE = "run `.venv/bin/python tools/export_contracts.py` and commit the result"
PUBLIC = {"/healthz", "/readyz"}
SIGNED = {"/v1/webhooks/stripe"}  # a signature over the body authenticates it: no key, no 429
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def test_the_committed_openapi_is_what_the_app_generates() -> None:
    assert load("openapi/openapi.yaml") == openapi_document(), (
        f"openapi/openapi.yaml drifted from the code: {REGENERATE}"
    )


def test_the_committed_openapi_is_valid() -> None:
    validate(load("openapi/openapi.yaml"))


def test_no_money_field_is_a_json_number() -> None:
    assert money_violations(load("openapi/openapi.yaml")) == []


def test_every_operation_but_health_requires_a_credential() -> None:
    paths = load("openapi/openapi.yaml")["paths"]
    open_operations = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        if path not in PUBLIC
        for method, operation in operations.items()
        if method in METHODS and not operation.get("security")
    ]
    assert open_operations == []


def test_every_operation_but_health_documents_the_problems_of_its_guard() -> None:
    paths = load("openapi/openapi.yaml")["paths"]
    missing = [
        f"{method.upper()} {path}: {status}"
        for path, operations in paths.items()
        if path not in PUBLIC
        for method, operation in operations.items()
        for status in (("400", "503") if path in SIGNED else ("401", "429", "503"))
        if status not in operation["responses"]
    ]
    assert missing == []


def test_every_error_answer_is_a_problem() -> None:
    document = load("openapi/openapi.yaml")
    not_problems = [
        f"{method.upper()} {path} {status}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400 and (path, status) != ("/readyz", "503")
        and response["content"] != {"application/problem+json": {"schema": PROBLEM}}
    ]  # fmt: skip
    assert not_problems == []


class Price(BaseModel):
    unit_price: float


class Good(BaseModel):
    amount_micros: int


@pytest.mark.parametrize(
    "document",
    [
        {"components": {"schemas": {"Price": Price.model_json_schema()}}},
        {"schemas": {"L": {"type": "array", "items": {"properties": {"balance": {}}}}}},
        {"properties": {"cost": {"anyOf": [{"type": "integer"}, {"type": "number"}]}}},
        {"properties": {"Amount": {"type": "string"}}},
        {"parameters": [{"name": "max_price", "in": "query", "schema": {"type": "number"}}]},
        {
            "properties": {"price": {"$ref": "#/components/schemas/Micros"}},
            "components": {"schemas": {"Micros": {"type": ["number", "null"]}}},
        },
    ],
)
def test_the_money_rule_catches_a_float(document: dict[str, object]) -> None:
    assert money_violations(document) != []


def test_the_money_rule_passes_integers_and_patterned_strings() -> None:
    document = {
        "components": {"schemas": {"Good": Good.model_json_schema()}},
        "properties": {
            "price": {"type": "string", "pattern": "^[0-9]+$"},
            "balance_micros": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
    }
    assert money_violations(document) == []
