"""Wan's 3-D rotary embedding as a dispatching layer."""

from __future__ import annotations

from ... import kernels
from .custom_op import CustomOp


class RotaryEmbedding(CustomOp):
    """Rotate q or k ``[B, L, H, D]`` by the angles of a ``wan_rope_cos_sin`` table ``[L, D/2]``."""

    def forward_native(self, x, cos, sin):
        return kernels.rotary_embedding(x, cos, sin, impl="torch")

    def forward_fused(self, x, cos, sin):
        return kernels.rotary_embedding(x, cos, sin, impl="triton")
