"""The local node driver: this machine is the node, an instance is a supervised process group.

Each allocation gets a workspace ``<workspace_root>/<allocation_id>/`` holding the workload's
log and ``instance.json``: the pid, start time and boot id that let any driver object, in this
worker or a restarted one, find the instance again and tell it from a later process that reuses
its pid. A ``flock`` on the workspace serialises provision and release across processes.

Each call runs as one blocking function in a thread (``asyncio.to_thread``); the deadline
abandons the wait, not the thread, so a timed-out provision may still finish and record its
instance, which the next call finds: the idempotency makes that safe.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar
from uuid import UUID

from handlers.ports import DriverError, DriverTimeoutError, Instance, InstanceSpec
from infra.drivers import DriverConfig

RECORD = "instance.json"
RELEASED = "instance.released.json"
LOG = "instance.log"
_LOCK = ".lock"
_POLL_SECONDS = 0.02
_KILL_WAIT_SECONDS = 2.0
# The workload gets these from the worker's environment and nothing else: no secrets leak.
# LD_LIBRARY_PATH: on hosts where the CUDA driver library is found only through it.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH")
_T = TypeVar("_T")


class _Stat(NamedTuple):
    state: str
    pgid: int
    start_time: int


@dataclass(frozen=True)
class _Record:
    """What ``instance.json`` holds. The pid is also the process group id (a new session)."""

    allocation_id: str
    pid: int
    start_time: int
    boot_id: str
    gpu_indices: list[int]


class LocalDriver:
    """Instances as process groups on this machine, under ``config.workspace_root``."""

    def __init__(self, config: DriverConfig) -> None:
        self._config = config

    async def provision(self, spec: InstanceSpec, timeout: float) -> Instance:
        record = await _bounded(timeout, "provision", lambda: self._provision(spec))
        return Instance(spec.allocation_id, spec.node_id, str(record.pid))

    async def healthy(self, spec: InstanceSpec, timeout: float) -> bool:
        return await _bounded(timeout, "health check", lambda: self._healthy(spec))

    async def release(self, spec: InstanceSpec, timeout: float) -> None:
        grace = min(self._config.stop_grace_seconds, timeout / 2)  # SIGKILL before the deadline
        await _bounded(timeout, "release", lambda: self._release(spec, grace))

    async def instances(self, node_id: UUID, address: str | None, timeout: float) -> set[UUID]:
        return await _bounded(timeout, "instance list", self._scan)

    def _workspace(self, spec: InstanceSpec) -> Path:
        return self._config.workspace_root / str(spec.allocation_id)

    def _healthy(self, spec: InstanceSpec) -> bool:
        record = _read(self._workspace(spec))
        return record is not None and _leader_alive(record)

    def _provision(self, spec: InstanceSpec) -> _Record:
        workspace = self._workspace(spec)
        workspace.mkdir(parents=True, exist_ok=True)
        with _locked(workspace):
            record = _read(workspace)
            if record is not None and _leader_alive(record):
                return record
            if record is not None:
                _signal(record, signal.SIGKILL)  # leftovers of a dead instance hold its GPUs
            record = self._spawn(spec, workspace)
            _write(workspace / RECORD, record)
            return record

    def _spawn(self, spec: InstanceSpec, workspace: Path) -> _Record:
        try:
            with open(workspace / LOG, "ab") as log:
                process = subprocess.Popen(
                    self._config.command,
                    cwd=workspace,
                    env=_environment(spec, workspace),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            raise DriverError(
                f"cannot start the workload {self._config.command!r} for allocation"
                f" {spec.allocation_id}: {error}; fix DriverConfig.command"
            ) from error
        stat = _stat(process.pid)  # before the reaper can reap it: a zombie still has its stat
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        if stat is None:
            process.kill()
            raise DriverError(f"no /proc entry for our child {process.pid}: is /proc mounted?")
        indices = list(spec.gpu_indices)
        return _Record(str(spec.allocation_id), process.pid, stat.start_time, _boot_id(), indices)

    def _release(self, spec: InstanceSpec, grace: float) -> None:
        workspace = self._workspace(spec)
        if not (workspace / RECORD).exists():
            return
        with _locked(workspace):
            record = _read(workspace)
            if record is None:
                return
            _stop(record, grace)
            os.replace(workspace / RECORD, workspace / RELEASED)  # the log stays

    def _scan(self) -> set[UUID]:
        root = self._config.workspace_root
        if not root.is_dir():
            return set()
        live = set()
        for workspace in root.iterdir():
            record = _read(workspace) if _is_uuid(workspace.name) else None
            if record is not None and _members(record):
                live.add(UUID(workspace.name))
        return live


async def _bounded(timeout: float, what: str, call: Callable[[], _T]) -> _T:
    """Run a blocking call in a thread, waiting at most ``timeout`` seconds for it."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(call)
    except TimeoutError as error:
        raise DriverTimeoutError(
            f"local {what} did not finish within {timeout:g} s; the machine may be overloaded,"
            " retry (the call is idempotent)"
        ) from error
    except OSError as error:
        raise DriverError(
            f"local {what} failed: {error}; check the workspace root's permissions and space"
        ) from error


@contextmanager
def _locked(workspace: Path) -> Iterator[None]:
    descriptor = os.open(workspace / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _environment(spec: InstanceSpec, workspace: Path) -> dict[str, str]:
    passed = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    return passed | {
        "HOME": str(workspace),
        "CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in spec.gpu_indices),
        "GPUCLOUD_ALLOCATION_ID": str(spec.allocation_id),
        "GPUCLOUD_TENANT_ID": str(spec.tenant_id),
    }


def _read(workspace: Path) -> _Record | None:
    try:
        return _Record(**json.loads((workspace / RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise DriverError(
            f"unreadable {workspace / RECORD}: {error}; stop the instance by hand and remove"
            " the file"
        ) from error


def _write(path: Path, record: _Record) -> None:
    """Write the record whole or not at all: a crash leaves the old file or the new one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(record)))
    os.replace(partial, path)


def _stat(pid: int) -> _Stat | None:
    """State, process group and start time of a process (/proc/<pid>/stat); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return _Stat(fields[0], int(fields[2]), int(fields[19]))


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _leader_alive(record: _Record) -> bool:
    """Whether the instance's own first process still runs (not a zombie, not a pid reuse)."""
    stat = _stat(record.pid)
    return (
        stat is not None
        and stat.start_time == record.start_time
        and stat.state not in "ZX"
        and record.boot_id == _boot_id()
    )


def _members(record: _Record) -> list[int]:
    """The live processes of the instance's group.

    The kernel does not reuse a pid while a group bears it, so while the leader pid is free
    or still the leader, every process of that group is the instance's.
    """
    if record.boot_id != _boot_id():
        return []
    leader = _stat(record.pid)
    if leader is not None and leader.start_time != record.start_time:
        return []  # the group died and its id went to another process
    try:
        os.killpg(record.pid, 0)
    except ProcessLookupError:
        return []  # the cheap answer, before reading every process's stat
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and (stat := _stat(int(entry.name))) is not None
        and stat.pgid == record.pid
        and stat.state not in "ZX"
    ]


def _signal(record: _Record, signum: signal.Signals) -> None:
    if _members(record):
        with suppress(ProcessLookupError):  # gone in between
            os.killpg(record.pid, signum)


def _stop(record: _Record, grace: float) -> None:
    """SIGTERM the group, SIGKILL what is left after ``grace``, and confirm it is gone."""
    _signal(record, signal.SIGTERM)
    if _wait_gone(record, grace):
        return
    _signal(record, signal.SIGKILL)
    if not _wait_gone(record, _KILL_WAIT_SECONDS):
        raise DriverError(
            f"process group {record.pid} of allocation {record.allocation_id} survived SIGKILL"
            " (stuck in the kernel?); its GPUs are not free: inspect the node"
        )


def _wait_gone(record: _Record, seconds: float) -> bool:
    """Poll until the group has no live process; False if it still has one after ``seconds``."""
    deadline = time.monotonic() + seconds
    while _members(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _is_uuid(name: str) -> bool:
    try:
        UUID(name)
    except ValueError:
        return False
    return True
