"""Node drivers: the adapters behind ``handlers.ports.NodeDriver``.

``local`` runs each instance as a process group on this machine; ``ssh`` runs shell commands
on a remote node (by default against its container runtime). ``driver_for`` builds one from a
``DriverConfig``; the driver modules are imported on demand, so a local-only deployment never
loads asyncssh.

The ssh command templates take these placeholders, each replaced by its value shell-quoted
(``shlex.quote``), so a template never needs quotes of its own around them:

- ``{allocation_id}``: the allocation's UUID
- ``{tenant_id}``: the tenant's UUID
- ``{node_id}``: the node's UUID
- ``{gpu_indices}``: the claimed GPU indices, comma-joined (``0,1``; empty for none)

Any other brace in a template (a ``docker --format '{{.Id}}'``) is left as it is.
``list_command`` gets only ``{node_id}``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from handlers.ports import NodeDriver

_SLEEP_FOREVER = "import time\nwhile True:\n    time.sleep(3600)"
_CONTAINER = "gpucloud-{allocation_id}"
_IMAGE = "nvidia/cuda:12.4.1-base-ubuntu22.04"

# Start (or restart) the allocation's container, then print its id: the handle.
DEFAULT_PROVISION_COMMAND = (
    f"{{ docker start {_CONTAINER} >/dev/null 2>&1 || docker run --detach --name {_CONTAINER}"
    " --label gpucloud.allocation={allocation_id} --label gpucloud.tenant={tenant_id}"
    f" --gpus '\"device='{{gpu_indices}}'\"' {_IMAGE} sleep infinity >/dev/null; }}"
    f" && docker inspect --format '{{{{.Id}}}}' {_CONTAINER}"
)
DEFAULT_HEALTH_COMMAND = (
    f"test \"$(docker inspect --format '{{{{.State.Running}}}}' {_CONTAINER} 2>/dev/null)\" = true"
)
# Idempotent: removing a missing container fails quietly; the check confirms it is gone.
DEFAULT_RELEASE_COMMAND = (
    f"docker rm --force {_CONTAINER} >/dev/null 2>&1; ! docker inspect {_CONTAINER} >/dev/null 2>&1"
)
DEFAULT_LIST_COMMAND = (
    "docker ps --all --filter label=gpucloud.allocation"
    " --format '{{.Label \"gpucloud.allocation\"}}'"
)


class UnknownDriverKindError(ValueError):
    """The configuration names a driver kind that does not exist."""


@dataclass(frozen=True)
class DriverConfig:
    """What the drivers need; each reads only its own fields.

    ``known_hosts=None`` turns host key checking off: for tests only, never for a real node.
    ``client_keys=()`` lets asyncssh use the default keys (``~/.ssh/id_*``) and the agent,
    as ``ssh`` would; naming keys uses those keys only.
    """

    # local
    workspace_root: Path = Path("/var/lib/gpucloud/instances")
    command: tuple[str, ...] = (sys.executable, "-c", _SLEEP_FOREVER)
    stop_grace_seconds: float = 5.0
    # ssh
    username: str = "gpucloud"
    client_keys: tuple[Path, ...] = ()
    known_hosts: Path | None = field(default_factory=lambda: Path.home() / ".ssh/known_hosts")
    provision_command: str = DEFAULT_PROVISION_COMMAND
    health_command: str = DEFAULT_HEALTH_COMMAND
    release_command: str = DEFAULT_RELEASE_COMMAND
    list_command: str = DEFAULT_LIST_COMMAND


def driver_for(kind: str, config: DriverConfig) -> NodeDriver:
    """The driver for a node kind: ``local`` or ``ssh``."""
    if kind == "local":
        from infra.drivers.local import LocalDriver

        return LocalDriver(config)
    if kind == "ssh":
        from infra.drivers.ssh import SshDriver

        return SshDriver(config)
    raise UnknownDriverKindError(f"unknown node driver {kind!r}: use 'local' or 'ssh'")
