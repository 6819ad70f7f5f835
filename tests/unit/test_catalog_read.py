"""The catalog's edges without I/O: money and counts at the HTTP boundary, list queries, and
how `gpucloud node register` settles a node's GPUs."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from pydantic import ValidationError

from gateways.cli import catalog as catalog_cli
from gateways.cli.catalog import Driver, node_gpus, parse_labels
from gateways.http.models.catalog import ChangePrice, CreateSku, NodeQuery, RegisterNode, SkuQuery
from infra.gpus import Discovery, GpuInfo

SKU: dict[str, Any] = {
    "name": "1x H100",
    "gpu_model": "NVIDIA H100",
    "gpus": 1,
    "vcpus": 8,
    "ram_gib": 64,
    "disk_gib": 100,
    "regions": ["eu-west-1"],
    "price_per_gpu_hour": 2_500_000,
}


@pytest.mark.parametrize("price", [2_500_000, "2500000"])
def test_a_price_is_an_integer_or_a_string_of_digits(price: object) -> None:
    assert ChangePrice.model_validate({"price_per_gpu_hour": price}).price_per_gpu_hour == 2_500_000


@pytest.mark.parametrize("price", [2.5, 2.0, "2.5", "1e6", True, 0, "-1", 10**12, None])
def test_a_price_that_is_not_whole_positive_micro_dollars_is_refused(price: object) -> None:
    with pytest.raises(ValidationError):
        ChangePrice.model_validate({"price_per_gpu_hour": price})


@pytest.mark.parametrize(
    "change",
    [{"gpus": True}, {"gpus": 2.0}, {"regions": []}, {"regions": ["EU"]}, {"colour": "red"}],
)
def test_a_sku_body_with_a_coerced_count_a_bad_region_or_an_extra_field_is_refused(
    change: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        CreateSku.model_validate({**SKU, **change})


def test_a_node_body_takes_labels_and_no_address_by_default() -> None:
    body = {"driver": "local", "region": "eu-west-1", "gpu_model": "L4", "gpu_count": 2}
    node = RegisterNode.model_validate({**body, "labels": {"rack": "a1"}})
    assert (node.address, node.labels) == (None, {"rack": "a1"})


def test_list_queries_pass_only_the_filters_given() -> None:
    page = SkuQuery(region="eu-west-1", active=False, limit=5).page(None)
    assert (page.filters, page.sort, page.limit) == (
        {"region": "eu-west-1", "active": False},
        "created_at",
        5,
    )
    assert NodeQuery().page(None).filters == {}
    with pytest.raises(ValidationError):
        SkuQuery.model_validate({"sort": "vcpus"})


def found(*names: str) -> Discovery:
    gpus = tuple(GpuInfo(i, name, f"GPU-{i}", 81_559) for i, name in enumerate(names))
    top = max(set(names), key=names.count)
    return Discovery(top, names.count(top), gpus, "550.54.15")


def test_discover_takes_the_model_and_count_nvml_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_cli.gpus, "discover", lambda: found("H100", "H100", "L4"))
    assert node_gpus(Driver.local, True, None, None) == ("H100", 2)
    assert node_gpus(Driver.ssh, False, "L4", 4) == ("L4", 4)


@pytest.mark.parametrize(
    ("driver", "discover", "model", "count"),
    [
        (Driver.local, True, None, None),  # no NVML here
        (Driver.local, True, "L4", None),  # both ways at once
        (Driver.ssh, True, None, None),  # NVML reads this machine, not the remote node
        (Driver.local, False, "L4", None),  # half of the manual way
    ],
)
def test_node_gpus_that_cannot_be_settled_exit_2(
    monkeypatch: pytest.MonkeyPatch, driver: Driver, discover: bool, model: str | None,
    count: int | None,
) -> None:  # fmt: skip
    monkeypatch.setattr(catalog_cli.gpus, "discover", lambda: None)
    with pytest.raises(typer.Exit) as exited:
        node_gpus(driver, discover, model, count)
    assert exited.value.exit_code == 2


def test_labels_are_key_value_pairs() -> None:
    assert parse_labels(["rack=a1", "zone=b=c", "empty="]) == {
        "rack": "a1",
        "zone": "b=c",
        "empty": "",
    }
    with pytest.raises(typer.Exit):
        parse_labels(["rack"])
