"""Normalisation and adaLN-modulation layers of the Wan block, built on ``kernels``."""

from __future__ import annotations

import torch
from torch import nn

from ... import kernels
from .custom_op import CustomOp


class NormModulate(CustomOp):
    """``LN(x) * (1 + scale) + shift``; x ``[B, L, C]``; shift/scale ``[B,1,C]``, ``[B,F,1,C]``,
    ``[B,L,C]`` or None. Affine LN parameters only when ``affine=True``."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward_native(self, x, shift=None, scale=None):
        return kernels.norm_modulate(x, shift, scale, eps=self.eps, weight=self.weight,
                                     bias=self.bias, impl="torch")

    def forward_fused(self, x, shift=None, scale=None):
        return kernels.norm_modulate(x, shift, scale, eps=self.eps, weight=self.weight,
                                     bias=self.bias, impl="triton")


class GatedResidualNormModulate(NormModulate):
    """``r = residual + gate * x``; returns ``(LN(r) * (1 + scale) + shift, r)``."""

    def forward_native(self, residual, x, gate=None, shift=None, scale=None):
        return kernels.gated_residual_norm_modulate(residual, x, gate, shift, scale, eps=self.eps,
                                                    weight=self.weight, bias=self.bias,
                                                    impl="torch")

    def forward_fused(self, residual, x, gate=None, shift=None, scale=None):
        return kernels.gated_residual_norm_modulate(residual, x, gate, shift, scale, eps=self.eps,
                                                    weight=self.weight, bias=self.bias,
                                                    impl="triton")


class GatedResidual(CustomOp):
    """``residual + gate * x`` (the seed's MulAdd)."""

    def forward_native(self, residual, x, gate=None):
        return kernels.gated_residual(residual, x, gate, impl="torch")

    def forward_fused(self, residual, x, gate=None):
        return kernels.gated_residual(residual, x, gate, impl="triton")


class RMSNorm(CustomOp):
    """RMSNorm over the last dim with a learned weight ``[C]`` (Wan's q/k norm across heads)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward_native(self, x):
        return kernels.rms_norm(x, self.weight, eps=self.eps, impl="torch")

    def forward_fused(self, x):
        return kernels.rms_norm(x, self.weight, eps=self.eps, impl="triton")
