"""fp8 GEMMs: ``y = x · (w · s_w)ᵀ`` with ``w`` fp8 e4m3 and ``x`` quantised to e4m3 on the fly,
run by ``torch._scaled_mm`` where the platform has it (:func:`fp8_matmul_supported`).

Activations are quantised per row (one scale per token, ``amax / 448``) or per tensor; the
weight scale is per tensor or per output row. ``torch._scaled_mm(a, b, scale_a, scale_b)``
computes ``(a · scale_a) @ (b · scale_b)`` with fp32 accumulation, rounded to ``out_dtype``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .ops import _resolve

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
GRANULARITIES = ("row", "tensor")


def quantise(x: torch.Tensor, granularity: str, *,
             impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(x_fp8, scale)``, ``x ≈ x_fp8 · scale``; the scale fp32 ``[M, 1]``
    (per row) or ``[]`` (per tensor), ``amax / 448`` so the largest value maps to e4m3's max.

    ``impl`` "triton": one fused pass per row (:func:`triton_ops.quantize_fp8_rows`; per tensor
    after one min/max pass), bit-identical to "torch", which in eager mode runs six passes with
    fp32 temporaries. ``None``: Triton in eager mode where the platform runs it, torch while
    ``torch.compile`` traces (Inductor fuses it into the op that produces ``x``)."""
    if _resolve("torch" if impl is None and torch.compiler.is_compiling() else impl,
                x) == "triton":
        from . import triton_ops
        if granularity == "row":
            return triton_ops.quantize_fp8_rows(x)
        lo, hi = torch.aminmax(x)
        scale = torch.maximum(-lo, hi).float().clamp(min=1e-12) / E4M3_MAX
        return triton_ops.quantize_fp8_rows(x, scale)
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True) if granularity == "row" else x.abs().amax()
    scale = amax.clamp(min=1e-12) / E4M3_MAX
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor | None,
               bias: torch.Tensor | None = None, granularity: str = "row", *,
               scaled_mm: Callable = torch._scaled_mm) -> torch.Tensor:
    """``x [..., K]`` (bf16 / fp16 / fp32), ``weight [N, K]`` e4m3 with ``weight_scale`` ``[]``,
    ``[N]`` or ``[N, 1]`` (None: 1) -> ``[..., N]`` in ``x``'s dtype. ``granularity`` of the
    activation scales; "tensor" needs a per-tensor weight scale too (else rows are used).
    ``scaled_mm``: ``torch._scaled_mm`` or a function with its semantics (tests)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    n, k = weight.shape
    scale_w = (torch.ones((), device=weight.device) if weight_scale is None
               else weight_scale.float().reshape(-1))
    if scale_w.numel() > 1:
        granularity = "row"
    x2d = x.reshape(-1, k)
    x_fp8, scale_x = quantise(x2d, granularity)
    scale_w = scale_w.expand(n).reshape(1, n) if granularity == "row" else scale_w.reshape(())
    out = scaled_mm(x_fp8, weight.t(), scale_a=scale_x, scale_b=scale_w, out_dtype=x.dtype)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], n)
