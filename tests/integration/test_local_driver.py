"""The local node driver against real processes: workspaces, process groups, signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from uuid import uuid4

import pytest

from handlers.ports import DriverError, InstanceSpec
from infra.drivers import DriverConfig, UnknownDriverKindError, driver_for
from infra.drivers.local import LOG, RECORD, RELEASED, LocalDriver

# The test workload: report its environment and cwd, count its starts, then sleep. Flags:
# --ignore-term (survives SIGTERM), --child (starts a child in its process group).
WORKLOAD = """
import json, os, signal, subprocess, sys, time
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--child" in sys.argv:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    open("child.pid", "w").write(str(child.pid))
with open("starts", "a") as starts:
    starts.write(f"{os.getpid()}\\n")
with open("env.partial", "w") as report:
    json.dump({"env": dict(os.environ), "cwd": os.getcwd()}, report)
os.replace("env.partial", "env.json")
while True:
    time.sleep(3600)
"""
TIMEOUT = 10.0
REPO = Path(__file__).parents[2]


@pytest.fixture
def root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="gpucloud-local-"))
    yield folder
    for record in folder.glob(f"*/{RECORD}"):
        with suppress(ProcessLookupError, ValueError):
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def local(root: Path, *flags: str, grace: float = 2.0) -> LocalDriver:
    command = (sys.executable, "-c", WORKLOAD, *flags)
    return LocalDriver(DriverConfig(workspace_root=root, command=command, stop_grace_seconds=grace))


def new_spec(*gpus: int) -> InstanceSpec:
    return InstanceSpec(uuid4(), uuid4(), uuid4(), None, gpus)


async def until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 5.0) -> None:
    """Poll a condition every 10 ms until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


async def started(root: Path, spec: InstanceSpec) -> dict[str, object]:
    report = root / str(spec.allocation_id) / "env.json"
    await until(report.exists)
    loaded: dict[str, object] = json.loads(report.read_text())
    return loaded


def starts(root: Path, spec: InstanceSpec) -> list[int]:
    return [int(line) for line in (root / str(spec.allocation_id) / "starts").read_text().split()]


async def test_provision_runs_the_workload_in_its_workspace_with_the_claimed_gpus(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCLOUD_SECRET", "not for tenants")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/cuda/lib64")  # where libcuda may be
    spec = new_spec(0, 2)
    instance = await local(root).provision(spec, TIMEOUT)
    report = await started(root, spec)
    workspace = root / str(spec.allocation_id)
    env = report["env"]
    assert isinstance(env, dict)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert env["GPUCLOUD_ALLOCATION_ID"] == str(spec.allocation_id)
    assert env["GPUCLOUD_TENANT_ID"] == str(spec.tenant_id)
    assert "GPUCLOUD_SECRET" not in env
    assert env["LD_LIBRARY_PATH"] == "/usr/local/cuda/lib64"
    assert report["cwd"] == str(workspace)
    assert (instance.allocation_id, instance.node_id) == (spec.allocation_id, spec.node_id)
    assert instance.handle == str(starts(root, spec)[0])
    assert (workspace / LOG).exists()


async def test_provision_twice_from_two_drivers_gives_one_instance(root: Path) -> None:
    spec = new_spec(1)
    first = await local(root).provision(spec, TIMEOUT)
    await started(root, spec)
    again = await local(root).provision(spec, TIMEOUT)
    from_another_driver = await local(root).provision(spec, TIMEOUT)
    assert first == again == from_another_driver
    assert starts(root, spec) == [int(first.handle)]


async def test_provision_from_another_process_finds_the_running_instance(root: Path) -> None:
    spec = new_spec(3)
    instance = await local(root).provision(spec, TIMEOUT)
    await started(root, spec)
    script = (
        "import asyncio, sys, uuid\n"
        "from pathlib import Path\n"
        "from handlers.ports import InstanceSpec\n"
        "from infra.drivers import DriverConfig\n"
        "from infra.drivers.local import LocalDriver\n"
        "ids = [uuid.UUID(value) for value in sys.argv[2:]]\n"
        "spec = InstanceSpec(*ids, None, (3,))\n"
        "driver = LocalDriver(DriverConfig(workspace_root=Path(sys.argv[1])))\n"
        "print(asyncio.run(driver.provision(spec, 10)).handle)\n"
    )
    ids = [str(spec.allocation_id), str(spec.tenant_id), str(spec.node_id)]
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(root), *ids, stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    stdout, _ = await asyncio.wait_for(worker.communicate(), TIMEOUT)
    assert stdout.decode().strip() == instance.handle
    assert starts(root, spec) == [int(instance.handle)]


async def test_healthy_until_the_process_is_killed_then_provision_replaces_it(root: Path) -> None:
    driver, spec = local(root), new_spec(0)
    instance = await driver.provision(spec, TIMEOUT)
    await started(root, spec)
    assert await driver.healthy(spec, TIMEOUT)
    os.kill(int(instance.handle), signal.SIGKILL)
    await until(lambda: not running(int(instance.handle)))
    assert not await driver.healthy(spec, TIMEOUT)
    replacement = await driver.provision(spec, TIMEOUT)
    assert replacement.handle != instance.handle
    assert await driver.healthy(spec, TIMEOUT)


async def test_release_stops_the_whole_group_and_a_second_release_returns_at_once(
    root: Path,
) -> None:
    driver, spec = local(root, "--child"), new_spec(0)
    instance = await driver.provision(spec, TIMEOUT)
    await started(root, spec)
    workspace = root / str(spec.allocation_id)
    child = int((workspace / "child.pid").read_text())
    assert running(child)
    await driver.release(spec, TIMEOUT)
    await until(lambda: not running(child))  # the orphan's reaping is init's business
    assert not running(int(instance.handle))
    assert not (workspace / RECORD).exists()
    assert (workspace / RELEASED).exists() and (workspace / LOG).exists()
    began = time.monotonic()
    await driver.release(spec, TIMEOUT)
    await driver.release(new_spec(), TIMEOUT)  # never provisioned
    assert time.monotonic() - began < 0.5
    assert not await driver.healthy(spec, TIMEOUT)


async def test_a_workload_ignoring_sigterm_is_killed_after_the_grace(root: Path) -> None:
    driver, spec = local(root, "--ignore-term", grace=0.3), new_spec(0)
    instance = await driver.provision(spec, TIMEOUT)
    await started(root, spec)  # its SIGTERM handler is set by now
    began = time.monotonic()
    await driver.release(spec, TIMEOUT)
    assert time.monotonic() - began >= 0.3
    assert not running(int(instance.handle))


async def test_instances_lists_the_live_ones_only(root: Path) -> None:
    driver = local(root)
    kept, released, killed = new_spec(0), new_spec(1), new_spec(2)
    instances = {
        spec.allocation_id: await driver.provision(spec, TIMEOUT)
        for spec in (kept, released, killed)
    }
    (root / "not-an-allocation").mkdir()
    await driver.release(released, TIMEOUT)
    os.kill(int(instances[killed.allocation_id].handle), signal.SIGKILL)
    await until(lambda: not running(int(instances[killed.allocation_id].handle)))
    assert await driver.instances(uuid4(), None, TIMEOUT) == {kept.allocation_id}


async def test_a_workload_that_cannot_start_is_a_driver_error(root: Path) -> None:
    config = DriverConfig(workspace_root=root, command=(str(root / "missing"),))
    with pytest.raises(DriverError, match="cannot start the workload"):
        await driver_for("local", config).provision(new_spec(0), TIMEOUT)


def test_the_factory_knows_local_and_ssh_only() -> None:
    assert isinstance(driver_for("local", DriverConfig()), LocalDriver)
    assert type(driver_for("ssh", DriverConfig())).__name__ == "SshDriver"
    with pytest.raises(UnknownDriverKindError):
        driver_for("kubernetes", DriverConfig())
