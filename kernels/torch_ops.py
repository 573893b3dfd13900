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


# ---------------------------------------------------------------------------------------------
# 8-bit attention (SageAttention-style). Shared by the Triton path, which runs the same
# quantisation in its fused kernel, and by the fallback below.

LOG2E = 1.4426950408889634
FP8_MAX = 448.0  # largest finite float8_e4m3fn; P in [0, 1] and V / v_scale are scaled to it


def quantize_int8_blocks(x, block, *, mean=None, factor=1.0):
    """``x: [B, L, H, D]`` -> ``(x_int8 [B, L, H, D], scale [B, H, ceil(L / block)] fp32)``.

    Per head and per ``block`` consecutive tokens: ``y = x - mean`` (``mean: [B, H, D]`` fp32, or
    none), ``s = max(absmax(y), 1e-12) / 127``, ``x_int8 = round_half_away(y / s)``; the stored
    scale is ``s * factor`` (the attention folds its softmax scale and log2(e) in there)."""
    b, seq, h, d = x.shape
    y = x.float() if mean is None else x.float() - mean[:, None]
    y = F.pad(y, (0, 0, 0, 0, 0, -seq % block)).view(b, -1, block, h, d)
    s = y.abs().amax(dim=(2, 4)).clamp_min(1e-12) / 127  # [B, nblocks, H]
    q = y / s[:, :, None, :, None]
    q = torch.trunc(q + torch.where(q >= 0, 0.5, -0.5)).to(torch.int8)
    return q.flatten(1, 2)[:, :seq], (s * factor).transpose(1, 2).contiguous()


def quantize_v_fp8(v, *, pad_to=1):
    """``v: [B, L, H, D]`` -> ``(v_fp8 [B, H, D, L'] float8_e4m3fn, scale [B, H, D] fp32)``:
    one scale per channel, ``max(absmax over tokens, 1e-12) / 448``, cast round-to-nearest-even;
    token-contiguous (the operand layout Hopper's fp8 tensor cores read), the token dim
    zero-padded to a multiple of ``pad_to`` (aligned rows for the kernel)."""
    scale = v.float().abs().amax(dim=1).clamp_min(1e-12) / FP8_MAX  # [B, H, D]
    v8 = v.float().permute(0, 2, 3, 1) / scale[..., None]
    v8 = F.pad(v8, (0, -v.shape[1] % pad_to)).to(torch.float8_e4m3fn)
    return v8.contiguous(), scale.contiguous()


SCORE_BYTES = 1 << 28  # fp32 scores of one query chunk, [B, H, chunk, Lk] (a few such live at once)


def sage8_attention(q, k, v, *, pv="fp16", q_block=128, k_block=64, query_chunk=None):
    """8-bit attention: ``softmax(q k^T / sqrt(D)) v`` for ``q: [B, Lq, H, D]``,
    ``k, v: [B, Lk, H, D]`` -> ``[B, Lq, H, D]`` in q's dtype.

    Q and K are quantised to INT8 per ``q_block`` / ``k_block`` tokens (:func:`quantize_int8_blocks`),
    K after subtracting its per-head mean over tokens (softmax is invariant to a per-row constant,
    so this is exact; it removes the channel bias that would otherwise dominate K's scales).
    Q·Kᵀ is exact integer arithmetic; the softmax runs in fp32 with ``exp2`` (``log2 e / sqrt(D)``
    folded into Q's scale). P·V: ``pv="fp16"`` rounds P and V to fp16; ``pv="fp8"`` rounds
    ``448 P`` and V (per-channel scale, :func:`quantize_v_fp8`) to float8_e4m3fn; both accumulate
    in fp32 and divide by the fp32 row sum of P. Queries run ``query_chunk`` rows at a time to
    bound the ``[B, H, chunk, Lk]`` score memory (default: :data:`SCORE_BYTES` of scores, e.g.
    22 rows at 40 heads and 75,600 keys, where 1024 rows took 12 GB); that does not change the
    result.
    """
    d = q.shape[-1]
    if query_chunk is None:
        query_chunk = max(1, SCORE_BYTES // (4 * k.shape[0] * k.shape[2] * k.shape[1]))
    q8, qs = quantize_int8_blocks(q, q_block, factor=d ** -0.5 * LOG2E)
    k8, ks = quantize_int8_blocks(k, k_block, mean=k.mean(dim=1, dtype=torch.float32))
    qs = qs.repeat_interleave(q_block, dim=-1)[..., :q.shape[1], None]  # [B, H, Lq, 1]
    ks = ks.repeat_interleave(k_block, dim=-1)[..., None, :k.shape[1]]  # [B, H, 1, Lk]
    if pv == "fp8":
        v8, vs = quantize_v_fp8(v)
        vt = v8.float().transpose(-1, -2)  # [B, H, Lk, D]
    elif pv == "fp16":
        vt = v.to(torch.float16).float().transpose(1, 2)
    else:
        raise ValueError(f"pv must be 'fp8' or 'fp16', got {pv!r}")
    kt = k8.float().permute(0, 2, 3, 1)  # [B, H, D, Lk]
    outs = []
    for start in range(0, q.shape[1], query_chunk):
        rows = slice(start, start + query_chunk)
        s = (q8[:, rows].float().transpose(1, 2) @ kt) * (qs[:, :, rows] * ks)  # [B, H, l, Lk]
        p = torch.exp2(s - s.amax(dim=-1, keepdim=True))
        row_sum = p.sum(dim=-1, keepdim=True)
        if pv == "fp8":
            o = (p * FP8_MAX).to(torch.float8_e4m3fn).float() @ vt * (vs[:, :, None] / FP8_MAX)
        else:
            o = p.to(torch.float16).float() @ vt
        outs.append((o / row_sum).transpose(1, 2))
    return torch.cat(outs, dim=1).to(q.dtype)
