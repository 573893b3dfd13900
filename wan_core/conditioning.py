"""Image conditioning: start / end images into the latents the DiT consumes.

Resize policy for start and end images: scale (bicubic, antialiased) so the image covers the
target ``width × height`` with its aspect ratio kept, then centre-crop to exactly that size (as
ComfyUI's image-to-video nodes do with ``crop="center"``). Any size and aspect is accepted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def check_images(name: str, images: torch.Tensor) -> None:
    """Images are ``[B, 3, H, W]`` floats in ``[0, 1]``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be an image batch [B, 3, H, W], got {shape}")
    if images.shape[0] == 0 or min(images.shape[-2:]) < 2:
        raise ValueError(f"{name} is empty: shape {tuple(images.shape)}")


def fit_image(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cover-resize then centre-crop ``[B, 3, H, W]`` to ``[B, 3, height, width]``."""
    h, w = images.shape[-2:]
    s = max(height / h, width / w)
    rh, rw = max(height, math.ceil(h * s - 1e-6)), max(width, math.ceil(w * s - 1e-6))
    if (rh, rw) != (h, w):
        images = F.interpolate(images.float(), size=(rh, rw), mode="bicubic", align_corners=False,
                               antialias=True).clamp(0, 1)
    top, left = (rh - height) // 2, (rw - width) // 2
    return images[..., top:top + height, left:left + width]


def first_last_mask(latent_frames: int, frames: int, height: int, width: int, *,
                    last: bool = False) -> torch.Tensor:
    """Wan's I2V mask ``[4, F_lat, height, width]`` (latent grid): channel ``c`` of latent frame
    ``j`` marks pixel frame ``4j + c - 3`` as given. Frame 0 is given; with ``last`` also the final
    frame (FLF2V)."""
    given = torch.zeros(frames, height, width)
    given[0] = 1
    if last:
        given[-1] = 1
    given = torch.cat([given[:1].expand(3, -1, -1), given])  # frame 0 fills all 4 slots of j=0
    return given.view(latent_frames, 4, height, width).transpose(0, 1)


@torch.no_grad()
def image_to_video_condition(vae, start: torch.Tensor, *, frames: int, height: int, width: int,
                             end: torch.Tensor | None = None) -> torch.Tensor:
    """``y [B, 4 + z, F_lat, H/s, W/s]`` for Wan 2.1 I2V / FLF2V and Wan 2.2 I2V-A14B.

    The pixel video is the start image, grey (0 in [-1, 1]) frames, and the end image if given;
    it is VAE-encoded and prefixed with the given-frame mask.
    """
    check_images("start image", start)
    b = start.shape[0]
    video = torch.zeros(b, 3, frames, height, width)
    video[:, :, 0] = fit_image(start, height, width) * 2 - 1
    if end is not None:
        check_images("end image", end)
        video[:, :, -1] = fit_image(end, height, width) * 2 - 1
    latent = vae.encode(video)
    f_lat, h_lat, w_lat = latent.shape[-3:]
    mask = first_last_mask(f_lat, frames, h_lat, w_lat, last=end is not None)
    mask = mask.to(latent.device, latent.dtype)[None].expand(b, -1, -1, -1, -1)
    return torch.cat([mask, latent], dim=1)


@torch.no_grad()
def first_frame_latent(vae, start: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """Wan 2.2 TI2V: the start image's clean latent ``[B, z, 1, H/s, W/s]``."""
    check_images("start image", start)
    frame = fit_image(start, height, width) * 2 - 1
    return vae.encode(frame[:, :, None])


def clip_image(start: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
    """Images for the CLIP encoder, ``[B or 2B, 3, H, W]`` in [0, 1] (FLF2V: start then end)."""
    check_images("start image", start)
    if end is None:
        return start
    check_images("end image", end)
    return torch.stack([start, fit_image(end, *start.shape[-2:])], dim=1).flatten(0, 1)
