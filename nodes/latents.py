"""Between pixels and latents: the empty video latent, the image-to-video latent and VAE decoding.

Latents travel as ComfyUI ``LATENT`` dicts ``{"samples": [B, z, F_lat, H/s, W/s]}``. The
image-to-video latent also carries the start / end image conditioning under ``CONDITION_KEY``
(an :class:`ImageCondition`), which the sampler passes to the model. Images are ComfyUI ``IMAGE``
tensors ``[N, H, W, 3]`` float in [0, 1], so core nodes (LoadImage, SaveImage, CreateVideo)
connect directly.
"""

from __future__ import annotations

import contextlib

import torch

from ..wan_core.checkpoint import CheckpointError
from ..wan_core.pipelines import encode_images, latent_shape, spatial_step
from ..wan_core.presets import video_size_problems
from ..wan_core.vae import read_vae_config
from . import base, host
from .loaders import WanRTLoadVAE

CONDITION_KEY = "wanrt_image_condition"
MAX_RESOLUTION = 16384
FINEST_SPATIAL_STEP = 16  # the Wan 2.1 VAE's; the Wan 2.2 VAE needs 32

SIZE_INPUTS = {
    "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                      "tooltip": "Video width in pixels: a multiple of 16 (Wan 2.1 VAE) or 32 "
                                 "(Wan 2.2 VAE)."}),
    "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                       "tooltip": "Video height in pixels: a multiple of 16 (Wan 2.1 VAE) or 32 "
                                  "(Wan 2.2 VAE)."}),
    "length": ("INT", {"default": 81, "min": 1, "max": MAX_RESOLUTION, "step": 4,
                       "tooltip": "Number of frames, 4n + 1 (81 = 5 s at 16 fps)."}),
    "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                           "tooltip": "Videos generated at once, each from its own noise."}),
}


def validate_size(width, height, length, upstream=None) -> bool | str:
    """``VALIDATE_INPUTS`` for the size inputs: their min / max (naming them there replaces
    ComfyUI's own checks) and Wan's size rules, each input's problem under its own name. The
    spatial step is the linked VAE's when the graph names its file (``upstream``, WanRT's runner
    only), else the finest any Wan VAE allows; linked sizes arrive as None and are checked when
    the node runs."""
    problems = {}
    for name, value in (("width", width), ("height", height), ("length", length)):
        options = SIZE_INPUTS[name][1]
        if value is not None and not options["min"] <= value <= options["max"]:
            problems[name] = f"{name}={value} is outside {options['min']}..{options['max']}"
    step, vae_name = _linked_vae_step(upstream)
    rules = video_size_problems(frames=length, height=height, width=width, spatial_step=step)
    if vae_name:
        rules = {name: problem + (f" for the VAE {vae_name}" if name != "frames" else "")
                 for name, problem in rules.items()}
    for name, problem in rules.items():
        problems.setdefault("length" if name == "frames" else name, problem)
    return base.InvalidInputs(problems) if problems else True


def _linked_vae_step(upstream) -> tuple[int, str | None]:
    """(spatial step, VAE file) of the VAE linked to the node's ``vae`` input, if the graph names
    the file; else the finest step and None (a missing or bad file is its loader's error)."""
    vae_name = base.upstream_model_file(upstream, "vae", WanRTLoadVAE)
    if vae_name is None:
        return FINEST_SPATIAL_STEP, None
    try:
        return spatial_step(read_vae_config(host.current().model_path("vae", vae_name))), vae_name
    except (host.ModelNotFoundError, CheckpointError):
        return FINEST_SPATIAL_STEP, None


def to_channels_first(images: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """ComfyUI ``IMAGE`` ``[1 or batch, H, W, C]`` → ``[batch, 3, H, W]`` (alpha dropped)."""
    if images.dim() != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must be a ComfyUI IMAGE [N, H, W, 3], got {tuple(images.shape)}")
    if images.shape[0] not in (1, batch):
        raise ValueError(f"{name} holds {images.shape[0]} images; give 1 (used for every video) or "
                         f"batch_size={batch} (one per video)")
    images = images[..., :3].permute(0, 3, 1, 2).float()
    return images.expand(batch, -1, -1, -1)


class WanRTEmptyLatentVideo:
    DESCRIPTION = ("An empty latent video for text-to-video (any Wan T2V model, and Wan 2.2 TI2V "
                   "without a start image). Its shape follows the VAE: 16 channels and 8× "
                   "downscaling (Wan 2.1 VAE) or 48 channels and 16× (Wan 2.2 VAE).")
    CATEGORY = base.CATEGORY + "/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Zeros [batch, z, (length - 1) / 4 + 1, height / s, width / s].",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("WANRT_VAE", {"tooltip": "The VAE that will decode the video."}),
                             **SIZE_INPUTS}}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, length, upstream=None):
        return validate_size(width, height, length, upstream)

    def generate(self, vae, width, height, length, batch_size):
        shape = latent_shape(vae, batch=batch_size, frames=length, height=height, width=width)
        return ({"samples": torch.zeros(shape)},)


class WanRTImageToVideo:
    DESCRIPTION = ("The latent for image-to-video: encodes the start image (and the end image for "
                   "FLF2V) with the VAE, and with CLIP vision for Wan 2.1 I2V / FLF2V. What it "
                   "builds depends on the model: I2V / FLF2V get the masked image video, Wan 2.2 "
                   "TI2V gets a clean first frame (without a start image it is text-to-video).")
    CATEGORY = base.CATEGORY + "/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The empty video latent, carrying the image conditioning for the sampler.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("WANRT_MODEL", {"tooltip": "The diffusion model that will sample this "
                                                     "latent: it decides how the images are used."}),
                "vae": ("WANRT_VAE", {"tooltip": "The VAE that encodes the images and will decode "
                                                 "the video."}),
                **SIZE_INPUTS,
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "The first frame. It is scaled to cover "
                                                     "width × height and centre-cropped."}),
                "end_image": ("IMAGE", {"tooltip": "The last frame (FLF2V models only)."}),
                "clip_vision": ("WANRT_CLIP_VISION", {"tooltip": "Needed by Wan 2.1 I2V and FLF2V "
                                                                 "(clip_vision_h)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, length, upstream=None):
        return validate_size(width, height, length, upstream)

    def generate(self, model, vae, width, height, length, batch_size, start_image=None,
                 end_image=None, clip_vision=None):
        shape = latent_shape(vae, batch=batch_size, frames=length, height=height, width=width)
        start, end = (None if image is None else to_channels_first(image, name, batch_size)
                      for image, name in ((start_image, "start_image"), (end_image, "end_image")))
        residency = host.current().residency()
        with contextlib.ExitStack() as stage:
            if start is not None:
                stage.enter_context(residency.use(vae, "vae", "image encode"))
                if clip_vision is not None:
                    stage.enter_context(residency.use(clip_vision, "clip_vision", "image encode"))
            condition = encode_images(model.config, vae, clip_vision, start=start, end=end,
                                      frames=length, height=height, width=width)
        return ({"samples": torch.zeros(shape), CONDITION_KEY: condition},)


class WanRTVAEDecode:
    DESCRIPTION = ("Decode a latent video into frames. Every frame of every video in the batch "
                   "becomes one image, as ComfyUI's VAE Decode does, so core image and video "
                   "nodes can take the result.")
    CATEGORY = base.CATEGORY + "/latent"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames, IMAGE [batch · length, height, width, 3] in [0, 1].",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WANRT_VAE", {"tooltip": "The VAE the latent was made for."}),
            "latent": ("LATENT", {"tooltip": "The sampled latent video."}),
            "tiled": ("BOOLEAN", {"default": False, "tooltip": "Decode in overlapping spatial "
                                                               "tiles: much less memory at high "
                                                               "resolutions, blended seams."}),
        }}

    def decode(self, vae, latent, tiled):
        bar = host.current().progress(latent["samples"].shape[2])  # latent frames (per tile)
        with host.current().residency().use(vae, "vae", "VAE decode"):
            video = vae.decode(latent["samples"], tiled=tiled,  # [B, 3, T, H, W] in [-1, 1]
                               progress=lambda done, total: bar.update_absolute(done, total))
        images = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).flatten(0, 1)
        return (images.float().cpu(),)


NODES = {cls.__name__: cls for cls in (WanRTEmptyLatentVideo, WanRTImageToVideo, WanRTVAEDecode)}
DISPLAY_NAMES = {
    "WanRTEmptyLatentVideo": "WanRT Empty Latent Video",
    "WanRTImageToVideo": "WanRT Image To Video",
    "WanRTVAEDecode": "WanRT VAE Decode",
}
