"""Checks that need a real NVIDIA GPU, run on a machine that has one (stdlib + nvidia-ml-py):

    python3 tools/gpu_check.py [--out FILE]

1. NVML discovery (infra/gpus.py): the model, count, UUIDs and driver version it reports must
   match `nvidia-smi -L`.
2. The local node driver (infra/drivers/local.py) confines an instance to its claimed GPUs: an
   instance given GPU 0 sees exactly that GPU (asked through NVML from inside the instance,
   which honours CUDA_VISIBLE_DEVICES only through CUDA, so the instance also asks CUDA via
   torch when it is installed), and one given no GPU sees none.

Prints one JSON report; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handlers.ports import InstanceSpec
from infra.drivers import DriverConfig
from infra.drivers.local import LocalDriver
from infra.gpus import discover

PROBE = (
    "import json, os\n"
    "seen = {'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES')}\n"
    "try:\n"
    "    import torch\n"
    "    seen['cuda_devices'] = torch.cuda.device_count()\n"
    "    count = seen['cuda_devices']\n"
    "    seen['cuda_names'] = [torch.cuda.get_device_name(i) for i in range(count)]\n"
    "except Exception as exc:\n"
    "    seen['cuda_error'] = repr(exc)\n"
    "open('probe.json', 'w').write(json.dumps(seen))\n"
    "import time\n"
    "while True: time.sleep(3600)\n"
)


def smi() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return []
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")]


async def confined(indices: tuple[int, ...]) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="gpucloud-gpu-check-"))
    driver = LocalDriver(DriverConfig(workspace_root=root, command=(sys.executable, "-c", PROBE)))
    spec = InstanceSpec(uuid4(), uuid4(), uuid4(), None, indices)
    await driver.provision(spec, 30)
    probe = root / str(spec.allocation_id) / "probe.json"
    deadline = time.monotonic() + 60
    while not probe.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    seen = json.loads(probe.read_text()) if probe.exists() else {"error": "no probe output"}
    await driver.release(spec, 30)
    return {"claimed": list(indices), **seen}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    found = discover()
    listed = smi()
    report: dict[str, object] = {"nvidia_smi": listed, "discovery": None}
    report["worker_ld_library_path"] = os.environ.get("LD_LIBRARY_PATH")
    ok = found is not None
    if found is not None:
        report["discovery"] = {
            "gpu_model": found.gpu_model, "gpu_count": found.gpu_count,
            "driver_version": found.driver_version,
            "gpus": [vars(g) for g in found.gpus],
        }  # fmt: skip
        ok = ok and found.gpu_count == len(listed)
        ok = ok and all(g.uuid in line for g, line in zip(found.gpus, listed, strict=False))
        one, none = asyncio.run(confined((0,))), asyncio.run(confined(()))
        report["instances"] = [one, none]
        if "cuda_devices" in one:
            ok = ok and one["cuda_devices"] == 1 and none.get("cuda_devices") == 0
    report["ok"] = ok
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
