"""Layers that pick a per-platform forward once, at construction (the seed's CustomOp pattern).

Default policy: CUDA and ROCm run the fused Triton kernels; MUSA runs ``torch.compile`` over the
native path (torch fallbacks); NPU runs native, never compiled; XPU, MPS and CPU run native.
``WANRT_DISABLE_FUSED_KERNELS=1`` / ``kernels.set_fused_kernels(False)`` turns the fused kernels off,
``WANRT_DISABLE_LAYER_COMPILE=1`` / ``set_layer_compile(False)`` turns per-layer compile off.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ...kernels import current_platform, fused_kernels_enabled, triton_usable

_layer_compile = os.environ.get("WANRT_DISABLE_LAYER_COMPILE", "0") not in ("1", "true", "yes")


def set_layer_compile(enabled: bool) -> None:
    """Allow or forbid per-layer ``torch.compile`` for layers built afterwards."""
    global _layer_compile
    _layer_compile = bool(enabled)


def layer_compile_enabled() -> bool:
    return _layer_compile


class CustomOp(nn.Module):
    """A module whose ``forward`` is bound once to ``forward_<platform>``.

    Subclasses implement ``forward_native`` (pure torch, compile-friendly) and, if they have one,
    ``forward_fused`` (Triton kernels). ``self.impl`` names the choice for reports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.impl, self._forward_method = self.dispatch_forward()

    def forward(self, *args, **kwargs):
        return self._forward_method(*args, **kwargs)

    def forward_native(self, *args, **kwargs):
        raise NotImplementedError

    forward_fused = None  # subclasses with Triton kernels define it

    def dispatch_forward(self):
        """``(impl_name, bound_method)`` for the current platform and switches."""
        platform = current_platform()
        fused = (self.forward_fused is not None and fused_kernels_enabled()
                 and triton_usable(platform))
        if platform.name in ("cuda", "rocm") and fused:
            return "triton", self.forward_fused
        if platform.name == "musa" and platform.compile and _layer_compile:
            return "compiled-native", torch.compile(self.forward_native, dynamic=True)
        return "native", self.forward_native


def implementation_report(model: nn.Module | None = None) -> dict[str, str]:
    """Which implementation each layer type uses on this platform: ``{class name: impl}``.

    With ``model``, its CustomOp layers are inspected; otherwise one of each known layer is built.
    """
    if model is None:
        from . import norms, rotary  # noqa: F401 (register subclasses)
        layers = [cls(*cls.example_args) for cls in _all_subclasses(CustomOp)
                  if hasattr(cls, "example_args")]
    else:
        layers = [m for m in model.modules() if isinstance(m, CustomOp)]
    return {type(m).__name__: m.impl for m in layers}


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)
