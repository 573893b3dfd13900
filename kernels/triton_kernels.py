"""Triton device code of the fused ops (launched by ``triton_ops``).

``row_kernel`` serves the four row ops: a program owns one token row ``[C]`` (grid ``(L, B)``),
loads it once into registers, optionally adds the gated update to the residual, then optionally
normalises (LayerNorm or RMSNorm), applies the affine parameters and the modulation, and writes
once: the ops are memory-bound, so a single pass over the bytes is the whole design. A modulation
row for token ``(b, l)`` is row ``l // group`` of its tensor: ``[B,1,C]`` has row stride 0,
``[B,L,C]`` group 1, ``[B,F,1,C]`` group ``L/F``.

``rotary_kernel``: a program owns ``BLOCK_H`` heads of one token, loads them as contiguous
``[BLOCK_H, D]`` vectors and views them as interleaved pairs ``[BLOCK_H, D/2, 2]`` in registers.

Channel (head) dims are contiguous; all other strides are arguments. Math in fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_row(ptr, b, r, stride_b, stride_r, cols, mask):
    """fp32 row ``[BLOCK_C]`` at ``ptr + b*stride_b + r*stride_r`` (channel dim contiguous)."""
    base = ptr + b.to(tl.int64) * stride_b + r.to(tl.int64) * stride_r
    return tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def row_kernel(
    out_ptr, res_out_ptr,                       # contiguous [B, L, C] outputs (or None)
    x_ptr, stride_xb, stride_xl,                # [B, L, C], channel dim contiguous
    res_ptr, stride_rb, stride_rl,              # residual, like x (or None)
    gate_ptr, gate_sb, gate_sm, gate_group,     # modulation rows (or None), see module doc
    shift_ptr, shift_sb, shift_sm, shift_group,
    scale_ptr, scale_sb, scale_sm, scale_group,
    weight_ptr, bias_ptr,                       # [C] (or None)
    L, C, eps,
    NORM: tl.constexpr,                         # "layer", "rms" or "none"
    BLOCK_C: tl.constexpr,
):
    l = tl.program_id(0)
    b = tl.program_id(1)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    row = (b.to(tl.int64) * L + l) * C  # offset of this row in the contiguous outputs

    x = _load_row(x_ptr, b, l, stride_xb, stride_xl, cols, mask)
    if res_ptr is not None:  # x <- residual + gate * x, stored in the residual's dtype
        if gate_ptr is not None:
            x *= _load_row(gate_ptr, b, l // gate_group, gate_sb, gate_sm, cols, mask)
        x += _load_row(res_ptr, b, l, stride_rb, stride_rl, cols, mask)
        tl.store(res_out_ptr + row + cols, x.to(res_out_ptr.dtype.element_ty), mask=mask)

    if NORM != "none":
        if NORM == "layer":
            mean = tl.sum(x, axis=0) / C
            x = tl.where(mask, x - mean, 0.0)
        y = x * tl.math.rsqrt(tl.sum(x * x, axis=0) / C + eps)
        if weight_ptr is not None:
            y *= tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if bias_ptr is not None:
            y += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if scale_ptr is not None:
            y *= 1.0 + _load_row(scale_ptr, b, l // scale_group, scale_sb, scale_sm, cols, mask)
        if shift_ptr is not None:
            y += _load_row(shift_ptr, b, l // shift_group, shift_sb, shift_sm, cols, mask)
        tl.store(out_ptr + row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_kernel(
    out_ptr,                                    # contiguous [B, L, H, D]
    x_ptr, stride_xb, stride_xl, stride_xh,     # [B, L, H, D], head dim contiguous
    cos_ptr, sin_ptr, stride_cb, stride_cl,     # [B or 1, L, D/2], last dim contiguous
    L, H, D2,
    BLOCK_H: tl.constexpr, BLOCK_D2: tl.constexpr,
):
    l = tl.program_id(0)
    b = tl.program_id(1)
    heads = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tl.arange(0, BLOCK_D2)  # pair index
    d = tl.arange(0, 2 * BLOCK_D2)
    mask = (heads < H)[:, None] & (d < 2 * D2)[None, :]

    table = b.to(tl.int64) * stride_cb + l.to(tl.int64) * stride_cl + j
    c = tl.load(cos_ptr + table, mask=j < D2, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + table, mask=j < D2, other=0.0).to(tl.float32)[None, :]
    # contiguous [BLOCK_H, D] loads, viewed as the interleaved pairs [BLOCK_H, D/2, 2]
    x_row = x_ptr + b.to(tl.int64) * stride_xb + l.to(tl.int64) * stride_xl
    x = tl.load(x_row + heads[:, None] * stride_xh + d[None, :], mask=mask, other=0.0)
    x_re, x_im = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_H, BLOCK_D2, 2)))
    out = tl.join(x_re * c - x_im * s, x_re * s + x_im * c)
    out_row = out_ptr + (b.to(tl.int64) * L + l) * H * (2 * D2)
    tl.store(out_row + heads[:, None] * (2 * D2) + d[None, :],
             tl.reshape(out, (BLOCK_H, 2 * BLOCK_D2)).to(out_ptr.dtype.element_ty), mask=mask)
