"""Public kernel functions: argument checks, then the Triton kernel or the torch fallback.

``impl="triton"`` / ``"torch"`` forces a path; ``None`` lets the platform choose: Triton where it
is usable and the tensors are on the platform's device (under ``torch.compile`` the choice is fixed
when tracing). The model's layers always pass ``impl`` explicitly: their choice (fused kernels on
or off) is ``wan_core.runtime.RuntimeOptions``'.
"""

from __future__ import annotations

import torch

from . import torch_ops
from .platforms import current_platform, triton_usable

def default_impl() -> str:
    """The implementation ``impl=None`` resolves to on the current platform."""
    return "triton" if triton_usable(current_platform()) else "torch"


@torch.compiler.assume_constant_result  # resolved once while tracing: no graph break
def _default_impl_for(device_type: str) -> str:
    """``default_impl()`` for tensors on the platform's device, else the torch fallback."""
    return default_impl() if device_type == current_platform().device_type else "torch"


def _resolve(impl: str | None, x: torch.Tensor) -> str:
    if impl is None:
        return _default_impl_for(x.device.type)
    if impl not in ("triton", "torch"):
        raise ValueError(f"impl must be 'triton', 'torch' or None, got {impl!r}")
    return impl


def _triton():
    from . import triton_ops  # lazy: triton is optional
    return triton_ops


# ---------------------------------------------------------------------------------------------
# Argument checks: a clear ValueError instead of a silent broadcast or a Triton crash.

def _check_x(name: str, x: torch.Tensor, ndim: int = 3) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def _check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    _check_x(name, t, ref.dim())
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def _check_modulation(name: str, t: torch.Tensor | None, x: torch.Tensor) -> None:
    """Accept ``[B, 1, C]``, ``[B, F, 1, C]`` (F divides L) or ``[B, L, C]``."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    b, seq, c = x.shape
    s = tuple(t.shape)
    ok = (len(s) == 3 and s[0] == b and s[1] in (1, seq) and s[2] == c) or (
        len(s) == 4 and s[0] == b and s[2] == 1 and s[3] == c and s[1] > 0 and seq % s[1] == 0)
    if not ok:
        raise ValueError(f"{name} has shape {s}; for x of shape {(b, seq, c)} it must be "
                         f"[{b}, 1, {c}], [{b}, F, 1, {c}] with F dividing {seq}, or [{b}, {seq}, {c}]")


def _check_affine(weight, bias, x) -> None:
    c = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (not isinstance(t, torch.Tensor) or not t.is_floating_point()
                              or t.shape != (c,) or t.device != x.device):
            raise ValueError(f"{name} must be a floating-point ({c},) tensor on {x.device}, "
                             f"got {_describe(t)}")


def _describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"{t.dtype} of shape {tuple(t.shape)} on {t.device}"


# ---------------------------------------------------------------------------------------------

def norm_modulate(x, shift, scale, *, eps=1e-6, weight=None, bias=None, impl=None):
    """``LN(x) * (1 + scale) + shift``; x ``[B, L, C]``; LN affine only if weight/bias given."""
    _check_x("x", x)
    _check_modulation("shift", shift, x)
    _check_modulation("scale", scale, x)
    _check_affine(weight, bias, x)
    if _resolve(impl, x) == "triton":
        return _triton().norm_modulate(x, shift, scale, eps=eps, weight=weight, bias=bias)
    return torch_ops.norm_modulate(x, shift, scale, eps=eps, weight=weight, bias=bias)


def gated_residual_norm_modulate(residual, x, gate, shift, scale, *, eps=1e-6, weight=None,
                                 bias=None, impl=None):
    """``(out, new_residual)``: ``new_residual = residual + gate * x``,
    ``out = norm_modulate(new_residual, shift, scale)``. gate/shift/scale may be None."""
    _check_x("residual", residual)
    _check_same("x", x, "residual", residual)
    for name, t in (("gate", gate), ("shift", shift), ("scale", scale)):
        _check_modulation(name, t, residual)
    _check_affine(weight, bias, residual)
    if _resolve(impl, x) == "triton":
        return _triton().gated_residual_norm_modulate(residual, x, gate, shift, scale, eps=eps,
                                                      weight=weight, bias=bias)
    return torch_ops.gated_residual_norm_modulate(residual, x, gate, shift, scale, eps=eps,
                                                  weight=weight, bias=bias)


def gated_residual(residual, x, gate, *, impl=None):
    """``residual + gate * x``; gate may be None (plain residual add)."""
    _check_x("residual", residual)
    _check_same("x", x, "residual", residual)
    _check_modulation("gate", gate, residual)
    if _resolve(impl, x) == "triton":
        return _triton().gated_residual(residual, x, gate)
    return torch_ops.gated_residual(residual, x, gate)


def rms_norm(x, weight, *, eps=1e-6, impl=None):
    """RMSNorm over the last dim of ``x: [B, L, C]`` (Wan's q/k norm across all heads)."""
    _check_x("x", x)
    _check_affine(weight, None, x)
    if _resolve(impl, x) == "triton":
        return _triton().rms_norm(x, weight, eps=eps)
    return torch_ops.rms_norm(x, weight, eps=eps)


def rotary_embedding(x, cos, sin, *, impl=None):
    """Interleaved-pair rotary embedding of ``x: [B, L, H, D]`` with ``cos, sin: [L, D/2]``
    or ``[B, L, D/2]`` (fp32), computed in fp32."""
    _check_x("x", x, ndim=4)
    b, seq, _, d = x.shape
    if d % 2:
        raise ValueError(f"x head dim must be even, got shape {tuple(x.shape)}")
    for name, t in (("cos", cos), ("sin", sin)):
        if (not isinstance(t, torch.Tensor) or not t.is_floating_point()
                or tuple(t.shape) not in ((seq, d // 2), (b, seq, d // 2)) or t.device != x.device):
            raise ValueError(f"{name} must be a floating-point [{seq}, {d // 2}] or "
                             f"[{b}, {seq}, {d // 2}] tensor on {x.device} for x of shape "
                             f"{tuple(x.shape)}, got {_describe(t)}")
    if sin.shape != cos.shape:
        raise ValueError(f"sin has shape {tuple(sin.shape)} but cos has {tuple(cos.shape)}")
    if _resolve(impl, x) == "triton":
        return _triton().rotary_embedding(x, cos, sin)
    return torch_ops.rotary_embedding(x, cos, sin)


@torch.compiler.assume_constant_result  # resolved once while tracing: no graph break
def fp8_dot_supported(device_type: str) -> bool:
    """Tensor-core float8_e4m3fn dots on the current device of ``device_type``: NVIDIA compute
    capability 8.9 (Ada) and newer."""
    return (device_type == "cuda" and torch.version.cuda is not None
            and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9))


def sage8_attention(q, k, v, *, pv=None, q_block=128, k_block=64, impl=None):
    """8-bit attention ``softmax(q k^T / sqrt(D)) v``: ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]``
    (fp16 / bf16 / fp32, head dim D 64 or 128) -> ``[B, Lq, H, D]`` in q's dtype.

    INT8 Q·Kᵀ per ``q_block`` / ``k_block`` tokens with K mean-smoothing; ``pv``: ``"fp8"`` or
    ``"fp16"`` P·V, None for fp8 where the GPU has fp8 dots (sm89+) and fp16 elsewhere. Semantics:
    ``torch_ops.sage8_attention``."""
    _check_x("q", q, ndim=4)
    _check_x("k", k, ndim=4)
    _check_same("v", v, "k", k)
    b, _, h, d = q.shape
    if k.shape[0] != b or k.shape[2:] != q.shape[2:] or k.device != q.device:
        raise ValueError(f"k has shape {tuple(k.shape)} on {k.device}; for q of shape "
                         f"{tuple(q.shape)} on {q.device} it must be [{b}, Lk, {h}, {d}] there")
    if d not in (64, 128):
        raise ValueError(f"sage8 attention takes head dims 64 and 128, got {d}")
    for name, block in (("q_block", q_block), ("k_block", k_block)):
        if block not in (16, 32, 64, 128, 256):
            raise ValueError(f"{name} must be a power of two from 16 to 256, got {block}")
    pv = pv or ("fp8" if fp8_dot_supported(q.device.type) else "fp16")
    if pv not in ("fp8", "fp16"):
        raise ValueError(f"pv must be 'fp8', 'fp16' or None, got {pv!r}")
    impl = _resolve(impl, q)
    if impl == "triton" and pv == "fp8" and q.is_cuda and not fp8_dot_supported("cuda"):
        raise ValueError("pv='fp8' needs fp8 tensor-core dots (NVIDIA sm89+); use pv='fp16'")
    if impl == "triton":
        return _triton().sage8_attention_op(q, k, v, pv=pv, q_block=q_block, k_block=k_block)
    return torch_ops.sage8_attention(q, k, v, pv=pv, q_block=q_block, k_block=k_block)
