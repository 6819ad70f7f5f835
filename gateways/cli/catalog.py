"""`gpucloud node ...` and `gpucloud sku ...`: ops manage the catalog straight through the
inventory application, as `gpucloud admin` does for identities.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import typer

from domain.catalog import DEFAULT_PROVISION_DEADLINE
from gateways.cli.common import DataDir, JsonOut, err, fail, refusals, settings_for
from gateways.cli.output import show
from handlers.identity import Written
from handlers.inventory import Inventory
from infra import gpus
from infra.bootstrap import build_system
from infra.eventstore import event_metadata

node_app = typer.Typer(help="Nodes: the machines whose GPUs tenants rent.", no_args_is_help=True)
sku_app = typer.Typer(help="SKUs: the shapes tenants rent.", no_args_is_help=True)

PER_GPU = {"vcpus": 8, "ram_gib": 64, "disk_gib": 200}  # defaults, per GPU of the SKU


class Driver(StrEnum):
    local = "local"
    ssh = "ssh"


@node_app.command("register")
def register_node(
    driver: Annotated[Driver, typer.Option(help="local: this machine; ssh: a remote one.")],
    region: Annotated[str, typer.Option(help="Region code, like eu-west-1.")],
    address: Annotated[str | None, typer.Option(help="HOST:PORT of an ssh node.")] = None,
    discover: Annotated[
        bool, typer.Option("--discover", help="Read this machine's GPUs through NVML.")
    ] = False,
    gpu_model: Annotated[str | None, typer.Option(help="GPU model, without --discover.")] = None,
    gpu_count: Annotated[int | None, typer.Option(min=1, help="GPUs, without --discover.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="k=v; repeat for more.")] = None,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Register a node (active at once); prints its id."""
    model, count = node_gpus(driver, discover, gpu_model, gpu_count)
    spec: dict[str, Any] = dict(region=region, gpu_model=model, gpu_count=count)
    spec.update(driver=driver.value)
    spec.update(address=address, labels=parse_labels(label or []))
    written = write(data_dir, lambda inventory: inventory.register_node(**spec))
    show(json_out, {"id": str(written.id), **spec})


def node_gpus(
    driver: Driver, discover: bool, gpu_model: str | None, gpu_count: int | None
) -> tuple[str, int]:
    """The node's GPU model and count: discovered through NVML, or as given."""
    if discover and (gpu_model is not None or gpu_count is not None):
        fail("pass either --discover or --gpu-model with --gpu-count, not both")
    if not discover:
        if gpu_model is None or gpu_count is None:
            fail("pass --gpu-model and --gpu-count, or --discover to read them through NVML")
        return gpu_model, gpu_count
    if driver is not Driver.local:
        fail("--discover reads this machine's GPUs: use it with --driver local")
    found = gpus.discover()
    if found is None:
        fail(
            "no NVIDIA GPU found through NVML on this machine (no driver or no GPU): "
            "pass --gpu-model and --gpu-count instead of --discover"
        )
    if found.mixed:
        err.print(f"[yellow]warning:[/] several GPU models here; the node offers {found.gpu_model}")
    return found.gpu_model, found.gpu_count


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--label {pair!r} must be key=value")
        labels[key] = value
    return labels


@sku_app.command("create")
def create_sku(
    name: Annotated[str, typer.Option(help="What tenants see, like '1x H100'.")],
    gpu_model: Annotated[str, typer.Option(help="GPU model the SKU places on.")],
    gpus_: Annotated[int, typer.Option("--gpus", min=1, help="GPUs per unit.")],
    region: Annotated[list[str], typer.Option(help="Region code; repeat for more.")],
    price_per_gpu_hour: Annotated[
        int, typer.Option(help="Integer micro-dollars per GPU-hour (2500000 = $2.50).")
    ],
    vcpus: Annotated[int | None, typer.Option(help="Default: 8 per GPU.")] = None,
    ram_gib: Annotated[int | None, typer.Option(help="Default: 64 per GPU.")] = None,
    disk_gib: Annotated[int | None, typer.Option(help="Default: 200 per GPU.")] = None,
    provision_deadline: Annotated[
        int, typer.Option(help="Seconds an allocation may take to start before it fails.")
    ] = DEFAULT_PROVISION_DEADLINE,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Add a SKU to the catalog (active at once); prints its id."""
    given = {"vcpus": vcpus, "ram_gib": ram_gib, "disk_gib": disk_gib}
    sizes = {k: v if v is not None else PER_GPU[k] * gpus_ for k, v in given.items()}
    spec: dict[str, Any] = dict(name=name, gpu_model=gpu_model, gpus=gpus_, **sizes)
    spec.update(regions=region, price_per_gpu_hour=price_per_gpu_hour)
    spec.update(provision_deadline_seconds=provision_deadline)
    written = write(data_dir, lambda inventory: inventory.create_sku(**spec))
    show(json_out, {"id": str(written.id), **spec})


def write(data_dir: Path | None, command: Callable[[Inventory], Written]) -> Written:
    """Run one inventory command as ``cli:ops``; domain refusals exit 2 with one line."""
    system = build_system(settings_for(data_dir))
    try:
        with refusals(), event_metadata(actor="cli:ops", correlation_id=f"cli-{uuid4()}"):
            return command(system.inventory)
    finally:
        system.close_write_side()
