"""What every `gpucloud` command shares: options, finding the system, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from domain.errors import DomainError
from infra.bootstrap import SystemNotFoundError, resolve
from infra.observability import setup_logging
from infra.settings import Settings

err = Console(stderr=True, soft_wrap=True)
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="GPUCLOUD_DATA_DIR", help="Embedded stack's data folder."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2: what went wrong and what to do next."""
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def settings_for(data_dir: Path | None, role: str = "cli") -> Settings:
    """Every command finds the system the same way (env vars, else the running stack)."""
    base = Settings()
    if data_dir is not None:
        base = base.with_(data_dir=data_dir)
    setup_logging("WARNING" if role == "cli" else base.log_level, role)  # CLI: errors only
    try:
        return resolve(base)
    except SystemNotFoundError as exc:
        fail(str(exc))


@contextmanager
def refusals() -> Iterator[None]:
    """Domain refusals become a one-line error and exit status 2, not a traceback."""
    try:
        yield
    except DomainError as exc:
        fail(str(exc))
