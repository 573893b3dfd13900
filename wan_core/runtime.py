"""Runtime options: the one place that decides how the DiT runs on this machine.

A :class:`RuntimeOptions` holds every choice (platform policy, fused kernels on/off, per-layer
compile on/off, attention backend and its exclusions, compile mode). Nodes and the runner build
one and pass it down; :meth:`RuntimeOptions.layer_impl` is the only function that picks a layer's
implementation, :meth:`AttentionOptions.backend_for` the only one that picks an attention
backend, :func:`apply` the only code that binds them to a model. The environment variables
``WANRT_DISABLE_FUSED_KERNELS`` / ``WANRT_DISABLE_LAYER_COMPILE`` are read by
:meth:`RuntimeOptions.from_env` and nowhere else (``WANRT_PLATFORM`` by ``kernels.platforms``).

Platform policy (``POLICY``), what each platform's layers run by default:

- ``"triton"``: the fused Triton kernels (``forward_fused``); CUDA and ROCm.
- ``"compiled-native"``: ``torch.compile`` over ``forward_native`` (the torch fallback kernels); MUSA.
- ``"native"``: ``forward_native`` eagerly; NPU (never compiled), XPU, MPS, CPU.

A layer runs ``"native"`` instead when its default is switched off or unavailable: fused kernels
off or Triton missing; per-layer compile off or unsupported by the platform.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..kernels import Platform, current_platform, triton_usable
from ..kernels.platforms import PLATFORMS
from .attention import QUANTISED_BACKENDS, get_backend

POLICY: dict[str, str] = {
    "cuda": "triton", "rocm": "triton", "musa": "compiled-native",
    "npu": "native", "xpu": "native", "mps": "native", "cpu": "native",
}


@dataclass(frozen=True)
class AttentionOptions:
    """Which attention backend (``wan_core.attention.BACKENDS``) each call runs.

    ``backend`` runs every self-attention except the exclusions, which run ``dense_backend``: the
    first ``dense_first_blocks`` blocks, and every block during the first ``dense_first_steps``
    and the last ``dense_last_steps`` sampling steps (the published mitigation for 8-bit
    attention's quality loss). Cross-attention (to 512 text tokens, ~1 % of the FLOPs) runs
    ``backend`` unless that is an 8-bit one, then ``dense_backend``.
    """

    backend: str = "auto"
    dense_backend: str = "auto"
    dense_first_blocks: int = 0
    dense_first_steps: int = 0
    dense_last_steps: int = 0

    def __post_init__(self):
        get_backend(self.backend)  # checks the names
        get_backend(self.dense_backend)
        for name in ("dense_first_blocks", "dense_first_steps", "dense_last_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def backend_for(self, block: int, step: int | None = None, steps: int | None = None) -> str:
        """The self-attention backend of block ``block`` (from 0) at sampling step ``step`` of
        ``steps`` (from 0; None outside a sampling loop: no step is excluded)."""
        dense_step = step is not None and steps is not None and (
            step < self.dense_first_steps or step >= steps - self.dense_last_steps)
        return self.dense_backend if dense_step or block < self.dense_first_blocks else self.backend

    def replace(self, **changes) -> AttentionOptions:
        return dataclasses.replace(self, **changes)

    @property
    def varies_by_step(self) -> bool:
        """Whether a sampling step's place changes any backend (first / last steps dense)."""
        return bool(self.dense_first_steps or self.dense_last_steps)

    @property
    def cross_backend(self) -> str:
        return self.dense_backend if self.backend in QUANTISED_BACKENDS else self.backend


@dataclass(frozen=True)
class CompileOptions:
    """``wan_core.compile.compile_dit``'s arguments: ``mode`` (off / layers / blocks / full),
    the ``torch.compile`` backend, inductor's mode and ``dynamic``."""

    mode: str = "off"
    backend: str | object = "inductor"
    inductor_mode: str | None = None
    dynamic: bool | None = None


def _env_off(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything that selects an implementation; immutable (``replace`` makes variants)."""

    platform: str | None = None  # a PLATFORMS name; None: the detected (or WANRT_PLATFORM) one
    fused_kernels: bool = True  # the fused Triton kernels where the platform policy runs them
    layer_compile: bool = True  # per-layer torch.compile where the platform policy runs it
    attention: AttentionOptions = field(default_factory=AttentionOptions)
    compile: CompileOptions = field(default_factory=CompileOptions)

    @classmethod
    def from_env(cls, **changes) -> RuntimeOptions:
        """Defaults with the environment's switches (``WANRT_DISABLE_FUSED_KERNELS=1``,
        ``WANRT_DISABLE_LAYER_COMPILE=1``), then ``changes``."""
        return cls(fused_kernels=not _env_off("WANRT_DISABLE_FUSED_KERNELS"),
                   layer_compile=not _env_off("WANRT_DISABLE_LAYER_COMPILE"), **changes)

    def replace(self, **changes) -> RuntimeOptions:
        return dataclasses.replace(self, **changes)

    def for_device(self, device: torch.device | str) -> RuntimeOptions:
        """These options for a model that computes on ``device``: the CPU platform's where that
        is the CPU (a text encoder kept on the CPU of a CUDA machine runs the torch layers; GPU
        kernels would refuse its tensors), unchanged elsewhere."""
        return self.replace(platform="cpu") if torch.device(device).type == "cpu" else self

    def resolved_platform(self) -> Platform:
        return PLATFORMS[self.platform]() if self.platform else current_platform()

    def layer_impl(self, layer_type: type) -> str:
        """``"triton"``, ``"compiled-native"`` or ``"native"`` for a ``CustomOp`` subclass."""
        platform = self.resolved_platform()
        if self._runs_fused(platform) and getattr(layer_type, "forward_fused", None) is not None:
            return "triton"
        if POLICY[platform.name] == "compiled-native" and self.layer_compile and platform.compile:
            return "compiled-native"
        return "native"

    def kernel_impl(self) -> str | None:
        """How code outside WanRT's layers (ComfyUI's own Wan blocks under WanRT Accelerate)
        calls the fused kernels: ``None`` (Triton for tensors on the platform's device) where
        these options run them, else ``"torch"``."""
        return None if self._runs_fused(self.resolved_platform()) else "torch"

    def _runs_fused(self, platform: Platform) -> bool:
        return POLICY[platform.name] == "triton" and self.fused_kernels and triton_usable(platform)


def bind_layers(model: nn.Module, options: RuntimeOptions) -> nn.Module:
    """Bind each dispatching layer (``CustomOp``) of ``model`` to its implementation under
    ``options``, in place; returns ``model``."""
    from .layers import CustomOp

    for layer in model.modules():
        if isinstance(layer, CustomOp):
            layer.set_impl(options.layer_impl(type(layer)))
    return model


def apply(model: nn.Module, options: RuntimeOptions) -> nn.Module:
    """Bind ``options`` to ``model`` (a ``WanModel``, or any module of dispatching layers) in
    place: each layer's implementation, the attention plan, then the compile mode. Returns it."""
    from .compile import compile_dit

    bind_layers(model, options)
    if hasattr(model, "set_attention"):
        model.set_attention(options.attention)
    c = options.compile
    return compile_dit(model, c.mode, backend=c.backend, inductor_mode=c.inductor_mode,
                       dynamic=c.dynamic, platform=options.resolved_platform())
