"""GPU discovery against a fake ``pynvml`` module (the real NVML runs on a GPU machine)."""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from infra.gpus import Discovery, GpuInfo, discover

GIB = 1024**3


class NVMLError(Exception):
    pass


def fake_nvml(
    gpus: list[tuple[str, str, int]], init_error: bool = False, names_as_bytes: bool = False
) -> Any:
    """A stand-in for pynvml: ``gpus`` are (name, uuid, memory bytes); it records the calls."""
    nvml: Any = ModuleType("pynvml")
    nvml.NVMLError = NVMLError
    nvml.calls = []

    def init() -> None:
        nvml.calls.append("init")
        if init_error:
            raise NVMLError("NVML Shared Library Not Found")

    def name(handle: int) -> str | bytes:
        text = gpus[handle][0]
        return text.encode() if names_as_bytes else text

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetCount = lambda: len(gpus)
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index
    nvml.nvmlDeviceGetName = name
    nvml.nvmlDeviceGetUUID = lambda handle: gpus[handle][1]
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(total=gpus[handle][2])
    nvml.nvmlSystemGetDriverVersion = lambda: "580.82.07"
    return nvml


def installed(monkeypatch: pytest.MonkeyPatch, module: Any) -> Any:
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


H100 = "NVIDIA H100 80GB HBM3"


def test_two_gpus_are_reported_with_model_count_memory_and_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = installed(
        monkeypatch, fake_nvml([(H100, "GPU-aaa", 80 * GIB), (H100, "GPU-bbb", 80 * GIB)])
    )

    found = discover()

    assert found == Discovery(
        gpu_model=H100,
        gpu_count=2,
        gpus=(GpuInfo(0, H100, "GPU-aaa", 81920), GpuInfo(1, H100, "GPU-bbb", 81920)),
        driver_version="580.82.07",
    )
    assert found is not None and not found.mixed
    assert nvml.calls == ["init", "shutdown"]


def test_no_driver_means_no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = installed(monkeypatch, fake_nvml([], init_error=True))

    assert discover() is None
    assert nvml.calls == ["init"]


def test_a_missing_library_means_no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError

    assert discover() is None


def test_a_driver_without_gpus_means_no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = installed(monkeypatch, fake_nvml([]))

    assert discover() is None
    assert nvml.calls == ["init", "shutdown"]


def test_a_mixed_machine_reports_its_most_common_model_and_is_flagged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a100 = "NVIDIA A100-SXM4-40GB"
    gpus = [(a100, "GPU-0", 40 * GIB), (H100, "GPU-1", 80 * GIB), (H100, "GPU-2", 80 * GIB)]
    installed(monkeypatch, fake_nvml(gpus, names_as_bytes=True))

    found = discover()

    assert found is not None and found.mixed
    assert (found.gpu_model, found.gpu_count, len(found.gpus)) == (H100, 2, 3)
    assert [gpu.uuid for gpu in found.model_gpus] == ["GPU-1", "GPU-2"]


def test_nvml_is_shut_down_when_a_gpu_fails_mid_discovery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = installed(monkeypatch, fake_nvml([(H100, "GPU-aaa", 80 * GIB)]))

    def lost(handle: int) -> str:
        raise NVMLError("GPU is lost")

    nvml.nvmlDeviceGetUUID = lost

    with pytest.raises(NVMLError):
        discover()
    assert nvml.calls == ["init", "shutdown"]
