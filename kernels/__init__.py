"""Platform detection, the fused elementwise kernels of the Wan DiT and its 8-bit attention
(Triton + torch fallback)."""

from .ops import (default_impl, fp8_dot_supported, gated_residual, gated_residual_norm_modulate,
                  norm_modulate, rms_norm, rotary_embedding, sage8_attention)
from .platforms import (PLATFORMS, Platform, current_platform, float64_supported,
                        fp8_matmul_supported, triton_usable)
from .rope import rope_axis_dims, wan_rope_cos_sin

__all__ = [
    "PLATFORMS", "Platform", "current_platform", "float64_supported", "fp8_matmul_supported",
    "triton_usable",
    "default_impl", "norm_modulate", "gated_residual_norm_modulate", "gated_residual",
    "rms_norm", "rotary_embedding", "sage8_attention", "fp8_dot_supported",
    "rope_axis_dims", "wan_rope_cos_sin",
]
