"""Host side of the Triton kernels: launchers, registered as torch custom ops ``wanrt::*``.

Only this module and ``triton_kernels`` import triton (``ops`` imports this one lazily, so
machines without triton run the torch fallbacks). Semantics are exactly those of ``torch_ops``:
fp32 math, outputs in x's dtype (the residual's dtype for the residual). Inputs need only a
contiguous channel dim (copied where they lack one); other strides go to the kernels.

Custom ops (opaque to Dynamo, with fake impls for shapes) let ``torch.compile(fullgraph=True)``
trace models that use them without a graph break.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import triton
from torch import Tensor

from . import torch_ops
from .triton_kernels import (fp8_quantize_rows_kernel, quantize_int8_kernel,
                             quantize_v_fp8_kernel, rotary_kernel, row_kernel,
                             sage8_attention_kernel)

# triton reads the same variable when it decorates the kernels.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _num_warps(block: int, warp_size: int = 64 if torch.version.hip else 32) -> int:
    """~8 elements (a 16-byte bf16 vector) per thread for a tile of ``block`` elements, 1-16 warps."""
    return max(1, min(16, block // (8 * warp_size)))


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
        row_kernel[(seq, b)](
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
        rotary_kernel[(seq, b, triton.cdiv(h, block_h))](
            out, x, x.stride(0), x.stride(1), x.stride(2),
            cos, sin, stride_cb, cos.stride(-2), seq, h, d // 2,
            BLOCK_H=block_h, BLOCK_D2=block_d2, num_warps=_num_warps(2 * block_h * block_d2))
    return out


@_rotary_embedding_op.register_fake
def _(x, cos, sin):
    return x.new_empty(x.shape)


# ---------------------------------------------------------------------------------------------
# 8-bit attention

def attention_tiles(head_dim: int, device: torch.device) -> dict[str, int | bool | str]:
    """The attention kernel's tiles and code options for ``device``: see :func:`tiles_for`."""
    major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0
    return tiles_for(head_dim, major)


def tiles_for(head_dim: int, major: int) -> dict[str, int | bool | str]:
    """The attention kernel's tiles and code options (``block_m``, ``block_n``, ``num_warps``,
    ``num_stages``, ``warp_specialize``, ``tma``, ``exp2``, ``fp8_promote``) for GPUs of compute
    capability ``major`` (0: none); ``bench/attention.py --sweep`` times the alternatives (see
    :func:`sage8_attention` for the one that changes rounding)."""
    options = dict(warp_specialize=False, tma=False, exp2="mufu", fp8_promote=True)
    if major >= 9 and head_dim <= 64:  # Hopper and newer
        return dict(block_m=128, block_n=128, num_warps=8, num_stages=3, **options)
    if major >= 9:  # head dim 128 swept on an H100: 4 warps, 4 stages beat 8 warps, 3 stages by
        # 11% (fp8 P·V) and 5% (fp16); see BENCHMARKS.md, 8-bit attention
        return dict(block_m=128, block_n=64, num_warps=4, num_stages=4, **options)
    return dict(block_m=128, block_n=64, num_warps=4 if head_dim <= 64 else 8, num_stages=2,
                **options)


def quantize_int8_blocks(x: Tensor, block: int, *, mean: Tensor | None = None,
                         factor: float = 1.0) -> tuple[Tensor, Tensor]:
    """``torch_ops.quantize_int8_blocks`` in one fused pass (mean subtraction, scale, rounding)."""
    b, seq, h, d = x.shape
    x = _channels_contiguous(x)
    nb = triton.cdiv(seq, block)
    out = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    scale = torch.empty((b, h, nb), dtype=torch.float32, device=x.device)
    if x.numel():
        with _device_of(x):
            quantize_int8_kernel[(nb, b * h)](
                out, scale, x, x.stride(0), x.stride(1), x.stride(2),
                None if mean is None else mean.contiguous(), seq, h, nb, float(factor),
                BLOCK=block, D=d, num_warps=max(1, min(8, block * d // 1024)))
    return out, scale


def quantize_v_fp8(v: Tensor, *, pad_to: int = 1) -> tuple[Tensor, Tensor]:
    """``torch_ops.quantize_v_fp8`` in two passes: the channels' absmax (one min/max
    reduction), then one kernel that scales, casts and transposes."""
    b, seq, h, d = v.shape
    v = _channels_contiguous(v)
    lo, hi = torch.aminmax(v, dim=1)
    scale = (torch.maximum(-lo, hi).float().clamp_min(1e-12) / torch_ops.FP8_MAX).contiguous()
    padded = seq + -seq % pad_to
    out = torch.empty((b, h, d, padded), dtype=torch.float8_e4m3fn, device=v.device)
    block = 64
    if out.numel():
        with _device_of(v):
            quantize_v_fp8_kernel[(triton.cdiv(padded, block), b * h)](
                out, v, v.stride(0), v.stride(1), v.stride(2), scale, seq, padded, h,
                BLOCK=block, D=d, EMULATE_FP8_CAST=_INTERPRET, num_warps=4)
    return out, scale


def quantize_fp8_rows(x: Tensor, tensor_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``kernels.fp8.quantise`` in one pass: ``x [M, K]`` -> (``[M, K]`` float8_e4m3fn, the fp32
    scale ``[M, 1]``), each row's absmax / 448; or every row by ``tensor_scale`` (fp32 ``[]``,
    returned as the scale)."""
    _check_device(x)
    m, k = x.shape
    x = _channels_contiguous(x)
    out = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = (torch.empty((m, 1), dtype=torch.float32, device=x.device) if tensor_scale is None
             else tensor_scale)
    if x.numel():
        block = triton.next_power_of_2(k)
        with _device_of(x):
            fp8_quantize_rows_kernel[(m,)](out, scale, x, x.stride(0), tensor_scale, k,
                                           BLOCK_K=block, EMULATE_FP8_CAST=_INTERPRET,
                                           num_warps=_num_warps(block))
    return out, scale


def sage8_attention(q: Tensor, k: Tensor, v: Tensor, *, pv: str = "fp16", q_block: int = 128,
                    k_block: int = 64, **tiles) -> Tensor:
    """``torch_ops.sage8_attention`` with the fused quantisation and attention kernels; ``tiles``
    override :func:`attention_tiles` (they change speed, not the result's semantics, except
    ``fp8_promote=False``: on GPUs the tensor cores' reduced-precision fp8 accumulator then
    carries P·V across key tiles instead of one tile at a time; the interpreter sums exactly)."""
    _check_device(q)
    b, lq, h, d = q.shape
    lk = k.shape[1]
    defaults = attention_tiles(d, q.device)
    if unknown := set(tiles) - set(defaults):
        raise TypeError(f"sage8_attention: unknown tile options {sorted(unknown)}; "
                        f"valid: {sorted(defaults)}")
    t = {**defaults, **tiles}
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0 or lk == 0:
        return out.zero_()
    q8, qs = quantize_int8_blocks(q, q_block, factor=d ** -0.5 * torch_ops.LOG2E)
    k8, ks = quantize_int8_blocks(k, k_block, mean=k.mean(dim=1, dtype=torch.float32))
    if pv == "fp8":
        vq, vs = quantize_v_fp8(v, pad_to=128)  # [B, H, D, Lk padded]
        v_strides = (vq.stride(0), vq.stride(1), 1, vq.stride(2))
    else:
        vq, vs = _channels_contiguous(v.to(torch.float16)), None  # [B, Lk, H, D]
        v_strides = (vq.stride(0), vq.stride(2), vq.stride(1), 1)
    k_desc = v_desc = None
    if t["tma"]:  # Hopper's copy engine: [1, BLOCK_N, 1, D] tiles (fp8 v: [1, 1, D, BLOCK_N])
        from triton.tools.tensor_descriptor import TensorDescriptor  # Triton >= 3.3

        k_desc = TensorDescriptor.from_tensor(k8, [1, t["block_n"], 1, d])
        vq = vq.contiguous()
        v_desc = TensorDescriptor.from_tensor(
            vq, [1, 1, d, t["block_n"]] if pv == "fp8" else [1, t["block_n"], 1, d])
    with _device_of(q):
        sage8_attention_kernel[(triton.cdiv(lq, t["block_m"]), b * h)](
            out, q8, qs, k8, ks, vq, *v_strides, vs, k_desc, v_desc, lq, lk, qs.shape[-1],
            ks.shape[-1], H=h, D=d, Q_BLOCK=q_block, K_BLOCK=k_block, BLOCK_M=t["block_m"],
            BLOCK_N=t["block_n"], PV_FP8=pv == "fp8", EMULATE_FP8_CAST=_INTERPRET, TMA=t["tma"],
            EXP2=t["exp2"], FP8_PROMOTE=t["fp8_promote"], WARP_SPECIALIZE=t["warp_specialize"],
            num_warps=t["num_warps"], num_stages=t["num_stages"])
    return out


@torch.library.custom_op("wanrt::sage8_attention", mutates_args=())
def _sage8_attention_op(q: Tensor, k: Tensor, v: Tensor, pv: str, q_block: int,
                        k_block: int) -> Tensor:
    return sage8_attention(q, k, v, pv=pv, q_block=q_block, k_block=k_block)


@_sage8_attention_op.register_fake
def _(q, k, v, pv, q_block, k_block):
    return q.new_empty(q.shape)


def sage8_attention_op(q, k, v, *, pv="fp16", q_block=128, k_block=64):
    """:func:`sage8_attention` as the custom op ``wanrt::sage8_attention`` (opaque to Dynamo)."""
    _check_device(q)
    return _sage8_attention_op(q, k, v, pv, q_block, k_block)


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
