"""`gpucloud up` as a user runs it: embedded servers, restart, clean shutdown, the ops CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from infra.embedded import free_port

pytestmark = pytest.mark.e2e


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    return {**env, "GPUCLOUD_DATA_DIR": str(data_dir)}


def start_up(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateways.cli", "up", "--api-port", str(port)],
        env=embedded_env(data_dir),
    )


def wait_ready(data_dir: Path, port: int, up: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert up.poll() is None, "gpucloud up exited early"
        stack = data_dir / "stack.json"
        try:
            if stack.exists() and httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                found = dict(json.loads(stack.read_text()))
                return {**found, "ops_key": (data_dir / "ops_key").read_text().strip()}
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("gpucloud up did not become ready in 60 s")


def stop_up(up: subprocess.Popen[bytes], stack: dict[str, Any]) -> None:
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0
    for pid in (stack["postgres_pid"], stack["broker_pid"]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def served(url: str, needle: str, timeout: float = 15) -> bool:
    """Whether ``url`` shows ``needle`` within ``timeout`` (the relay counts after its acks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in httpx.get(url).text:
            return True
        time.sleep(0.2)
    return False


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateways.cli", *args],
        env=embedded_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )


def create(port: int, token: str, name: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/tenants",
        json={"name": name},
        headers={"Authorization": f"Bearer {token}"},
    )


def read(port: int, token: str, created: httpx.Response | str) -> httpx.Response:
    """GET the tenant; on 503 projection-behind, retry as a client told Retry-After would."""
    deadline = time.monotonic() + 30
    while True:
        answer = _read_once(port, token, created)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))


def _read_once(port: int, token: str, created: httpx.Response | str) -> httpx.Response:
    if isinstance(created, str):
        return httpx.get(
            f"http://127.0.0.1:{port}/v1/tenants/{created}",
            headers={"Authorization": f"Bearer {token}"},
        )
    return httpx.get(
        f"http://127.0.0.1:{port}{created.headers['Location']}",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Position-Token": created.headers["X-Position-Token"],
        },
    )


def top_up_through_the_stand_in(port: int, key: str) -> int:
    """$5 through `up`'s Stripe stand-in: checkout, press Pay, wait for the credit."""
    api, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    made = httpx.post(
        f"{api}/v1/payments/checkout", json={"amount": "5000000"},
        headers={**auth, "Idempotency-Key": "embedded-topup"}, timeout=10,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert httpx.post(f"{made.json()['checkout_url']}/pay").status_code == 303
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        posted = int(httpx.get(f"{api}/v1/ledger", headers=auth).json()["posted"])
        if posted > 10_000_000:
            return posted
        time.sleep(0.2)
    return posted


def test_the_embedded_stack_survives_a_restart_and_leaves_no_process(server_dir: Path) -> None:
    data_dir, port = server_dir / "gpucloud", free_port()
    up = start_up(data_dir, port)
    try:
        stack = wait_ready(data_dir, port, up)
        first = create(port, stack["ops_key"], "Before Restart")
        assert read(port, stack["ops_key"], first).status_code == 200
        topped_up = top_up_through_the_stand_in(port, (data_dir / "demo_key").read_text().strip())
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    stop_up(up, stack)
    assert not (data_dir / "stack.json").exists()
    assert stack["stripe_standin"] == f"http://127.0.0.1:{port + 9}"
    assert topped_up == 10_000_000 + 5_000_000  # the demo's promotional $10 and the $5 paid

    up = start_up(data_dir, port)
    try:
        stack = wait_ready(data_dir, port, up)
        old = read(port, stack["ops_key"], first.json()["id"])
        second = create(port, stack["ops_key"], "After Restart")
        assert read(port, stack["ops_key"], second).status_code == 200
        tail = cli(data_dir, "events", "tail", "identity.tenant.v1", "--json", "--limit", "3")
        # seeding (ops key; Demo tenant, owner, key) and Before Restart, then After Restart: 3 each
        relay_counted = served(
            f"http://127.0.0.1:{port + 2}/metrics",
            'gpucloud_relay_published_total{context="identity"} 10.0',
        )
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    stop_up(up, stack)

    assert old.status_code == 200 and old.json()["name"] == "Before Restart"
    assert tail.returncode == 0, tail.stderr
    assert relay_counted
    names = sorted(
        json.loads(json.loads(line)["value"])["name"] for line in tail.stdout.splitlines()
    )
    assert names == ["After Restart", "Before Restart", "Demo"]  # republished to the new broker


def test_commands_without_a_running_stack_say_how_to_start_one(server_dir: Path) -> None:
    answer = cli(server_dir / "nothing-here", "events", "tail", "identity.tenant.v1")
    assert answer.returncode == 2
    assert "gpucloud up" in answer.stderr
