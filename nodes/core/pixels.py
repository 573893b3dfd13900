"""Pixels to ComfyUI's Wan latents: images resized as ComfyUI's ``common_upscale(..., "bilinear",
"center")`` and VAE-encoded into raw (un-normalised) latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import process_out


def resize_center(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``IMAGE [N, H, W, C]`` → ``[N, height, width, C]``: bilinear cover-resize, centre crop
    (ComfyUI's ``common_upscale(..., "bilinear", "center")``)."""
    x = images.movedim(-1, 1)
    h, w = x.shape[-2:]
    old_aspect, new_aspect = w / h, width / height
    top = left = 0
    if old_aspect > new_aspect:
        left = round((w - w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        top = round((h - h * (old_aspect / new_aspect)) / 2)
    x = x[..., top:h - top, left:w - left]
    return F.interpolate(x, size=(height, width), mode="bilinear").movedim(1, -1)


def encode_video(vae, images: torch.Tensor) -> torch.Tensor:
    """``IMAGE [T, H, W, 3]`` in [0, 1] → the raw latent ``[1, z, T', H/s, W/s]``."""
    video = images[..., :3].movedim(-1, 0)[None].to(torch.float32) * 2 - 1  # [1, 3, T, H, W]
    return process_out(vae.encode(video).float().cpu())
