"""What the inner layers may import, as allow-lists (import-linter's contracts in pyproject.toml
can only forbid what they name; a new framework would slip past them).

- ``domain/``: the standard library and ``eventsourcing.domain``, and itself.
- ``handlers/``: the standard library, eventsourcing, the domain and itself. No psycopg,
  pydantic, FastAPI, FastStream, asyncssh, aiokafka, orjson, nor infra, projections, gateways.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
ALLOWED = {
    "domain": ("domain", "eventsourcing.domain"),
    "handlers": ("handlers", "domain", "eventsourcing"),
}


def imported(source: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def refused(source: str, allowed: tuple[str, ...]) -> list[str]:
    def ok(name: str) -> bool:
        return name.split(".")[0] in STDLIB or any(
            name == a or name.startswith(a + ".") for a in allowed
        )

    return [name for name in imported(source) if not ok(name)]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_an_inner_layer_imports_only_what_its_allow_list_names(package: str) -> None:
    found = {
        str(path.relative_to(ROOT)): bad
        for path in sorted((ROOT / package).rglob("*.py"))
        if (bad := refused(path.read_text(), ALLOWED[package]))
    }
    assert found == {}


@pytest.mark.parametrize(
    ("package", "line"),
    [
        ("domain", "import orjson"),
        ("domain", "from eventsourcing.application import Application"),
        ("domain", "from handlers.base import Written"),
        ("handlers", "from psycopg import Connection"),
        ("handlers", "import pydantic"),
        ("handlers", "from fastapi import Request"),
        ("handlers", "from faststream.kafka import KafkaBroker"),
        ("handlers", "import asyncssh"),
        ("handlers", "import orjson"),
        ("handlers", "from infra.bootstrap import System"),
    ],
)
def test_the_check_refuses_an_import_off_the_list(package: str, line: str) -> None:
    source = f"from __future__ import annotations\nimport json\n{line}\n"
    assert refused(source, ALLOWED[package]) == [imported(line)[0]]
