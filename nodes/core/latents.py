"""Latents in ComfyUI's Wan format: EmptyHunyuanLatentVideo, Wan22ImageToVideoLatent, VAEDecode."""

from __future__ import annotations

import torch

from .model import process_in, process_out
from .pixels import encode_video, resize_center

MAX_RESOLUTION = 16384


def SIZE(default: int, step: int = 16) -> tuple:  # noqa: N802 (an input spec, like ComfyUI's)
    return ("INT", {"default": default, "min": step, "max": MAX_RESOLUTION, "step": step})


def LENGTH(default: int) -> tuple:  # noqa: N802
    return ("INT", {"default": default, "min": 1, "max": MAX_RESOLUTION, "step": 4})


BATCH = ("INT", {"default": 1, "min": 1, "max": 4096})


def validate_size(width, height, multiple: int = 16) -> bool | str:
    """``VALIDATE_INPUTS`` of the latent nodes: ComfyUI's range (naming the inputs replaces its
    own check) and what a Wan DiT takes, ``multiple`` = VAE downscale × the 2×2 patch (16; 32 for
    the Wan 2.2 VAE). ComfyUI would pad other sizes; WanRT rejects them before any work.
    Linked values arrive as None and are checked by the sampler."""
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if not multiple <= value <= MAX_RESOLUTION:
            return f"{name}={value} is outside {multiple}..{MAX_RESOLUTION}"
        if value % multiple:
            return (f"{name}={value}: a Wan model needs a multiple of {multiple} (the VAE's "
                    f"{multiple // 2}x downscale times the DiT's 2x2 patches)")
    return True


class EmptyHunyuanLatentVideo:
    DESCRIPTION = "An empty video latent, 16 channels, 8× smaller, (length − 1) / 4 + 1 frames."
    CATEGORY = "model/latent/hunyuan video"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": SIZE(848), "height": SIZE(480), "length": LENGTH(25), "batch_size": BATCH}}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return validate_size(width, height)

    def execute(self, width, height, length, batch_size):
        latent = torch.zeros([batch_size, 16, (length - 1) // 4 + 1, height // 8, width // 8])
        return ({"samples": latent, "downscale_ratio_spacial": 8},)


class Wan22ImageToVideoLatent:
    DESCRIPTION = "Wan 2.2 TI2V latent (48 channels, 16× smaller); a start image is kept clean."
    CATEGORY = "model/conditioning/wan"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("VAE",), "width": SIZE(1280, 32), "height": SIZE(704, 32),
                             "length": LENGTH(49), "batch_size": BATCH},
                "optional": {"start_image": ("IMAGE",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return validate_size(width, height, 32)

    def execute(self, vae, width, height, length, batch_size, start_image=None):
        latent = torch.zeros([1, 48, (length - 1) // 4 + 1, height // 16, width // 16])
        if start_image is None:
            return ({"samples": latent},)
        mask = torch.ones([1, 1, latent.shape[2], latent.shape[-2], latent.shape[-1]])
        encoded = encode_video(vae, resize_center(start_image[:length], width, height))
        latent[:, :, :encoded.shape[-3]] = encoded
        mask[:, :, :encoded.shape[-3]] = 0.0
        latent = process_out(latent) * mask + latent * (1.0 - mask)
        repeat = (batch_size,) + (1,) * (latent.ndim - 1)
        return ({"samples": latent.repeat(repeat), "noise_mask": mask.repeat(repeat)},)


class VAEDecode:
    DESCRIPTION = "Decodes latent images back into pixel space images."
    CATEGORY = "model/latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    def decode(self, vae, samples):
        video = vae.decode(process_in(samples["samples"].float()))  # [B, 3, T, H, W] in [-1, 1]
        images = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).flatten(0, 1)
        return (images.cpu(),)


NODES = {cls.__name__: cls for cls in (EmptyHunyuanLatentVideo, Wan22ImageToVideoLatent, VAEDecode)}
DISPLAY_NAMES = {"EmptyHunyuanLatentVideo": "Empty HunyuanVideo 1.0 Latent", "VAEDecode": "VAE Decode"}
