"""Spatial tiling: run the VAE on overlapping tiles and blend them with linear ramps.

Tiles are laid out on the latent grid (so every tile is a whole number of latent pixels) and
spread evenly: ``n`` equal tiles of at most ``tile`` with at least ``overlap`` shared between
neighbours. Each output pixel is a weighted mean of the tiles covering it; the weights ramp
linearly across overlaps and sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal spans ``[start, stop)`` of at most ``tile`` covering ``[0, length)``, evenly spread,
    consecutive spans sharing at least ``overlap``."""
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    starts = [i * (length - size) // (n - 1) for i in range(n)]
    return [(start, start + size) for start in starts]


def blend_weights(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per span, 1-D float64 weights over ``span × scale`` output pixels: 1 inside, linear ramps
    across the parts shared with the neighbours; at every pixel the weights sum to 1."""
    bounds = [(a * scale, b * scale) for a, b in spans]
    ramps = []
    for i, (a, b) in enumerate(bounds):
        pos = torch.arange(a, b, dtype=torch.float64) + 0.5
        w = torch.ones(b - a, dtype=torch.float64)
        if i > 0:                       # rises across [a, end of the previous span)
            w = torch.minimum(w, (pos - a) / (bounds[i - 1][1] - a))
        if i + 1 < len(bounds):         # falls across [start of the next span, b)
            w = torch.minimum(w, (b - pos) / (b - bounds[i + 1][0]))
        ramps.append(w)
    total = torch.zeros(bounds[-1][1], dtype=torch.float64)
    for (a, b), w in zip(bounds, ramps):
        total[a:b] += w
    return [w / total[a:b] for (a, b), w in zip(bounds, ramps)]


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, scale_in: int,
                scale_out: int, tile: int, overlap: int) -> torch.Tensor:
    """``fn`` over overlapping spatial tiles of ``x [B, C, T, H, W]``, blended (float32).

    ``tile`` and ``overlap`` are in latent-grid units; a grid span ``[a, b)`` is
    ``[a·scale_in, b·scale_in)`` in ``x`` and ``[a·scale_out, b·scale_out)`` in ``fn``'s output.
    """
    grid_h, grid_w = x.shape[3] // scale_in, x.shape[4] // scale_in
    rows, cols = tile_spans(grid_h, tile, overlap), tile_spans(grid_w, tile, overlap)
    row_weights, col_weights = blend_weights(rows, scale_out), blend_weights(cols, scale_out)
    out = None
    for (y0, y1), wy in zip(rows, row_weights):
        for (x0, x1), wx in zip(cols, col_weights):
            y = fn(x[..., y0 * scale_in:y1 * scale_in, x0 * scale_in:x1 * scale_in])
            if out is None:
                out = y.new_zeros((*y.shape[:3], grid_h * scale_out, grid_w * scale_out),
                                  dtype=torch.float32)
            weight = (wy[:, None] * wx[None, :]).to(device=y.device, dtype=torch.float32)
            out[..., y0 * scale_out:y1 * scale_out, x0 * scale_out:x1 * scale_out].addcmul_(y, weight)
    return out
