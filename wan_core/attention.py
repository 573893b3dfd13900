"""Multi-head attention on ``[B, L, H, D]`` tensors with selectable backends.

Every backend takes ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` and returns ``[B, Lq, H, D]``
(no mask, scale ``1/sqrt(D)``: all Wan attention is unmasked). Backends register by name with
:func:`register_backend`; ``"sdpa"`` (PyTorch's fused attention, which picks flash / cuDNN /
memory-efficient kernels itself) is the default, ``"math"`` is the plain softmax reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

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


@register_backend("math")
def _math(q, k, v):
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.float()).to(q.dtype)
