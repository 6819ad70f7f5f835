"""How CLI commands print data: one JSON line with --json, else a two-column table."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def show(json_out: bool, data: dict[str, Any], note: str | None = None) -> None:
    if json_out:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()
        return
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)
    if note:
        console.print(note)
