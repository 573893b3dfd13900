"""Triton kernels of the fused ops, registered as torch custom ops ``wanrt::*``.

The only module that imports triton (``ops`` imports it lazily). Semantics are exactly those of
``torch_ops``: fp32 math, outputs in x's dtype (the residual's dtype for the residual).

All row ops share one kernel: a program owns one token row ``[C]`` (grid ``(L, B)``), loads it
once into registers, optionally adds the gated update to the residual, then optionally
normalises (LayerNorm or RMSNorm), applies the affine parameters and the modulation, and writes
once. Memory-bound, so a single pass over the bytes is the whole design. Only the channel dim
must be contiguous; other strides are passed to the kernel. A modulation row for token ``(b, l)``
lives at ``t + b*stride_b + (l // group)*stride_m``: ``[B,1,C]`` has stride_m 0, ``[B,L,C]`` group 1,
``[B,F,1,C]`` group ``L/F``.

Custom ops (opaque to Dynamo, with fake impls for shapes) let ``torch.compile(fullgraph=True)``
trace models that use them without a graph break.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from torch import Tensor

# triton reads the same variable when it decorates the kernels below.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _load_row(ptr, b, r, stride_b, stride_r, cols, mask):
    """fp32 row ``[BLOCK_C]`` at ``ptr + b*stride_b + r*stride_r`` (channel dim contiguous)."""
    base = ptr + b.to(tl.int64) * stride_b + r.to(tl.int64) * stride_r
    return tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row_kernel(
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
def _rotary_kernel(
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
    # a [BLOCK_H, BLOCK_D2, 2] tile of the interleaved pairs (x[2j], x[2j+1])
    in_head = 2 * j[None, :, None] + tl.arange(0, 2)[None, None, :]
    mask = (heads < H)[:, None, None] & (j < D2)[None, :, None]

    table = b.to(tl.int64) * stride_cb + l.to(tl.int64) * stride_cl + j
    c = tl.load(cos_ptr + table, mask=j < D2, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + table, mask=j < D2, other=0.0).to(tl.float32)[None, :]
    x_row = x_ptr + b.to(tl.int64) * stride_xb + l.to(tl.int64) * stride_xl
    x = tl.load(x_row + heads[:, None, None] * stride_xh + in_head, mask=mask,
                other=0.0).to(tl.float32)
    x_re, x_im = tl.split(x)
    out = tl.join(x_re * c - x_im * s, x_re * s + x_im * c)
    out_row = out_ptr + (b.to(tl.int64) * L + l) * H * (2 * D2)
    tl.store(out_row + heads[:, None, None] * (2 * D2) + in_head,
             out.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers

def _num_warps(block: int) -> int:
    """~8 elements (a 16-byte bf16 vector) per thread for a tile of ``block`` elements, 1-16 warps."""
    return max(1, min(16, block // 256))


def _channels_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _modulation_args(t: Tensor | None, seq: int) -> tuple:
    """``(tensor, stride_b, stride_m, group)``: token ``(b, l)`` uses row ``l // group``."""
    if t is None:
        return None, 0, 0, 1
    t = _channels_contiguous(t)
    if t.dim() == 4:  # [B, F, 1, C]
        return t, t.stride(0), t.stride(1), seq // t.shape[1]
    return t, t.stride(0), (t.stride(1) if t.shape[1] > 1 else 0), 1


def _device_of(t: Tensor):
    """Make ``t``'s GPU the current one (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check_device(x: Tensor) -> None:
    if x.device.type == "cpu" and not _INTERPRET:
        raise ValueError("impl='triton' needs GPU tensors (or TRITON_INTERPRET=1 to run the "
                         "Triton interpreter on CPU); use impl='torch' for CPU tensors")


def _launch_rows(out, res_out, x, residual, gate, shift, scale, weight, bias, eps, norm) -> None:
    b, seq, c = x.shape
    if x.numel() == 0:
        return
    x, residual, weight, bias = (None if t is None else _channels_contiguous(t)
                                 for t in (x, residual, weight, bias))
    block = triton.next_power_of_2(c)
    with _device_of(x):
        _row_kernel[(seq, b)](
            out, res_out,
            x, x.stride(0), x.stride(1),
            residual, *((residual.stride(0), residual.stride(1)) if residual is not None else (0, 0)),
            *_modulation_args(gate, seq), *_modulation_args(shift, seq),
            *_modulation_args(scale, seq),
            weight, bias, seq, c, eps,
            NORM=norm, BLOCK_C=block, num_warps=_num_warps(block))


# ---------------------------------------------------------------------------------------------
# Custom ops (real impl launches the kernel; fake impl gives shapes/dtypes to the compiler)

@torch.library.custom_op("wanrt::norm_modulate", mutates_args=())
def _norm_modulate_op(x: Tensor, shift: Optional[Tensor], scale: Optional[Tensor],
                      weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch_rows(out, None, x, None, None, shift, scale, weight, bias, eps, "layer")
    return out


@_norm_modulate_op.register_fake
def _(x, shift, scale, weight, bias, eps):
    return x.new_empty(x.shape)


@torch.library.custom_op("wanrt::gated_residual_norm_modulate", mutates_args=())
def _gated_residual_norm_modulate_op(
        residual: Tensor, x: Tensor, gate: Optional[Tensor], shift: Optional[Tensor],
        scale: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
        eps: float) -> tuple[Tensor, Tensor]:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    new_residual = torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
    _launch_rows(out, new_residual, x, residual, gate, shift, scale, weight, bias, eps, "layer")
    return out, new_residual


@_gated_residual_norm_modulate_op.register_fake
def _(residual, x, gate, shift, scale, weight, bias, eps):
    return x.new_empty(x.shape), residual.new_empty(residual.shape)


@torch.library.custom_op("wanrt::gated_residual", mutates_args=())
def _gated_residual_op(residual: Tensor, x: Tensor, gate: Optional[Tensor]) -> Tensor:
    new_residual = torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
    _launch_rows(None, new_residual, x, residual, gate, None, None, None, None, 0.0, "none")
    return new_residual


@_gated_residual_op.register_fake
def _(residual, x, gate):
    return residual.new_empty(residual.shape)


@torch.library.custom_op("wanrt::rms_norm", mutates_args=())
def _rms_norm_op(x: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch_rows(out, None, x, None, None, None, None, weight, None, eps, "rms")
    return out


@_rms_norm_op.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape)


@torch.library.custom_op("wanrt::rotary_embedding", mutates_args=())
def _rotary_embedding_op(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    b, seq, h, d = x.shape
    if x.numel() == 0:
        return out
    x, cos, sin = _channels_contiguous(x), _channels_contiguous(cos), _channels_contiguous(sin)
    if cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    stride_cb = cos.stride(0) if cos.dim() == 3 else 0
    block_h = min(16, h & -h)  # largest power of two dividing H (no idle heads), at most 16
    block_d2 = triton.next_power_of_2(d // 2)
    with _device_of(x):
        _rotary_kernel[(seq, b, triton.cdiv(h, block_h))](
            out, x, x.stride(0), x.stride(1), x.stride(2),
            cos, sin, stride_cb, cos.stride(-2), seq, h, d // 2,
            BLOCK_H=block_h, BLOCK_D2=block_d2, num_warps=_num_warps(2 * block_h * block_d2))
    return out


@_rotary_embedding_op.register_fake
def _(x, cos, sin):
    return x.new_empty(x.shape)


# ---------------------------------------------------------------------------------------------
# Public functions, mirroring torch_ops (arguments are checked in ops)

def norm_modulate(x, shift, scale, *, eps=1e-6, weight=None, bias=None):
    _check_device(x)
    return _norm_modulate_op(x, shift, scale, weight, bias, float(eps))


def gated_residual_norm_modulate(residual, x, gate, shift, scale, *, eps=1e-6, weight=None,
                                 bias=None):
    _check_device(x)
    return _gated_residual_norm_modulate_op(residual, x, gate, shift, scale, weight, bias,
                                            float(eps))


def gated_residual(residual, x, gate):
    _check_device(x)
    return _gated_residual_op(residual, x, gate)


def rms_norm(x, weight, *, eps=1e-6):
    _check_device(x)
    return _rms_norm_op(x, weight, float(eps))


def rotary_embedding(x, cos, sin):
    _check_device(x)
    return _rotary_embedding_op(x, cos, sin)
