"""Layers that bind a per-platform forward once, at construction (the seed's CustomOp pattern).

``POLICY`` is the platform table: what each platform's layers run by default.

- ``"triton"``: the fused Triton kernels (``forward_fused``); CUDA and ROCm.
- ``"compiled-native"``: ``torch.compile`` over ``forward_native`` (the torch fallback kernels); MUSA.
- ``"native"``: ``forward_native`` eagerly; NPU (never compiled), XPU, MPS, CPU.

A layer runs ``"native"`` instead when its default is switched off or unavailable: fused kernels off
(``WANRT_DISABLE_FUSED_KERNELS=1`` / ``kernels.set_fused_kernels(False)``) or Triton missing;
per-layer compile off (``WANRT_DISABLE_LAYER_COMPILE=1`` / ``set_layer_compile(False)``) or
unsupported by the platform. Switches apply to layers built afterwards.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ...kernels import Platform, current_platform, fused_kernels_enabled, triton_usable

POLICY: dict[str, str] = {
    "cuda": "triton", "rocm": "triton", "musa": "compiled-native",
    "npu": "native", "xpu": "native", "mps": "native", "cpu": "native",
}

_layer_compile: bool | None = None  # set by set_layer_compile; None defers to the environment


def set_layer_compile(enabled: bool | None) -> None:
    """Allow or forbid per-layer ``torch.compile`` for layers built afterwards; ``None`` defers to
    ``WANRT_DISABLE_LAYER_COMPILE`` again."""
    global _layer_compile
    _layer_compile = None if enabled is None else bool(enabled)


def layer_compile_enabled() -> bool:
    if _layer_compile is not None:
        return _layer_compile
    return os.environ.get("WANRT_DISABLE_LAYER_COMPILE", "0").lower() not in ("1", "true", "yes")


class CustomOp(nn.Module):
    """A module whose ``forward`` is bound once, at construction, to its platform's implementation.

    Subclasses implement ``forward_native`` (pure torch, compile-friendly) and, where a fused
    kernel exists, ``forward_fused``. ``self.impl`` names the choice (see ``POLICY``).
    """

    layer_types: list[type[CustomOp]] = []  # every subclass, for implementation_report()
    forward_fused = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CustomOp.layer_types.append(cls)

    def __init__(self) -> None:
        super().__init__()
        self.impl = self.choose_impl()
        if self.impl == "triton":
            self._forward_method = self.forward_fused
        elif self.impl == "compiled-native":
            # One code object for all instances: layers of the same config share the compiled
            # graph (Dynamo guards on their attributes, not their identity).
            self._forward_method = torch.compile(self.forward_native)
        else:
            self._forward_method = self.forward_native

    def forward(self, *args, **kwargs):
        return self._forward_method(*args, **kwargs)

    def forward_native(self, *args, **kwargs):
        raise NotImplementedError

    @classmethod
    def choose_impl(cls, platform: Platform | None = None) -> str:
        """The implementation this layer type runs on ``platform`` under the current switches."""
        platform = platform or current_platform()
        default = POLICY[platform.name]
        if (default == "triton" and cls.forward_fused is not None and fused_kernels_enabled()
                and triton_usable(platform)):
            return "triton"
        if default == "compiled-native" and layer_compile_enabled() and platform.compile:
            return "compiled-native"
        return "native"


def implementation_report(model: nn.Module | None = None) -> dict[str, str]:
    """``{layer class name: implementation}`` on the current platform.

    Without ``model``: what each layer type would run if built now. With ``model``: what its
    layers actually run (instances built under different switches are listed comma-separated).
    """
    if model is None:
        return {cls.__name__: cls.choose_impl() for cls in CustomOp.layer_types}
    impls: dict[str, set[str]] = {}
    for m in model.modules():
        if isinstance(m, CustomOp):
            impls.setdefault(type(m).__name__, set()).add(m.impl)
    return {name: ", ".join(sorted(s)) for name, s in impls.items()}
