"""The official Wan code (PyPI ``wan22``, package ``wan``) as a test reference.

Its package ``__init__`` imports everything (flash-attn, easydict, ...), so module files are loaded
one by one under a private package name, with the flash-attention call swapped for SDPA (same
math, fp32 allowed on CPU).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

_PKG = "wan_official"


def _wan_root() -> Path:
    spec = importlib.util.find_spec("wan")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the official Wan code is missing: pip install --no-deps wan22==2.2.11")
    return Path(list(spec.submodule_search_locations)[0])


def sdpa_flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None,
                         q_scale=None, causal=False, window_size=(-1, -1), deterministic=False,
                         dtype=torch.bfloat16, version=None):
    """Drop-in for ``wan.modules.attention.flash_attention`` ([B, L, N, D]) in the input dtype."""
    assert window_size == (-1, -1) and not causal and q_scale is None
    mask = None
    if k_lens is not None:
        pos = torch.arange(k.shape[1], device=k.device)
        mask = (pos[None, :] < k_lens.to(k.device)[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, scale=softmax_scale)
    out = out.transpose(1, 2)
    if q_lens is not None:  # rows past a query's length are padding in the official code
        pos = torch.arange(q.shape[1], device=q.device)
        out = out * (pos[None, :] < q_lens.to(q.device)[:, None])[:, :, None, None]
    return out.contiguous()


def _package(name: str, path: Path) -> types.ModuleType:
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    return sys.modules[name]


def official_module(relpath: str) -> types.ModuleType:
    """Load ``wan/<relpath>.py`` (e.g. ``modules/model``, ``modules/vae2_1``,
    ``utils/fm_solvers_unipc``) with SDPA in place of flash-attention."""
    root = _wan_root()
    _package(_PKG, root)
    parts = relpath.split("/")
    for i in range(1, len(parts)):
        _package(".".join([_PKG, *parts[:i]]), root.joinpath(*parts[:i]))
    attention = types.ModuleType(f"{_PKG}.modules.attention")
    attention.flash_attention = sdpa_flash_attention
    attention.attention = sdpa_flash_attention
    sys.modules.setdefault(attention.__name__, attention)
    name = ".".join([_PKG, *parts])
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / f"{relpath}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # t5.py evaluates ``torch.cuda.current_device()`` in a default argument at import time.
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        spec.loader.exec_module(module)
    finally:
        torch.cuda.current_device = current_device
    return module


def official_scheduler(solver: str, steps: int, shift: float):
    """The official ``unipc`` / ``dpm++`` flow scheduler, built as ``wan/text2video.py`` does."""
    if solver == "unipc":
        scheduler = official_module("utils/fm_solvers_unipc").FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        scheduler.set_timesteps(steps, shift=shift)
    else:
        dpm = official_module("utils/fm_solvers")
        scheduler = dpm.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1,
                                                        use_dynamic_shifting=False)
        dpm.retrieve_timesteps(scheduler, sigmas=dpm.get_sampling_sigmas(steps, shift))
    return scheduler
