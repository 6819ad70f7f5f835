"""GPU discovery on this machine through NVML (``nvidia-ml-py``, imported as ``pynvml``).

``discover()`` answers None where there is nothing to discover: the ``pynvml`` module is not
installed, or the NVIDIA driver (``libnvidia-ml.so.1``) is missing or will not initialise. An
NVML error after a successful start (a GPU fallen off the bus) is raised: a broken machine
must not pass for one without GPUs.

A node has one GPU model (domain/catalog.py). A machine with several models is reported with
the most common one (ties: the model of the lowest index) as ``gpu_model``, ``gpu_count``
counts only the GPUs of that model, ``mixed`` is True, and ``model_gpus`` lists them: a local
driver maps the node's claim index ``i`` to ``model_gpus[i]`` and should hand processes the
GPU's UUID in ``CUDA_VISIBLE_DEVICES`` (CUDA's own device order need not be NVML's).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_mib: int


@dataclass(frozen=True)
class Discovery:
    gpu_model: str
    gpu_count: int
    gpus: tuple[GpuInfo, ...]
    driver_version: str

    @property
    def mixed(self) -> bool:
        """More than one GPU model in this machine (``gpus`` lists them all)."""
        return self.gpu_count != len(self.gpus)

    @property
    def model_gpus(self) -> tuple[GpuInfo, ...]:
        """The GPUs of ``gpu_model``, by NVML index: claim index i is ``model_gpus[i]``."""
        return tuple(gpu for gpu in self.gpus if gpu.name == self.gpu_model)


def discover() -> Discovery | None:
    """The GPUs of this machine, or None without NVML (no library, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return _inventory(pynvml)
    finally:
        pynvml.nvmlShutdown()


def _inventory(nvml: Any) -> Discovery | None:
    gpus = tuple(_gpu(nvml, index) for index in range(nvml.nvmlDeviceGetCount()))
    if not gpus:
        return None
    counts = Counter(gpu.name for gpu in gpus)
    model = max(counts, key=lambda name: counts[name])  # first seen wins a tie
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    return Discovery(model, counts[model], gpus, driver)


def _gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
    )


def _text(value: str | bytes) -> str:
    """nvidia-ml-py decodes strings; older releases returned bytes."""
    return value.decode() if isinstance(value, bytes) else value
