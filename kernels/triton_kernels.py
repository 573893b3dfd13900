"""Triton device code of the fused ops (launched by ``triton_ops``).

``row_kernel`` serves the four row ops: a program owns one token row ``[C]`` (grid ``(L, B)``),
loads it once into registers, optionally adds the gated update to the residual, then optionally
normalises (LayerNorm or RMSNorm), applies the affine parameters and the modulation, and writes
once: the ops are memory-bound, so a single pass over the bytes is the whole design. A modulation
row for token ``(b, l)`` is row ``l // group`` of its tensor: ``[B,1,C]`` has row stride 0,
``[B,L,C]`` group 1, ``[B,F,1,C]`` group ``L/F``.

``rotary_kernel``: a program owns ``BLOCK_H`` heads of one token, loads them as contiguous
``[BLOCK_H, D]`` vectors and views them as interleaved pairs ``[BLOCK_H, D/2, 2]`` in registers.

``quantize_int8_kernel`` and ``sage8_attention_kernel``: the 8-bit attention of
``torch_ops.sage8_attention`` (see there for the semantics). The first quantises one block of
tokens of one head per program (mean subtraction, absmax scale, rounding: one pass over the
bytes); the second is a flash-attention loop over key blocks with an INT8 Q·Kᵀ (int32
accumulators), an fp32 online softmax in base 2 and an fp16 or fp8 P·V with fp32 accumulators.

``quantize_v_fp8_kernel`` writes V in fp8 for the fp8 P·V: one tile of tokens of one head per
program, divided by its channel scales and stored transposed (``[D, tokens]``, the layout the
fp8 MMA reads), zero past the last token.

``fp8_quantize_rows_kernel``: the activations of an fp8 GEMM (``kernels.fp8``) in one pass, a
program per row: its absmax scale (or the given per-tensor one), the division, the e4m3 cast.

Channel (head) dims are contiguous; all other strides are arguments. Math in fp32.
"""

from __future__ import annotations

import math

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


@triton.jit
def _head_tile(x_ptr, stride_xb, stride_xl, stride_xh, L, H, BLOCK: tl.constexpr,
               D: tl.constexpr):
    """This program's tile of ``x [B, L, H, D]`` (grid: token block, ``b * H + h``) as fp32
    ``[BLOCK, D]``, zero past token ``L``; with its token indices ``[BLOCK]``."""
    bh = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x_head = x_ptr + (bh // H).to(tl.int64) * stride_xb + (bh % H).to(tl.int64) * stride_xh
    x = tl.load(x_head + rows.to(tl.int64)[:, None] * stride_xl + tl.arange(0, D)[None, :],
                mask=(rows < L)[:, None], other=0.0)
    return x.to(tl.float32), rows


@triton.jit
def quantize_int8_kernel(
    out_ptr, scale_ptr,                         # contiguous [B, L, H, D] int8, [B, H, NB] fp32
    x_ptr, stride_xb, stride_xl, stride_xh,     # [B, L, H, D], head dim contiguous
    mean_ptr,                                   # contiguous [B, H, D] fp32 (or None)
    L, H, NB, factor,
    BLOCK: tl.constexpr, D: tl.constexpr,
):
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    d = tl.arange(0, D)
    x, rows = _head_tile(x_ptr, stride_xb, stride_xl, stride_xh, L, H, BLOCK, D)
    mask = (rows < L)[:, None]
    if mean_ptr is not None:
        x = tl.where(mask, x - tl.load(mean_ptr + bh * D + d)[None, :], 0.0)
    # IEEE divisions (div_rn), so the GPU rounds exactly as the torch fallback does
    scale = tl.math.div_rn(tl.maximum(tl.max(tl.abs(x)), 1e-12), 127.0)
    y = tl.math.div_rn(x, scale)
    y += tl.where(y >= 0, 0.5, -0.5)  # round half away from zero; the cast truncates
    out = out_ptr + ((b.to(tl.int64) * L + rows[:, None]) * H + h) * D + d[None, :]
    tl.store(out, y.to(tl.int8), mask=mask)
    tl.store(scale_ptr + bh * NB + blk, scale * factor)


@triton.jit
def _round_to_e4m3(x):
    """fp32 ``x`` (``|x| <= 448``) rounded to the nearest float8_e4m3fn value (ties to even), in
    fp32. Only under the Triton interpreter, whose fp32 -> fp8 cast mis-rounds values just below
    a power of two (125.6 -> 64) and subnormals (0.0015 -> 0); GPUs cast correctly."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000  # keep 3 of 23 mantissa bits
    # below 2^-6 e4m3 steps by 2^-9, the fp32 ulp at 1.5 * 2^14: adding that rounds to the step
    magnitude = (tl.abs(x) + 24576.0) - 24576.0
    subnormal = tl.where(x < 0, -magnitude, magnitude)  # -0.0 stays signed, as the cast keeps it
    return tl.where(tl.abs(x) < 0.015625, subnormal, bits.to(tl.float32, bitcast=True))


@triton.jit
def fp8_quantize_rows_kernel(
    out_ptr, scale_ptr,        # contiguous [M, K] float8_e4m3fn, [M] fp32 (per-row scales)
    x_ptr, stride_xm,          # [M, K], K contiguous
    tensor_scale_ptr,          # [] fp32: one scale for every row, or None: each row's absmax / 448
    K, BLOCK_K: tl.constexpr, EMULATE_FP8_CAST: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    x = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
    if tensor_scale_ptr is None:
        scale = tl.math.div_rn(tl.maximum(tl.max(tl.abs(x)), 1e-12), 448.0)
        tl.store(scale_ptr + row, scale)
    else:
        scale = tl.load(tensor_scale_ptr)
    y = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -448.0), 448.0)
    y = _round_to_e4m3(y) if EMULATE_FP8_CAST else y
    tl.store(out_ptr + row * K + cols, y.to(tl.float8e4nv), mask=mask)


@triton.jit
def quantize_v_fp8_kernel(
    out_ptr,                                    # contiguous [B, H, D, LP] float8_e4m3fn
    x_ptr, stride_xb, stride_xl, stride_xh,     # [B, L, H, D], head dim contiguous
    scale_ptr,                                  # contiguous [B, H, D] fp32
    L, LP, H,
    BLOCK: tl.constexpr, D: tl.constexpr, EMULATE_FP8_CAST: tl.constexpr,
):
    bh = tl.program_id(1)
    d = tl.arange(0, D)
    x, rows = _head_tile(x_ptr, stride_xb, stride_xl, stride_xh, L, H, BLOCK, D)
    y = tl.math.div_rn(x, tl.load(scale_ptr + bh * D + d)[None, :])  # padding rows stay 0
    y = _round_to_e4m3(y) if EMULATE_FP8_CAST else y
    out = out_ptr + (bh.to(tl.int64) * D + d[:, None]) * LP + rows[None, :]
    tl.store(out, tl.trans(y.to(tl.float8e4nv)), mask=(rows < LP)[None, :])


LOG2_448 = tl.constexpr(math.log2(448.0))  # float8_e4m3fn's largest value, in base 2


@triton.jit
def _exp2_fma(x):
    """2^x for fp32 ``x <= 0`` on the FMA units: ``2^round(x)`` into the exponent bits, ``2^f``
    (``|f| <= 1/2``) by a cubic fitted for relative error (max 7.7e-5, under half an fp16 ulp);
    below 2^-126 it returns 2^-126, not 0."""
    x = tl.maximum(x, -126.0)
    t = x + 12582912.0  # 1.5·2^23: rounds x to an integer, held in t's low mantissa bits
    f = x - (t - 12582912.0)
    p = 0.05508868380751114 * f + 0.24260405145947936
    p = p * f + 0.6932762416819607
    p = p * f + 0.9999289403695112
    n = t.to(tl.int32, bitcast=True) - 0x4B400000
    return (p.to(tl.int32, bitcast=True) + (n << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _exp2_tile(x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXP2: tl.constexpr):
    """2^x of a ``[BLOCK_M, BLOCK_N]`` tile: ``"mufu"`` on the special-function units (16 per SM
    per clock on Hopper, as slow as an 8-bit tile's MMA), ``"fma"`` by :func:`_exp2_fma`,
    ``"split"`` every other column each way (FlashAttention-4's balance)."""
    if EXP2 == "fma":
        return _exp2_fma(x)
    elif EXP2 == "split":
        a, b = tl.split(tl.reshape(x, (BLOCK_M, BLOCK_N // 2, 2)))
        return tl.reshape(tl.join(tl.math.exp2(a), _exp2_fma(b)), (BLOCK_M, BLOCK_N))
    else:
        return tl.math.exp2(x)


@triton.jit
def _attend_block(acc, m_i, l_i, q, qs, k_src, k_scale_head, v_src, stride_vl, stride_vd,
                  b, h, start, Lk, d, H: tl.constexpr, D: tl.constexpr, K_BLOCK: tl.constexpr,
                  BLOCK_N: tl.constexpr, PV_FP8: tl.constexpr, EMULATE_FP8_CAST: tl.constexpr,
                  MASK: tl.constexpr, TMA: tl.constexpr, BLOCK_M: tl.constexpr,
                  EXP2: tl.constexpr, FP8_PROMOTE: tl.constexpr):
    """One key block of the online softmax: returns the updated ``(acc, m_i, l_i)``. With
    ``TMA``, ``k_src`` / ``v_src`` are tensor descriptors (the copy engine fills shared memory and
    zero-fills past the end); otherwise the head's base pointers."""
    cols = start + tl.arange(0, BLOCK_N)
    valid = cols < Lk
    if TMA:
        kt = tl.trans(k_src.load([b, start, h, 0]).reshape(BLOCK_N, D))
    elif MASK:
        kt = tl.load(k_src + cols.to(tl.int64)[None, :] * (H * D) + d[:, None],
                     mask=valid[None, :], other=0)
    else:
        kt = tl.load(k_src + cols.to(tl.int64)[None, :] * (H * D) + d[:, None])
    s = tl.dot(q, kt, out_dtype=tl.int32)
    if K_BLOCK % BLOCK_N == 0:  # the tile lies in one quantisation block: a scale per row
        c = qs * tl.load(k_scale_head + start // K_BLOCK)
        if MASK:
            s = tl.where(valid[None, :], s, -2147483647)
        # the row max on the exact int32 logits (scaling by c > 0 keeps the order), then one
        # fused multiply-add per logit: log2-scaled logit minus the running max
        m_new = tl.maximum(m_i, tl.max(s, 1).to(tl.float32) * c)
        s = s.to(tl.float32) * c[:, None]
    else:  # a scale per key
        s = s.to(tl.float32) * (qs[:, None] * tl.load(k_scale_head + cols // K_BLOCK, mask=valid,
                                                       other=0.0)[None, :])
        m_new = tl.maximum(m_i, tl.max(tl.where(valid[None, :], s, float("-inf")), 1))
    # fp8 P·V takes 448·P (e4m3's range) = 2^(s - (m - log2 448)), the sums l_i then in 448ths;
    # the subtraction fuses with the scaling above into one multiply-add per logit
    x = s - (m_new - LOG2_448 if PV_FP8 else m_new)[:, None]
    if MASK:
        x = tl.where(valid[None, :], x, float("-inf"))
    p = _exp2_tile(x, BLOCK_M, BLOCK_N, EXP2)
    if tl.max(m_new - m_i, 0) > 0:  # a row's max grew: rescale (else alpha = 1, skipped exactly)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha
        acc = acc * alpha[:, None]
    l_i += tl.sum(p, 1)
    if PV_FP8:  # V is [D, L] per head (token-contiguous), scaled to +-448 per channel
        if TMA:
            vt = v_src.load([b, h, 0, start]).reshape(D, BLOCK_N)
        else:
            vt_ptr = v_src + d[:, None] * stride_vd + cols.to(tl.int64)[None, :] * stride_vl
            if MASK:
                vt = tl.load(vt_ptr, mask=valid[None, :], other=0.0)
            else:
                vt = tl.load(vt_ptr)
        p8 = (_round_to_e4m3(p) if EMULATE_FP8_CAST else p).to(tl.float8e4nv)
        if FP8_PROMOTE:  # the tensor cores' reduced-precision fp8 sums cover one tile, then fp32
            acc = tl.dot(p8, tl.trans(vt), acc, max_num_imprecise_acc=BLOCK_N)
        else:  # their accumulator carries P·V across tiles: 2 adds per logit fewer, no spills
            acc = tl.dot(p8, tl.trans(vt), acc)
    else:
        if TMA:
            v = v_src.load([b, start, h, 0]).reshape(BLOCK_N, D)
        else:
            v_ptr = v_src + cols.to(tl.int64)[:, None] * stride_vl + d[None, :] * stride_vd
            if MASK:
                v = tl.load(v_ptr, mask=valid[:, None], other=0.0)
            else:
                v = tl.load(v_ptr)
        acc = tl.dot(p.to(tl.float16), v, acc)
    return acc, m_new, l_i


@triton.jit
def sage8_attention_kernel(
    out_ptr,                                    # contiguous [B, Lq, H, D], q's dtype
    q_ptr, q_scale_ptr,                         # contiguous [B, Lq, H, D] int8, [B, H, NQ] fp32
    k_ptr, k_scale_ptr,                         # contiguous [B, Lk, H, D] int8, [B, H, NK] fp32
    v_ptr, stride_vb, stride_vh, stride_vl, stride_vd,  # fp16 [B, Lk, H, D] / fp8 [B, H, D, Lk]
    v_scale_ptr,                                # contiguous [B, H, D] fp32 (fp8 only)
    k_desc, v_desc,                             # descriptors of k and v (TMA only, else None)
    Lq, Lk, NQ, NK,
    H: tl.constexpr, D: tl.constexpr, Q_BLOCK: tl.constexpr, K_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PV_FP8: tl.constexpr, EMULATE_FP8_CAST: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,              # Triton's warp specialisation of the key loop
    TMA: tl.constexpr,                          # k, v tiles through tensor descriptors
    EXP2: tl.constexpr,                         # "mufu", "fma" or "split": see _exp2_tile
    FP8_PROMOTE: tl.constexpr,                  # fp8 P·V summed in fp32 per tile (else by MMA)
):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, D)
    row_ok = rows < Lq
    q_offs = ((b * Lq + rows[:, None]) * H + h) * D + d[None, :]
    q = tl.load(q_ptr + q_offs, mask=row_ok[:, None], other=0)
    qs = tl.load(q_scale_ptr + bh * NQ + rows // Q_BLOCK, mask=row_ok, other=0.0)
    k_src = k_desc if TMA else k_ptr + (b * Lk * H + h) * D
    k_scale_head = k_scale_ptr + bh * NK
    v_src = v_desc if TMA else v_ptr + b * stride_vb + h.to(tl.int64) * stride_vh

    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    full = Lk - Lk % BLOCK_N
    for start in tl.range(0, full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, qs, k_src, k_scale_head, v_src,
                                      stride_vl, stride_vd, b.to(tl.int32), h, start, Lk, d, H, D,
                                      K_BLOCK, BLOCK_N, PV_FP8, EMULATE_FP8_CAST, False, TMA,
                                      BLOCK_M, EXP2, FP8_PROMOTE)
    if full < Lk:
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, qs, k_src, k_scale_head, v_src,
                                      stride_vl, stride_vd, b.to(tl.int32), h, full, Lk, d, H, D,
                                      K_BLOCK, BLOCK_N, PV_FP8, EMULATE_FP8_CAST, True, TMA,
                                      BLOCK_M, EXP2, FP8_PROMOTE)
    if PV_FP8:  # l_i counts in 448ths: V's scale alone undoes both
        acc = acc * tl.load(v_scale_ptr + bh * D + d)[None, :]
    out = tl.math.div_rn(acc, l_i[:, None])
    tl.store(out_ptr + q_offs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
