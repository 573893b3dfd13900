"""Text and image conditioning as ComfyUI builds it for Wan: CLIPTextEncode, CLIPVisionEncode,
WanImageToVideo and WanFirstLastFrameToVideo (``comfy_extras/nodes_wan.py`` semantics: the image
video padded with 0.5 grey, VAE-encoded raw, and a per-latent-frame mask; 0 = given)."""

from __future__ import annotations

import dataclasses

import torch

from ...wan_core.conditioning import fit_image
from .latents import BATCH, LENGTH, SIZE, validate_size
from .pixels import encode_video, resize_center


@dataclasses.dataclass(frozen=True)
class ClipVisionOutput:
    """``CLIP_VISION_OUTPUT``: the CLIP tokens Wan reads, ``[B, 257, 1280]``."""

    penultimate_hidden_states: torch.Tensor


def set_values(conditioning: list, values: dict) -> list:
    """A copy of ``conditioning`` with ``values`` added to every entry's extras."""
    return [[context, {**extras, **values}] for context, extras in conditioning]


class CLIPTextEncode:
    DESCRIPTION = "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images."
    CATEGORY = "model/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "clip": ("CLIP",)}}

    def encode(self, clip, text):
        return ([[clip.encode([text]).float().cpu(), {}]],)


class CLIPVisionEncode:
    DESCRIPTION = "Encode an image with CLIP vision (crop none: stretch to 224², center: crop first)."
    CATEGORY = "model/conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",),
                             "crop": (["center", "none"],)}}

    def encode(self, clip_vision, image, crop):
        images = image[..., :3].movedim(-1, 1).float()
        if crop == "center":
            side = min(images.shape[-2:])
            images = fit_image(images, side, side)
        return (ClipVisionOutput(clip_vision.encode(images).float().cpu()),)


def _empty_latent(vae, width, height, length, batch_size) -> torch.Tensor:
    s = vae.spatial_compression
    return torch.zeros([batch_size, vae.z_dim, (length - 1) // 4 + 1, height // s, width // s])


class _WanToVideo:
    """What ComfyUI's Wan image-to-video nodes share: conditioning, VAE and size in; the
    conditioning with the image extras and an empty latent out. ``OPTIONAL`` lists the extras."""

    CATEGORY = "model/conditioning/wan"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "execute"
    OPTIONAL: dict

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                             "width": SIZE(832), "height": SIZE(480), "length": LENGTH(81), "batch_size": BATCH},
                "optional": dict(cls.OPTIONAL)}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return validate_size(width, height)


class WanImageToVideo(_WanToVideo):
    DESCRIPTION = "Image-to-video conditioning: the start image video (grey after it) and its mask."
    OPTIONAL = {"clip_vision_output": ("CLIP_VISION_OUTPUT",), "start_image": ("IMAGE",)}

    def execute(self, positive, negative, vae, width, height, length, batch_size, start_image=None,
                clip_vision_output=None):
        latent = torch.zeros([batch_size, 16, (length - 1) // 4 + 1, height // 8, width // 8])
        values = {}
        if start_image is not None:
            start = resize_center(start_image[:length], width, height)
            video = torch.full((length, height, width, start.shape[-1]), 0.5)
            video[:start.shape[0]] = start
            mask = torch.ones((1, 1, latent.shape[2], latent.shape[-2], latent.shape[-1]))
            mask[:, :, :(start.shape[0] - 1) // 4 + 1] = 0.0
            values.update(concat_latent_image=encode_video(vae, video), concat_mask=mask)
        if clip_vision_output is not None:
            values["clip_vision_output"] = clip_vision_output
        return set_values(positive, values), set_values(negative, values), {"samples": latent}


class WanFirstLastFrameToVideo(_WanToVideo):
    DESCRIPTION = "First-last-frame conditioning: start and end images, grey between, and their mask."
    OPTIONAL = {"clip_vision_start_image": ("CLIP_VISION_OUTPUT",), "clip_vision_end_image": ("CLIP_VISION_OUTPUT",),
                "start_image": ("IMAGE",), "end_image": ("IMAGE",)}

    def execute(self, positive, negative, vae, width, height, length, batch_size, start_image=None,
                end_image=None, clip_vision_start_image=None, clip_vision_end_image=None):
        latent = _empty_latent(vae, width, height, length, batch_size)
        video = torch.ones((length, height, width, 3)) * 0.5
        mask = torch.ones((1, 1, latent.shape[2] * 4, latent.shape[-2], latent.shape[-1]))
        if start_image is not None:
            start = resize_center(start_image[:length], width, height)
            video[:start.shape[0]] = start[..., :3]
            mask[:, :, :start.shape[0] + 3] = 0.0
        if end_image is not None:
            end = resize_center(end_image[-length:], width, height)
            video[-end.shape[0]:] = end[..., :3]
            mask[:, :, -end.shape[0]:] = 0.0
        mask = mask.view(1, mask.shape[2] // 4, 4, mask.shape[3], mask.shape[4]).transpose(1, 2)
        values = {"concat_latent_image": encode_video(vae, video), "concat_mask": mask}
        clips = [c.penultimate_hidden_states for c in (clip_vision_start_image, clip_vision_end_image)
                 if c is not None]
        if clips:
            values["clip_vision_output"] = ClipVisionOutput(torch.cat(clips, dim=-2))
        return set_values(positive, values), set_values(negative, values), {"samples": latent}


NODES = {cls.__name__: cls for cls in (CLIPTextEncode, CLIPVisionEncode, WanImageToVideo,
                                       WanFirstLastFrameToVideo)}
DISPLAY_NAMES = {"CLIPTextEncode": "CLIP Text Encode (Prompt)", "CLIPVisionEncode": "CLIP Vision Encode"}
