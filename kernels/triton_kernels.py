"""Triton device code of the fused ops (launched by ``triton_ops``).

The ops are memory-bound: each input is read once and each output written once, so the design is
about keeping enough bytes in flight per SM and not re-reading what a program can share.

``row_kernel`` serves the four row ops. A program owns a tile of ``ROWS`` consecutive tokens of
one sample, ``[ROWS, BLOCK_C]`` (grid ``(cdiv(L, ROWS), B)``; tokens past ``L`` and channels past
``C`` are masked). It loads the tile, optionally adds the gated update to the residual, computes
the LayerNorm / RMSNorm statistics per token (reductions along axis 1), applies the affine
weight and bias and the modulation as one multiply-add, and writes once. The per-channel vectors
(weight, bias, shift, scale) are loaded once per tile, not once per token, after the rows (fewer
live registers while the rows are in flight) but before the last reduction: ptxas does not move
loads across its barrier, so they are issued together and arrive while it runs, rather than in
dependent rounds after it.

Modulation rows: token ``(b, l)`` uses row ``l // group`` of its tensor (``[B,1,C]``: row stride
0; ``[B,L,C]``: group 1; ``[B,F,1,C]``: group ``L/F``). A ``*_LAYOUT`` constexpr per tensor says
how a tile reads it: "tile" where one row serves the whole tile (``[B,1,C]``, or frames whose
token count is a multiple of ``ROWS``), loaded once as ``[1, BLOCK_C]``; else one row per token,
"frame" (re-read by the frame's other tiles; a tile may straddle frames) or "token" (read once).

``rotary_kernel``: a program owns ``BLOCK_H`` heads x ``TOKENS`` tokens, ``[BLOCK_H, TOKENS, D]``
(grid ``(cdiv(H, BLOCK_H) * cdiv(L, TOKENS), B)``, the head blocks of a token block adjacent).
It loads the cos/sin rows ``[TOKENS, D/2]`` once for all its heads and views the contiguous head
vectors as interleaved pairs ``[BLOCK_H, TOKENS, D/2, 2]`` in registers.

Tiles are shaped so that a thread's share of the leading axis (rows, heads) sits in its own
registers; ``_load_once`` relies on that. Activations are loaded "evict first" (read once), the
shared vectors "evict last" (every tile re-reads them). Channel (head) dims are contiguous; all
other strides are arguments. Math in fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_once(ptrs, first):
    """fp32 values shared along axis 0 of a tile, loaded once, with that axis kept as size 1.

    ``ptrs`` is shaped like the tile (the same addresses at every index of axis 0); ``first``
    masks all but index 0 of axis 0. Summing over axis 0 then yields the row in the tile's own
    register layout: a load of the row alone would be laid out by its own shape (for fp32 4
    instead of 8 values per thread) and need a shuffle through shared memory. The masked-off
    loads have compile-time false predicates, which ptxas removes (the GPU compile test in
    tests/test_kernels.py counts the loads)."""
    v = tl.load(ptrs, mask=first, other=0.0, eviction_policy="evict_last")
    return tl.sum(v.to(tl.float32), axis=0, keep_dims=True)


@triton.jit
def _load_rows(ptr, b, rows, stride_b, stride_r, cols, mask, EVICT: tl.constexpr):
    """fp32 ``[len(rows), BLOCK_C]``: rows ``rows`` of sample ``b`` (channel dim contiguous)."""
    ptrs = (ptr + b.to(tl.int64) * stride_b + rows.to(tl.int64)[:, None] * stride_r
            + cols[None, :])
    return tl.load(ptrs, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)


@triton.jit
def _load_vector(ptr, cols, first):
    """fp32 ``[1, BLOCK_C]``: the ``[C]`` vector at ``ptr``, once for the ``[ROWS, BLOCK_C]`` tile
    (``first``: the tile's first row, channels < C)."""
    return _load_once(tl.broadcast_to(ptr + cols[None, :], first.shape), first)


@triton.jit
def _load_modulation(ptr, b, l0, rows, stride_b, stride_m, group, cols, mask, first,
                     LAYOUT: tl.constexpr):
    """Modulation of the tile starting at token ``l0``. ``LAYOUT`` "tile": row ``l0 // group``
    serves every token of the tile, ``[1, BLOCK_C]``; "frame": row ``l // group`` per token;
    "token": row ``l`` per token (read once), both ``[ROWS, BLOCK_C]``."""
    if LAYOUT == "tile":
        row = ptr + b.to(tl.int64) * stride_b + (l0 // group).to(tl.int64) * stride_m
        m = _load_vector(row, cols, first)
    elif LAYOUT == "frame":
        m = _load_rows(ptr, b, rows // group, stride_b, stride_m, cols, mask, "evict_last")
    else:
        m = _load_rows(ptr, b, rows, stride_b, stride_m, cols, mask, "evict_first")
    return m


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
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
    GATE_LAYOUT: tl.constexpr, SHIFT_LAYOUT: tl.constexpr, SCALE_LAYOUT: tl.constexpr,
):
    l0 = tl.program_id(0) * ROWS
    b = tl.program_id(1)
    rows = l0 + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    mask = (rows < L)[:, None] & col_ok[None, :]
    first = (tl.arange(0, ROWS) == 0)[:, None] & col_ok[None, :]
    out_offsets = (b.to(tl.int64) * L + rows)[:, None] * C + cols[None, :]  # contiguous outputs

    x = _load_rows(x_ptr, b, rows, stride_xb, stride_xl, cols, mask, "evict_first")
    if res_ptr is not None:  # x <- residual + gate * x, stored in the residual's dtype
        residual = _load_rows(res_ptr, b, rows, stride_rb, stride_rl, cols, mask, "evict_first")
        if gate_ptr is not None:
            x *= _load_modulation(gate_ptr, b, l0, rows, gate_sb, gate_sm, gate_group, cols,
                                  mask, first, GATE_LAYOUT)
        x += residual
        tl.store(res_out_ptr + out_offsets, x.to(res_out_ptr.dtype.element_ty), mask=mask)

    if NORM != "none":
        if NORM == "layer":
            mean = tl.sum(x, axis=1, keep_dims=True) / C
            x = tl.where(mask, x - mean, 0.0)
        # y = x_hat * a + c: a = weight * (1 + scale), c = bias * (1 + scale) + shift (loaded
        # before the last reduction: see the module doc)
        a = 1.0
        c = 0.0
        if weight_ptr is not None:
            a = _load_vector(weight_ptr, cols, first)
        if bias_ptr is not None:
            c = _load_vector(bias_ptr, cols, first)
        if scale_ptr is not None:
            scale = 1.0 + _load_modulation(scale_ptr, b, l0, rows, scale_sb, scale_sm,
                                           scale_group, cols, mask, first, SCALE_LAYOUT)
            a = a * scale
            if bias_ptr is not None:
                c = c * scale
        if shift_ptr is not None:
            c += _load_modulation(shift_ptr, b, l0, rows, shift_sb, shift_sm, shift_group, cols,
                                  mask, first, SHIFT_LAYOUT)
        x *= tl.math.rsqrt(tl.sum(x * x, axis=1, keep_dims=True) / C + eps)
        tl.store(out_ptr + out_offsets, (x * a + c).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_kernel(
    out_ptr,                                    # contiguous [B, L, H, D]
    x_ptr, stride_xb, stride_xl, stride_xh,     # [B, L, H, D], head dim contiguous
    cos_ptr, sin_ptr, stride_cb, stride_cl,     # [B or 1, L, D/2], last dim contiguous
    L, H, D2,
    BLOCK_H: tl.constexpr, TOKENS: tl.constexpr, BLOCK_D2: tl.constexpr,
):
    head_blocks = tl.cdiv(H, BLOCK_H)
    heads = (tl.program_id(0) % head_blocks * BLOCK_H + tl.arange(0, BLOCK_H))[:, None, None]
    tokens = (tl.program_id(0) // head_blocks * TOKENS + tl.arange(0, TOKENS))[None, :, None]
    b = tl.program_id(1).to(tl.int64)
    j = tl.arange(0, BLOCK_D2)[None, None, :]  # pair index
    d = tl.arange(0, 2 * BLOCK_D2)[None, None, :]

    # cos / sin [1, TOKENS, D/2], once for all heads
    table = tl.broadcast_to(b * stride_cb + tokens.to(tl.int64) * stride_cl + j,
                            (BLOCK_H, TOKENS, BLOCK_D2))
    first = (tl.arange(0, BLOCK_H) == 0)[:, None, None] & (tokens < L) & (j < D2)
    c = _load_once(cos_ptr + table, first)
    s = _load_once(sin_ptr + table, first)

    # contiguous [BLOCK_H, TOKENS, D] loads, viewed as the pairs [BLOCK_H, TOKENS, D/2, 2]
    mask = (heads < H) & (tokens < L) & (d < 2 * D2)
    x = tl.load(x_ptr + b * stride_xb + tokens.to(tl.int64) * stride_xl + heads * stride_xh + d,
                mask=mask, other=0.0, eviction_policy="evict_first")
    x_re, x_im = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_H, TOKENS, BLOCK_D2, 2)))
    out = tl.join(x_re * c - x_im * s, x_re * s + x_im * c)
    out = tl.reshape(out, (BLOCK_H, TOKENS, 2 * BLOCK_D2)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + ((b * L + tokens) * H + heads) * (2 * D2) + d, out, mask=mask)
