"""Platform detection and the fused elementwise kernels of the Wan DiT (Triton + torch fallback)."""

from .ops import (default_impl, fused_kernels_enabled, gated_residual,
                  gated_residual_norm_modulate, norm_modulate, rms_norm, rotary_embedding,
                  set_fused_kernels)
from .platforms import (PLATFORMS, Platform, current_platform, float64_supported,
                        fp8_matmul_supported, triton_usable)
from .rope import rope_axis_dims, wan_rope_cos_sin

__all__ = [
    "PLATFORMS", "Platform", "current_platform", "float64_supported", "fp8_matmul_supported",
    "triton_usable",
    "default_impl", "fused_kernels_enabled", "set_fused_kernels", "norm_modulate",
    "gated_residual_norm_modulate", "gated_residual", "rms_norm", "rotary_embedding",
    "rope_axis_dims", "wan_rope_cos_sin",
]
