"""Write the committed contracts from the code: openapi/openapi.yaml and asyncapi/asyncapi.yaml.

Run `.venv/bin/python tools/export_contracts.py` after changing a route or a wire model; the
contract tests (tests/contract) fail until the committed files match the code again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a plain script: make the project importable from anywhere

from gateways.http.contract import asyncapi_document, openapi_document  # noqa: E402

OPENAPI = ROOT / "openapi" / "openapi.yaml"
ASYNCAPI = ROOT / "asyncapi" / "asyncapi.yaml"
HEADER = (
    "# Generated from the code by tools/export_contracts.py: do not edit by hand.\n"
    "# Regenerate with: .venv/bin/python tools/export_contracts.py\n"
)


def render(document: dict[str, Any]) -> str:
    """YAML in the generator's own key order, which is deterministic, so diffs stay small."""
    return HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    for path, document in ((OPENAPI, openapi_document()), (ASYNCAPI, asyncapi_document())):
        path.parent.mkdir(exist_ok=True)
        path.write_text(render(document), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
