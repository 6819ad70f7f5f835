"""`gpucloud quota ...`: ops read and set a tenant's GPU limit straight through the compute
application, as the HTTP routes do (``PUT /v1/admin/tenants/{id}/quota``)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID, uuid4

import typer

from domain.quota import MAX_LIMIT, GpuQuota, standing
from domain.tenant import Tenant
from gateways.cli.common import DataDir, JsonOut, refusals, settings_for
from gateways.cli.output import show
from infra.bootstrap import build_system
from infra.eventstore import event_metadata

quota_app = typer.Typer(help="GPU quotas: how many GPUs a tenant may hold.", no_args_is_help=True)
TenantOption = Annotated[UUID, typer.Option("--tenant", help="Whose quota.")]


@quota_app.command("show")
def show_quota(tenant: TenantOption, data_dir: DataDir = None, json_out: JsonOut = False) -> None:
    """The tenant's GPU limit and what its live allocations hold."""
    system = build_system(settings_for(data_dir))
    try:
        with refusals():
            system.identity.get(Tenant, tenant)
            quota = system.compute.quota(tenant)
        show(json_out, _view(tenant, quota, system.compute.admission.quota_gpus))
    finally:
        system.close_write_side()


@quota_app.command("set")
def set_quota(
    tenant: TenantOption,
    gpus: Annotated[
        int | None, typer.Option(min=0, max=MAX_LIMIT, help="The tenant's GPU limit.")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Back to the platform's default limit.")
    ] = False,
    data_dir: DataDir = None,
    json_out: JsonOut = False,
) -> None:
    """Set the tenant's GPU limit (--gpus N) or return it to the default (--default)."""
    if (gpus is None) == (not default):
        raise typer.BadParameter("give either --gpus N or --default")
    system = build_system(settings_for(data_dir))
    try:
        with refusals(), event_metadata(actor="cli:ops", correlation_id=f"cli-{uuid4()}"):
            system.identity.get(Tenant, tenant)
            quota = system.compute.set_quota(tenant, None if default else gpus)
        show(json_out, _view(tenant, quota, system.compute.admission.quota_gpus))
    finally:
        system.close_write_side()


def _view(tenant: UUID, quota: GpuQuota | None, default: int) -> dict[str, object]:
    limit, in_use, is_default = standing(quota, default)
    return {"tenant_id": str(tenant), "gpus_limit": limit, "gpus_in_use": in_use,
            "default": is_default}  # fmt: skip
