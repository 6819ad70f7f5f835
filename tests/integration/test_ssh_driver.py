"""The ssh node driver against a real asyncssh server on loopback running real shell commands.

The node keeps its instances as marker files in ``$STATE``: the command templates below are
small shell scripts standing in for a container runtime.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import uuid4

import asyncssh
import pytest

from handlers.ports import DriverError, DriverTimeoutError, InstanceSpec
from infra.drivers import DriverConfig
from infra.drivers.ssh import SshDriver, fill_placeholders, spec_values, split_address

PROVISION = (
    'if [ ! -f "$STATE"/{allocation_id} ]; then echo starting for {tenant_id} >&2;'
    ' echo gpus-{gpu_indices}-$$ > "$STATE"/{allocation_id}; fi; echo; cat "$STATE"/{allocation_id}'
)
HEALTH = 'test -f "$STATE"/{allocation_id}'
RELEASE = 'rm -f "$STATE"/{allocation_id}'
LIST = 'ls -1 "$STATE"; echo "total: not an id"'
TIMEOUT = 5.0


@dataclass
class Node:
    """A loopback ssh node: where it listens, its keys, and the commands it received."""

    folder: Path
    port: int
    host_key: asyncssh.SSHKey
    config: DriverConfig
    commands: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spec(self, *gpus: int) -> InstanceSpec:
        return InstanceSpec(uuid4(), uuid4(), uuid4(), self.address, gpus)


class Shell:
    """The server's process factory: run each command in a real shell, in its own group."""

    def __init__(self, folder: Path, commands: list[str]) -> None:
        self.folder, self.commands = folder, commands
        self.children: list[asyncio.subprocess.Process] = []

    async def __call__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        if "drop-the-connection" in command:
            process.stdout.write(b"half of the output\n")
            process.channel.get_connection().abort()
            return
        child = await asyncio.create_subprocess_shell(
            command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.folder,
            env=os.environ | {"STATE": str(self.folder / "state")},
            start_new_session=True,
        )
        self.children.append(child)
        stdout, stderr = await child.communicate()
        process.stdout.write(stdout)
        process.stderr.write(stderr)
        process.exit(child.returncode or 0)

    async def stop(self) -> None:
        for child in self.children:
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            await child.wait()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    folder = Path(tempfile.mkdtemp(prefix="gpucloud-ssh-"))
    (folder / "state").mkdir()
    host_key, client_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    client_key.write_private_key(folder / "id_ed25519")
    commands: list[str] = []
    shell = Shell(folder, commands)
    authorized = client_key.export_public_key().decode()
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(authorized),
        process_factory=shell,
        encoding=None,
    )
    port = server.get_port()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    config = DriverConfig(
        username="tester",
        client_keys=(folder / "id_ed25519",),
        known_hosts=known_hosts,
        provision_command=PROVISION,
        health_command=HEALTH,
        release_command=RELEASE,
        list_command=LIST,
    )
    try:
        yield Node(folder, port, host_key, config, commands)
    finally:
        server.close()
        await server.wait_closed()
        await shell.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_provision_health_release_and_list_run_their_commands_on_the_node(
    node: Node,
) -> None:
    driver, spec, other = SshDriver(node.config), node.spec(0, 1), node.spec(2)
    instance = await driver.provision(spec, TIMEOUT)
    assert instance.handle.startswith("gpus-0,1-")
    assert (instance.allocation_id, instance.node_id) == (spec.allocation_id, spec.node_id)
    assert await driver.provision(spec, TIMEOUT) == instance  # the template is idempotent
    await driver.provision(other, TIMEOUT)
    assert await driver.healthy(spec, TIMEOUT)
    found = await driver.instances(spec.node_id, node.address, TIMEOUT)
    assert found == {spec.allocation_id, other.allocation_id}
    await driver.release(spec, TIMEOUT)
    await driver.release(spec, TIMEOUT)  # nothing left: confirmed again
    assert not await driver.healthy(spec, TIMEOUT)
    assert await driver.instances(spec.node_id, node.address, TIMEOUT) == {other.allocation_id}
    assert f'"$STATE"/{spec.allocation_id}' in node.commands[0]


async def test_placeholder_values_are_shell_quoted(node: Node) -> None:
    hostile = "x'; touch injected; echo '$(touch injected)`touch injected`"
    command = fill_placeholders("printf %s {value} > received", {"value": hostile})
    assert shlex.split(command) == ["printf", "%s", hostile, ">", "received"]
    result = await SshDriver(node.config).run(node.address, command, TIMEOUT, "echo")
    assert result.exit_status == 0
    assert (node.folder / "received").read_text() == hostile
    assert not (node.folder / "injected").exists()
    assert fill_placeholders("a {{.Id}} {gpus}", {"gpus": "0,1"}) == "a {{.Id}} 0,1"


async def test_the_default_templates_are_valid_shell_once_filled() -> None:
    values = spec_values(InstanceSpec(uuid4(), uuid4(), uuid4(), "node:22", (0, 1)))
    defaults = DriverConfig()
    templates = (defaults.provision_command, defaults.health_command, defaults.release_command)
    for command in (fill_placeholders(template, values) for template in templates):
        assert not any("{" + name + "}" in command for name in values)
        check = await asyncio.create_subprocess_exec("sh", "-n", "-c", command)
        assert await check.wait() == 0, command
    provision = shlex.split(fill_placeholders(defaults.provision_command, values))
    assert provision[provision.index("--gpus") + 1] == '"device=0,1"'  # docker's csv syntax


def test_an_address_is_split_into_host_and_port() -> None:
    assert split_address("10.0.0.7:2222") == ("10.0.0.7", 2222)
    assert split_address("[fd00::7]:2222") == ("fd00::7", 2222)
    assert split_address("node-7") == ("node-7", 22)
    for bad in (None, "", "node:ssh"):
        with pytest.raises(DriverError):
            split_address(bad)


async def test_a_node_refusing_connections_is_a_driver_error_at_once(node: Node) -> None:
    with socket.socket() as probe:  # a free port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = replace(node.spec(0), address=f"127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(DriverError, match="cannot reach the node") as raised:
        await SshDriver(node.config).provision(spec, TIMEOUT)
    assert not isinstance(raised.value, DriverTimeoutError)
    assert time.monotonic() - began < 1.0


async def test_a_node_that_never_completes_the_handshake_times_out(node: Node) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # accept, then say nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = replace(node.spec(0), address=f"127.0.0.1:{port}")
    began = time.monotonic()
    try:
        with pytest.raises(DriverTimeoutError, match=r"did not finish within 0\.5 s"):
            await SshDriver(node.config).healthy(spec, 0.5)
        assert time.monotonic() - began < 1.5
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_command_that_hangs_times_out(node: Node) -> None:
    config = replace(node.config, health_command="sleep 30")
    began = time.monotonic()
    with pytest.raises(DriverTimeoutError):
        await SshDriver(config).healthy(node.spec(0), 0.5)
    assert time.monotonic() - began < 1.5


async def test_a_connection_dropped_mid_command_is_a_driver_error(node: Node) -> None:
    config = replace(node.config, release_command="drop-the-connection {allocation_id}")
    with pytest.raises(DriverError, match="dropped") as raised:
        await SshDriver(config).release(node.spec(0), TIMEOUT)
    assert not isinstance(raised.value, DriverTimeoutError)


async def test_a_failing_provision_reports_its_exit_status_and_stderr(node: Node) -> None:
    failing = "echo 'no GPU '{gpu_indices}' on this node' >&2; exit 3"
    config = replace(node.config, provision_command=failing)
    with pytest.raises(DriverError, match=r"status 3; stderr: no GPU 7 on this node"):
        await SshDriver(config).provision(node.spec(7), TIMEOUT)


async def test_a_release_the_node_does_not_confirm_is_a_driver_error(node: Node) -> None:
    config = replace(node.config, release_command="echo busy >&2; exit 1")
    with pytest.raises(DriverError, match=r"release on ssh node .* status 1; stderr: busy"):
        await SshDriver(config).release(node.spec(0), TIMEOUT)


async def test_a_host_key_not_in_known_hosts_is_a_driver_error(node: Node) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known_hosts = node.folder / "other_known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{node.port} {impostor}")
    config = replace(node.config, known_hosts=known_hosts)
    with pytest.raises(DriverError, match="host key"):
        await SshDriver(config).provision(node.spec(0), TIMEOUT)
    assert node.commands == []


async def test_a_client_key_the_node_does_not_know_is_a_driver_error(node: Node) -> None:
    stranger = node.folder / "id_stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(stranger)
    config = replace(node.config, client_keys=(stranger,))
    with pytest.raises(DriverError, match="refused our key"):
        await SshDriver(config).provision(node.spec(0), TIMEOUT)
