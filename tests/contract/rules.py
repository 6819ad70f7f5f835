"""Rules the contract tests apply to whole documents: $ref lookup and the money rule.

Money is integer micro-units (or a string with a pattern), never a JSON number: a float cannot
hold 0.1 exactly, and a client reading `number` will reach for one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONEY = re.compile(r"amount|price|balance|micro|cost", re.IGNORECASE)


def load(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))
    return document


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s (`#/a/b`, JSON Pointer escapes) until a node that is not one."""
    while isinstance(node, dict) and str(node.get("$ref", "")).startswith("#/"):
        parts = node["$ref"][2:].split("/")
        node = document
        for part in parts:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def money_violations(document: dict[str, Any]) -> list[str]:
    """Every property or parameter named like money whose schema could hold a float."""
    return [
        f"{where}/{name}: {schema}"
        for where, name, schema in named_schemas(document)
        if MONEY.search(name) and not _money_safe(document, schema)
    ]


def named_schemas(node: Any, where: str = "#") -> Iterator[tuple[str, str, Any]]:
    """(location, name, schema) of every schema property and every parameter, at any depth."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from named_schemas(item, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("properties"), dict):
        for name, schema in node["properties"].items():
            yield f"{where}/properties", name, schema
    if {"name", "in", "schema"} <= node.keys():
        yield where, str(node["name"]), node["schema"]
    for key, value in node.items():
        yield from named_schemas(value, f"{where}/{key}")


def _money_safe(document: dict[str, Any], schema: Any) -> bool:
    schema = resolve(document, schema)
    if not isinstance(schema, dict):
        return False
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return all(_money_safe(document, branch) for branch in schema[combinator])
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return all(k in ("integer", "null") or (k == "string" and "pattern" in schema) for k in kinds)
