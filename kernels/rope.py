"""Wan's 3-D rotary position table.

Head dim ``D`` is split into per-axis sizes ``(D - 4*(D//6), 2*(D//6), 2*(D//6))`` for (t, h, w):
44/42/42 at D = 128. Each axis has its own frequency ladder ``pos * theta^(-2j / d_axis)``; a token
at grid position ``(f, h, w)`` gets the concatenation of the three axes' angles (``D/2`` angles).
"""

from __future__ import annotations

import torch

from .platforms import float64_supported


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real (not complex) dims of the t/h/w axes for a head dim."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(positions: int, dim: int, theta: float, device) -> torch.Tensor:
    """``[positions, dim/2]`` angles in float64 (float32 where the device lacks float64)."""
    dtype = torch.float64 if float64_supported(device) else torch.float32
    j = torch.arange(0, dim, 2, dtype=dtype, device=device)
    inv = 1.0 / theta ** (j / dim)
    return torch.outer(torch.arange(positions, dtype=dtype, device=device), inv)


def wan_rope_cos_sin(grid: tuple[int, int, int], head_dim: int, *, theta: float = 10000.0,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Cos / sin tables ``[F*H*W, head_dim/2]`` (fp32) for a ``(F, H, W)`` token grid in
    row-major ``(f, h, w)`` order."""
    device = torch.device(device)
    f, h, w = grid
    dt, dh, dw = rope_axis_dims(head_dim)
    angles = torch.cat([
        _axis_angles(f, dt, theta, device)[:, None, None, :].expand(f, h, w, dt // 2),
        _axis_angles(h, dh, theta, device)[None, :, None, :].expand(f, h, w, dh // 2),
        _axis_angles(w, dw, theta, device)[None, None, :, :].expand(f, h, w, dw // 2),
    ], dim=-1).reshape(f * h * w, head_dim // 2)
    return angles.cos().float(), angles.sin().float()
