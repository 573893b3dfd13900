"""Spatial tiling of the Wan VAE: tile layout, blend weights, and tiled == untiled where the
network is spatially local.

With random weights every output pixel depends on the whole frame (the mid-block attention is
global, and the receptive field of the stacked 3×3 convs spans a tiny frame), so tiles cannot
match an untiled run there. A VAE whose convs keep only their centre spatial tap and whose
attention output is zero (the official initialisation of ``proj``) is spatially local yet keeps
all the temporal causal machinery; for it tiled and untiled results must agree to float32
rounding (bound 1e-5), which checks tile placement, cropping and blending exactly.
"""

from __future__ import annotations

import pytest
import torch

from wanrt.wan_core.tiny.vae import TINY_VAE21, TINY_VAE22, random_state_dict
from wanrt.wan_core.vae import WanVAE
from wanrt.wan_core.vae.tiling import blend_weights, tile_spans

TOL = dict(atol=1e-5, rtol=1e-5)


def test_tile_spans_cover_evenly_with_overlap():
    assert tile_spans(40, 48, 8) == [(0, 40)]                       # fits: one tile
    assert tile_spans(60, 48, 8) == [(0, 34), (26, 60)]              # 480 px at /8
    assert tile_spans(104, 48, 8) == [(0, 40), (32, 72), (64, 104)]  # 832 px at /8
    for length, tile, overlap in [(90, 48, 8), (160, 48, 8), (7, 3, 1), (100, 10, 5)]:
        spans = tile_spans(length, tile, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(b - a <= tile for a, b in spans)
        assert all(prev[1] - nxt[0] >= overlap for prev, nxt in zip(spans, spans[1:]))


def test_blend_weights_ramp_linearly_and_sum_to_one():
    spans = tile_spans(10, 6, 2)                                      # [(0, 6), (4, 10)]
    first, second = blend_weights(spans, scale=2)                     # overlap: pixels 8..11
    assert torch.equal(first[:8], torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(first[8:], torch.tensor([7, 5, 3, 1], dtype=torch.float64) / 8)
    total = torch.zeros(20, dtype=torch.float64)
    for (a, b), w in zip(spans, (first, second)):
        total[2 * a:2 * b] += w
    torch.testing.assert_close(total, torch.ones(20, dtype=torch.float64))


def local_vae(config) -> WanVAE:
    """Random VAE made spatially local: 3×3 spatial taps → centre only, attention output 0."""
    sd = random_state_dict(config, seed=0)
    for name, t in sd.items():
        if t.dim() >= 4 and t.shape[-1] == 3:
            centre = torch.zeros_like(t)
            centre[..., 1, 1] = t[..., 1, 1]
            sd[name] = centre
        elif ".proj." in name:
            sd[name] = torch.zeros_like(t)
    vae = WanVAE(config).eval()
    vae.load_state_dict(sd)
    return vae


# 2 × 3 tiles: 2.1 latent grid 4×6 in tiles of 3, 2.2 grid 3×4 in tiles of 2; overlap 1 latent
@pytest.mark.parametrize("config, size, tile", [(TINY_VAE21, (32, 48), 3), (TINY_VAE22, (48, 64), 2)])
def test_tiled_equals_untiled_for_a_local_vae(config, size, tile):
    vae = local_vae(config)
    s = vae.spatial_compression
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 5, *size, generator=g) * 2 - 1
    tiles = dict(tiled=True, tile_size=tile * s, tile_overlap=s)
    latents = vae.encode(x)
    torch.testing.assert_close(vae.encode(x, **tiles), latents, **TOL)
    torch.testing.assert_close(vae.decode(latents, **tiles), vae.decode(latents), **TOL)


def test_one_tile_is_the_untiled_path():
    vae = local_vae(TINY_VAE21)
    latents = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.decode(latents, tiled=True, tile_size=128), vae.decode(latents))


@pytest.mark.parametrize("tiled, total", [(False, 2), (True, 12)])
def test_decode_reports_progress_per_latent_frame_and_tile(tiled, total):
    """2 latent frames; tiled: a 4×6 latent grid in tiles of 3 with overlap 1 is 2 × 3 tiles, each
    decoding both frames."""
    vae = local_vae(TINY_VAE21)
    latents = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    seen = []
    vae.decode(latents, tiled=tiled, tile_size=24, tile_overlap=8, progress=lambda *p: seen.append(p))
    assert seen == [(done, total) for done in range(1, total + 1)]
