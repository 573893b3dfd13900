"""Multi-head attention on ``[B, L, H, D]`` tensors with selectable backends.

Every backend takes ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` and returns ``[B, Lq, H, D]``
(no mask, scale ``1/sqrt(D)``: all Wan attention is unmasked). Backends register by name with
:func:`register_backend`:

- ``"sdpa"``: PyTorch's fused attention, which picks flash / cuDNN / memory-efficient itself;
- ``"sdpa-cudnn"``, ``"sdpa-flash"``, ``"sdpa-efficient"``: SDPA held to that one kernel (an
  error where it cannot run these inputs); usable inside ``torch.compile``;
- ``"auto"``: ``"sdpa-cudnn"`` for fp16/bf16 on Hopper GPUs, ``"sdpa"`` elsewhere (see
  :func:`auto_backend`);
- ``"sage8"``, ``"sage8-fp8"``, ``"sage8-fp16"``: our 8-bit attention (``kernels.sage8_attention``:
  INT8 Q·Kᵀ, fp8 or fp16 P·V; ``"sage8"`` takes fp8 where the GPU has fp8 dots). Opt-in: lossy,
  see ``runtime.AttentionOptions`` for the layers and steps that stay dense;
- ``"math"``: the plain softmax reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import kernels

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

BACKENDS: dict[str, AttentionFn] = {}


def register_backend(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make ``fn(q, k, v)`` available as ``attention(..., backend=name)``."""
    def register(fn: AttentionFn) -> AttentionFn:
        BACKENDS[name] = fn
        return fn
    return register


def get_backend(name: str) -> AttentionFn:
    """The backend function for ``name``; a ValueError lists the known names."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; "
                         f"available: {', '.join(sorted(BACKENDS))}") from None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              backend: str = "sdpa") -> torch.Tensor:
    """``softmax(q k^T / sqrt(D)) v`` per head; ``[B, L, H, D]`` in and out."""
    return get_backend(backend)(q, k, v)


@register_backend("sdpa")
def _sdpa(q, k, v):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _sdpa_only(kernel: SDPBackend) -> AttentionFn:
    def held_to_kernel(q, k, v):
        with sdpa_kernel(kernel):
            return _sdpa(q, k, v)
    return held_to_kernel


for _name, _kernel in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
                       ("sdpa-flash", SDPBackend.FLASH_ATTENTION),
                       ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION)):
    register_backend(_name)(_sdpa_only(_kernel))


@torch.compiler.assume_constant_result  # resolved once while tracing: no graph break
def auto_backend(device_type: str, dtype: torch.dtype, head_dim: int = 128) -> str:
    """What ``"auto"`` runs for inputs on ``device_type`` in ``dtype`` with ``head_dim``: cuDNN
    attention on Hopper (compute capability 9.x) in fp16/bf16 for head dims that are multiples
    of 8 up to 128, measured ~597 TFLOP/s against flash's ~362 on an H200 at Wan shapes (32,760
    tokens, head dim 128); PyTorch's own SDPA choice elsewhere."""
    if (device_type == "cuda" and torch.version.cuda and dtype in (torch.float16, torch.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 128
            and torch.cuda.get_device_capability()[0] == 9):
        return "sdpa-cudnn"
    return "sdpa"


@register_backend("auto")
def _auto(q, k, v):
    return BACKENDS[auto_backend(q.device.type, q.dtype, q.shape[-1])](q, k, v)


# backend -> P·V precision of WanRT's 8-bit attention (None: fp8 where the GPU has fp8 dots)
QUANTISED_BACKENDS = {"sage8": None, "sage8-fp8": "fp8", "sage8-fp16": "fp16"}
for _name, _pv in QUANTISED_BACKENDS.items():
    register_backend(_name)(functools.partial(kernels.sage8_attention, pv=_pv))


@register_backend("math")
def _math(q, k, v):
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.float()).to(q.dtype)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention as :func:`attention` plus the log-sum-exp of each query's scores,
    ``lse [B, H, Lq]`` fp32, so partial attentions over key blocks can merge (ring attention).
    Flash attention where the device has it (CUDA, CPU), the plain softmax elsewhere."""
    qt, kt, vt = (a.transpose(1, 2) for a in (q, k, v))
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt)[:2]
    else:
        scores = (qt.float() @ kt.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        lse = scores.logsumexp(-1)
        out = ((scores - lse[..., None]).exp() @ vt.float()).to(q.dtype)
    return out.transpose(1, 2), lse.float()
