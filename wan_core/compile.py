"""``torch.compile`` modes for the Wan DiT, and the one-line summary of what a mode does here.

===========  ==========================================================================
``off``      Nothing compiled: every layer keeps its platform implementation (the fused
             Triton kernels on CUDA / ROCm, the per-layer compile on MUSA, torch elsewhere).
``layers``   The seed's per-layer compile: each dispatching layer (``CustomOp``: norms,
             modulation, gated residual, RMSNorm, RoPE) runs ``torch.compile`` over its
             torch path. Where a layer runs a Triton kernel (CUDA / ROCm) the kernel stands
             in and nothing is compiled.
``blocks``   Regional compile: every transformer block compiles its ``forward`` with
             ``fullgraph=True``. All blocks (and the second A14B expert) share one code
             object and so one graph: the first block compiles, the others reuse it. The
             Triton kernels stay in the graph as custom ops.
``full``     The whole model's ``forward``, ``fullgraph=True``.
===========  ==========================================================================

Platforms without ``torch.compile`` (``Platform.compile`` False: Ascend NPU) run every mode as
``off``; :func:`compile_summary` says so, nothing fails.

Recompiles. Timestep values, the CFG pair and the A14B expert switch change no guard: timesteps
are tensors, cond and uncond come as one batch-2 forward (``sampling.Guidance``, batched by
default; two batch-1 forwards are as free) and the experts share their code. A new resolution or
frame count recompiles once: ``dynamic=None`` keeps torch's automatic dynamic shapes, so the first
shape gets a static graph (the fastest kernels, and a run keeps its size for all its steps) and
the first change marks the changed sizes dynamic, after which token counts are free. Marking the
token dimension dynamic up front would save that one compile for every run at the price of
dynamic-shape kernels for all; ``dynamic=True`` does that for whoever wants it.

First-step cost. Compiling is mostly Inductor code generation and Triton builds, which torch
caches on disk (FX graph cache, AOT autograd cache, Triton kernels) under
``TORCHINDUCTOR_CACHE_DIR`` — by default a temp folder that a reboot or a temp cleaner empties.
:func:`persistent_compile_cache` moves it under the user's cache folder so a later process
(another ComfyUI session, the next ``wanrt run``) starts from compiled kernels: only Dynamo's
tracing is left of the first step.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..kernels import Platform, current_platform
from .layers import CustomOp

MODES = ("off", "layers", "blocks", "full")


def compile_dit(model: nn.Module, mode: str, *, backend: str | object = "inductor",
                inductor_mode: str | None = None, dynamic: bool | None = None,
                platform: Platform | None = None) -> nn.Module:
    """Compile ``model`` (a :class:`~wan_core.dit.WanModel`) in place in ``mode`` (see
    :data:`MODES`) and return it; its parameters and their names are unchanged.

    ``backend``: a ``torch.compile`` backend (``"inductor"``; ``"eager"`` / ``"aot_eager"`` to
    test tracing). ``inductor_mode``: inductor's ``mode`` (``"max-autotune-no-cudagraphs"``...).
    ``dynamic``: ``torch.compile``'s ``dynamic`` (None: static first, dynamic after one change).
    ``platform``: whose ``compile`` support decides (default: this process's; ``runtime.apply``
    passes its options' platform).
    """
    _check_mode(mode)
    if mode == "off" or not (platform or current_platform()).compile:
        return model
    if mode == "full" and getattr(model, "block_swap", None) is not None:
        raise ValueError("compile mode 'full' would trace the block swap; use mode 'blocks' "
                         "with block swap")
    options = {"backend": backend, "dynamic": dynamic}
    if inductor_mode is not None:
        options["mode"] = inductor_mode
    if mode == "layers":  # the binding CustomOp makes for "compiled-native", on eager layers
        for layer in model.modules():
            if isinstance(layer, CustomOp) and layer.impl == "native":
                layer.set_impl("compiled-native", fullgraph=True, **options)
    elif mode == "blocks":
        for block in model.blocks:
            block.compile(fullgraph=True, **options)
    else:
        model.compile(fullgraph=True, **options)
    return model


def compile_summary(mode: str, platform: Platform | None = None) -> str:
    """One line: what ``mode`` does on ``platform`` (default: the current one)."""
    _check_mode(mode)
    platform = platform or current_platform()
    impls = {cls.__name__: cls.choose_impl(platform) for cls in CustomOp.layer_types}
    layers = f"layers run {', '.join(sorted(set(impls.values())))}"
    head = f"{platform.name}, compile {mode}"
    if mode == "off":
        return f"{head}: eager model; {layers}"
    if not platform.compile:
        return (f"{head}: not applied, torch.compile is not supported on {platform.name}; "
                f"eager, {layers}")
    if mode == "layers":
        compiled = sorted(name for name, impl in impls.items() if impl != "triton")
        fused = sorted(name for name, impl in impls.items() if impl == "triton")
        parts = ([f"per-layer torch.compile of {', '.join(compiled)}"] if compiled else []) + (
            [f"fused Triton kernels for {', '.join(fused)}, not compiled"] if fused else [])
        return f"{head}: {'; '.join(parts)}"
    if mode == "blocks":
        return (f"{head}: one fullgraph torch.compile of the transformer block, shared by all "
                f"blocks; {layers} inside")
    return f"{head}: fullgraph torch.compile of the whole model; {layers} inside"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(MODES)}")



def persistent_compile_cache(directory: str | os.PathLike | None = None) -> Path:
    """Keep torch.compile's on-disk caches across processes and reboots; returns the folder.

    ``directory`` (default: ``$TORCHINDUCTOR_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/wanrt/torchinductor``, ``~/.cache`` without XDG) becomes Inductor's cache
    folder (Triton kernels go under it unless ``TRITON_CACHE_DIR`` says otherwise), and the FX
    graph and AOT autograd caches are switched on (the default in recent torch, not in all).
    Call before the first compile of the process."""
    if directory is None:
        directory = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            / "wanrt" / "torchinductor")
    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return path
