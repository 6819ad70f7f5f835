"""The ssh node driver: each call runs one shell command on the node over a fresh connection.

The commands are templates from ``DriverConfig`` (placeholders in ``infra.drivers``); they
carry the idempotency, so a template must be safe to repeat. A connection lives for one call
and is always closed; the whole call, handshake included, is bounded by its ``timeout``.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncssh

from handlers.ports import DriverError, DriverTimeoutError, Instance, InstanceSpec
from infra.drivers import DriverConfig

_TAIL_CHARS = 500


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """The template with each ``{name}`` of ``values`` replaced by its value, shell-quoted.

    Plain replacement, not ``str.format``: other braces in the template stay as they are.
    """
    command = template
    for name, value in values.items():
        command = command.replace("{" + name + "}", shlex.quote(value))
    return command


def spec_values(spec: InstanceSpec) -> dict[str, str]:
    """The placeholder values of an instance spec."""
    return {
        "allocation_id": str(spec.allocation_id),
        "tenant_id": str(spec.tenant_id),
        "node_id": str(spec.node_id),
        "gpu_indices": ",".join(str(index) for index in spec.gpu_indices),
    }


def split_address(address: str | None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as a host and a port (22 when left out)."""
    if not address:
        raise DriverError("an ssh node needs an address (host:port); register the node with one")
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        port = port.removeprefix(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if port and not port.isdigit():
        raise DriverError(f"bad ssh node address {address!r}: the port must be a number")
    return host, int(port or 22)


class SshDriver:
    """A node reached over ssh (``InstanceSpec.address``), driven by shell command templates."""

    def __init__(self, config: DriverConfig) -> None:
        self._config = config

    async def provision(self, spec: InstanceSpec, timeout: float) -> Instance:
        result = await self._command(spec, self._config.provision_command, timeout, "provision")
        _check(result, spec.address, "provision")
        lines = [line.strip() for line in _text(result.stdout).splitlines() if line.strip()]
        if not lines:
            raise DriverError(
                f"provision on {spec.address} exited 0 but printed no handle; the provision"
                " command must print the instance's handle on its last line"
            )
        return Instance(spec.allocation_id, spec.node_id, lines[-1])

    async def healthy(self, spec: InstanceSpec, timeout: float) -> bool:
        result = await self._command(spec, self._config.health_command, timeout, "health check")
        if result.exit_status is None:
            _check(result, spec.address, "health check")  # no status: raises
        return result.exit_status == 0

    async def release(self, spec: InstanceSpec, timeout: float) -> None:
        result = await self._command(spec, self._config.release_command, timeout, "release")
        _check(result, spec.address, "release")

    async def instances(self, node_id: UUID, address: str | None, timeout: float) -> set[UUID]:
        command = fill_placeholders(self._config.list_command, {"node_id": str(node_id)})
        result = await self.run(address, command, timeout, "instance list")
        _check(result, address, "instance list")
        return {found for line in _text(result.stdout).splitlines() if (found := _uuid(line))}

    async def run(
        self, address: str | None, command: str, timeout: float, what: str
    ) -> asyncssh.SSHCompletedProcess:
        """Run a finished command on the node; failures to reach it become DriverErrors."""
        host, port = split_address(address)
        try:
            async with asyncio.timeout(timeout):
                async with asyncssh.connect(host, port, **self._options(timeout)) as connection:
                    return await connection.run(command, check=False, errors="replace")
        except (TimeoutError, asyncssh.Error, OSError) as error:
            raise _driver_error(error, address, what, timeout) from error

    async def _command(
        self, spec: InstanceSpec, template: str, timeout: float, what: str
    ) -> asyncssh.SSHCompletedProcess:
        command = fill_placeholders(template, spec_values(spec))
        return await self.run(spec.address, command, timeout, what)

    def _options(self, timeout: float) -> dict[str, Any]:
        config = self._config
        known_hosts = str(config.known_hosts) if config.known_hosts is not None else None
        options: dict[str, Any] = {
            "username": config.username,
            "known_hosts": known_hosts,
            "config": None,  # this config is the whole truth: no ~/.ssh/config
            "preferred_auth": "publickey",
            "login_timeout": timeout,
        }
        if config.client_keys:
            options |= {"client_keys": [str(key) for key in config.client_keys], "agent_path": None}
        return options


def _driver_error(error: Exception, address: str | None, what: str, timeout: float) -> DriverError:
    """What asyncssh or the socket raised, as the port's error: what happened, what to do."""
    where = f"{what} on ssh node {address}"
    if isinstance(error, TimeoutError):
        return DriverTimeoutError(
            f"{where} did not finish within {timeout:g} s: the node or the command hangs;"
            " check the node, then retry (the call is idempotent)"
        )
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return DriverError(
            f"{where}: the node's host key is not the one in known_hosts ({error.reason});"
            " verify the node's key and update known_hosts before retrying"
        )
    if isinstance(error, asyncssh.PermissionDenied):
        return DriverError(
            f"{where}: the node refused our key ({error.reason}); add the driver's public key"
            " to the node user's authorized_keys"
        )
    if isinstance(error, asyncssh.Error):
        return DriverError(
            f"{where}: the connection failed or dropped ({error.reason}); the outcome is"
            " unknown, retry (the call is idempotent)"
        )
    if isinstance(error, FileNotFoundError) and error.filename:
        return DriverError(
            f"{where}: {error.filename} is missing; fix the key or known_hosts path in the"
            " driver's config"
        )
    return DriverError(
        f"{where}: cannot reach the node ({error}); check that it is up and sshd listens on"
        " that port"
    )


def _check(result: asyncssh.SSHCompletedProcess, address: str | None, what: str) -> None:
    """Raise unless the command exited 0."""
    where = f"{what} on ssh node {address}"
    if result.exit_status == 0:
        return
    if result.exit_status is None:
        raise DriverError(
            f"{where}: the connection dropped before the command reported its exit status;"
            " the outcome is unknown, retry (the call is idempotent)"
        )
    if result.exit_signal:
        outcome = f"was killed by signal {result.exit_signal[0]}"
    else:
        outcome = f"exited with status {result.exit_status}"
    stderr = _text(result.stderr).strip()[-_TAIL_CHARS:]
    raise DriverError(
        f"{where} failed: the command {outcome}; stderr: {stderr or '(empty)'}."
        " Fix the node or the command template, then retry"
    )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _uuid(line: str) -> UUID | None:
    try:
        return UUID(line.strip())
    except ValueError:
        return None
