"""Accelerator platforms: detection and the capabilities each one has.

One small class per platform. Detection never imports a vendor package that is absent and never
fails for lack of one; ``WANRT_PLATFORM=<name>`` overrides it (tests use this to simulate devices).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

import torch


class Platform:
    """What a device family can do. Subclasses override the class attributes only."""

    name = "cpu"
    device_type = "cpu"
    triton = False  # Triton kernels can run on this device
    float64 = True
    bf16 = True
    fp8 = True  # float8_e4m3fn tensors can be stored (and cast) on this device
    # fp8 GEMMs (torch._scaled_mm) from this compute capability on; None: never
    fp8_matmul: tuple[int, int] | None = None
    # per-row scales: (torch release from which fp8_matmul has them, capability before it)
    fp8_rowwise: tuple[tuple[int, int], tuple[int, int]] | None = None
    compile = True  # torch.compile (inductor) works
    distributed_backend = "gloo"

    def __repr__(self) -> str:
        return f"<Platform {self.name}>"

    @classmethod
    def is_available(cls) -> bool:
        raise NotImplementedError

    def device(self, index: int | None = None) -> torch.device:
        return torch.device(self.device_type, index)

    def capabilities(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("name", "device_type", "triton", "float64", "bf16",
                                               "fp8", "fp8_matmul", "fp8_rowwise", "compile",
                                               "distributed_backend")}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _triton_installed() -> bool:
    return _module_exists("triton")


class CudaPlatform(Platform):
    name = "cuda"
    device_type = "cuda"
    triton = True
    fp8_matmul = (8, 9)  # Ada, Hopper and later
    fp8_rowwise = ((2, 7), (9, 0))  # Ada has per-row scales from torch 2.7; before, Hopper only
    distributed_backend = "nccl"

    @classmethod
    def is_available(cls) -> bool:
        return torch.version.cuda is not None and torch.cuda.is_available()


class RocmPlatform(Platform):
    name = "rocm"
    device_type = "cuda"  # HIP devices are addressed as "cuda" in PyTorch
    triton = True
    distributed_backend = "nccl"  # RCCL behind the nccl name

    @classmethod
    def is_available(cls) -> bool:
        return getattr(torch.version, "hip", None) is not None and torch.cuda.is_available()


class MusaPlatform(Platform):
    name = "musa"
    device_type = "musa"
    float64 = False
    fp8 = False
    distributed_backend = "mccl"

    @classmethod
    def is_available(cls) -> bool:
        if not _module_exists("torch_musa"):
            return False
        import torch_musa  # noqa: F401  (registers torch.musa)
        return hasattr(torch, "musa") and torch.musa.is_available()


class NpuPlatform(Platform):
    name = "npu"
    device_type = "npu"
    fp8 = False
    compile = False  # inductor breaks on Ascend; layers run eager
    distributed_backend = "hccl"

    @classmethod
    def is_available(cls) -> bool:
        if not _module_exists("torch_npu"):
            return False
        import torch_npu  # noqa: F401  (registers torch.npu)
        return hasattr(torch, "npu") and torch.npu.is_available()


class XpuPlatform(Platform):
    name = "xpu"
    device_type = "xpu"
    distributed_backend = "xccl"

    @classmethod
    def is_available(cls) -> bool:
        return hasattr(torch, "xpu") and torch.xpu.is_available()


class MpsPlatform(Platform):
    name = "mps"
    device_type = "mps"
    float64 = False
    fp8 = False
    distributed_backend = "gloo"

    @classmethod
    def is_available(cls) -> bool:
        return torch.backends.mps.is_available()


class CpuPlatform(Platform):
    @classmethod
    def is_available(cls) -> bool:
        return True


# Detection order: vendor stacks that masquerade as CUDA come first.
PLATFORMS: dict[str, type[Platform]] = {
    p.name: p for p in (RocmPlatform, CudaPlatform, MusaPlatform, NpuPlatform, XpuPlatform,
                        MpsPlatform, CpuPlatform)
}


@functools.cache
def _platform_for(name: str | None) -> Platform:
    if name:
        key = name.strip().lower()
        if key not in PLATFORMS:
            raise ValueError(f"WANRT_PLATFORM={name!r} is not a known platform; "
                             f"valid names: {', '.join(PLATFORMS)}")
        return PLATFORMS[key]()
    for cls in PLATFORMS.values():
        if cls.is_available():
            return cls()
    return CpuPlatform()


def current_platform() -> Platform:
    """The platform this process runs on (``WANRT_PLATFORM`` overrides detection)."""
    return _platform_for(os.environ.get("WANRT_PLATFORM") or None)


def float64_supported(device: torch.device) -> bool:
    """Whether ``device``'s platform computes in float64 (device types no platform names: yes)."""
    return all(p.float64 for p in PLATFORMS.values() if p.device_type == device.type)


@torch.compiler.assume_constant_result  # fixed while tracing: no graph break
def fp8_matmul_supported(device_type: str, index: int | None = None, rowwise: bool = False) -> bool:
    """Whether fp8 GEMMs (``kernels.fp8.fp8_linear``) run on device ``device_type:index``: the
    platform's ``fp8_matmul`` compute capability or later (``rowwise``: with per-row scales,
    see the platform's ``fp8_rowwise``)."""
    return _fp8_matmul_supported(device_type, index, rowwise)


def _torch_release() -> tuple[int, int]:
    return tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())


@functools.cache
def _fp8_matmul_supported(device_type: str, index: int | None, rowwise: bool) -> bool:
    platform = current_platform()
    if platform.fp8_matmul is None or device_type != platform.device_type:
        return False
    capability = torch.cuda.get_device_capability(index)
    if rowwise and platform.fp8_rowwise is not None:
        since, before = platform.fp8_rowwise
        if _torch_release() < since and capability < before:
            return False
    return capability >= platform.fp8_matmul


def triton_usable(platform: Platform | None = None) -> bool:
    """Triton kernels can run: the platform supports them and the package is importable.

    (``impl="triton"`` still runs them anywhere; on CPU that needs ``TRITON_INTERPRET=1``.)"""
    platform = platform or current_platform()
    return platform.triton and _triton_installed()
