"""Pure-torch fallbacks: the reference semantics of every fused kernel.

Traceable by ``torch.compile`` (no host syncs, no data-dependent branches). Statistics and
modulation math in fp32; outputs in the dtype of ``x`` (``residual`` for residual updates).

Modulation tensors (shift / scale / gate) come in three layouts, all relative to ``x: [B, L, C]``:
``[B, 1, C]`` (one per sample), ``[B, F, 1, C]`` (one per latent frame, ``L = F * tokens_per_frame``)
and ``[B, L, C]`` (one per token, Wan 2.2 TI2V).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_token(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """View a modulation tensor so that it broadcasts against ``x: [B, L, C]`` (fp32)."""
    if t is None:
        return None
    t = t.float()
    if t.dim() == 4:  # [B, F, 1, C] -> repeat each frame's row over its tokens
        b, f, _, c = t.shape
        return t.expand(b, f, x.shape[1] // f, c).reshape(b, x.shape[1], c)
    return t


def layer_norm_fp32(x: torch.Tensor, eps: float, weight=None, bias=None) -> torch.Tensor:
    """LayerNorm over the last dim computed in fp32; returns fp32."""
    return F.layer_norm(x.float(), x.shape[-1:], None if weight is None else weight.float(),
                        None if bias is None else bias.float(), eps)


def norm_modulate(x, shift, scale, *, eps=1e-6, weight=None, bias=None):
    """``LN(x) * (1 + scale) + shift`` -> x.dtype. ``shift`` / ``scale`` may be None (0)."""
    y = layer_norm_fp32(x, eps, weight, bias)
    if scale is not None:
        y = y * (1 + _per_token(scale, x))
    if shift is not None:
        y = y + _per_token(shift, x)
    return y.to(x.dtype)


def gated_residual(residual, x, gate):
    """``residual + gate * x`` -> residual.dtype. ``gate`` None means 1."""
    update = x.float() if gate is None else x.float() * _per_token(gate, x)
    return (residual.float() + update).to(residual.dtype)


def gated_residual_norm_modulate(residual, x, gate, shift, scale, *, eps=1e-6, weight=None,
                                 bias=None):
    """``(norm_modulate(r), r)`` with ``r = residual + gate * x``.

    The norm reads the fp32 sum before it is rounded to ``residual.dtype``.
    """
    update = x.float() if gate is None else x.float() * _per_token(gate, x)
    r32 = residual.float() + update
    y = F.layer_norm(r32, r32.shape[-1:], None if weight is None else weight.float(),
                     None if bias is None else bias.float(), eps)
    if scale is not None:
        y = y * (1 + _per_token(scale, x))
    if shift is not None:
        y = y + _per_token(shift, x)
    return y.to(x.dtype), r32.to(residual.dtype)


def rms_norm(x, weight, *, eps=1e-6):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dim, fp32 statistics -> x.dtype."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def rotary_embedding(x, cos, sin):
    """Rotate interleaved pairs ``(x[2j], x[2j+1])`` of ``x: [B, L, H, D]`` by the angles whose
    cosine / sine are ``cos, sin: [L, D/2]`` (or ``[B, L, D/2]``); fp32 math -> x.dtype."""
    x32 = x.float().unflatten(-1, (-1, 2))
    x_re, x_im = x32[..., 0], x32[..., 1]
    c = cos.float().unsqueeze(-2)  # broadcast over heads
    s = sin.float().unsqueeze(-2)
    out = torch.stack((x_re * c - x_im * s, x_re * s + x_im * c), dim=-1)
    return out.flatten(-2).to(x.dtype)
