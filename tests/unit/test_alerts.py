"""infra/deploy/alerts.yml: well-formed rules over metrics the code exports (no promtool here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import infra.metrics  # noqa: F401  (registers the metrics)

ALERTS = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "alerts.yml"
METRIC = re.compile(r"\bgpucloud_[a-z_]+")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported() -> set[str]:
    """Metric names as PromQL sees them (a counter's family name lacks its ``_total``)."""
    families = list(REGISTRY.collect())
    return {n for f in families for n in (f.name, f"{f.name}_total")} | {
        s.name for f in families for s in f.samples
    }


def test_every_alert_names_a_metric_the_code_exports() -> None:
    names = exported()
    for rule in rules():
        used = METRIC.findall(rule["expr"])
        assert used, rule["alert"]
        assert set(used) <= names, (rule["alert"], set(used) - names)


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_relay_quarantine_pages() -> None:
    relay = next(r for r in rules() if r["alert"] == "RelayEventQuarantined")
    assert "gpucloud_relay_quarantined_total" in relay["expr"]
    assert relay["labels"]["severity"] == "page"
