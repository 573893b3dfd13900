"""ComfyUI's loaders (UNETLoader, CLIPLoader, VAELoader, CLIPVisionLoader, LoraLoaderModelOnly)
on WanRT's ``wan_core`` loaders. Their file combos list the host's model folders; only Wan files
(and ``type="wan"``) can be loaded, which validation says before any work."""

from __future__ import annotations

import torch

from ... import wan_core
from .. import base, host
from .model import CoreModel

# ComfyUI 0.33's CLIPLoader types; WanRT loads the "wan" one (UMT5-XXL).
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart",
              "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image",
              "hunyuan_image", "flux2", "ovis", "longcat_image", "cogvideox", "lens", "pixeldit",
              "ideogram4", "boogu", "krea2", "joyimage", "mage", "minimax"]
UNET_WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]


def _files(folder: str) -> tuple[list[str], dict]:
    return host.current().model_files(folder), {}


class UNETLoader:
    DESCRIPTION = ("Load a Wan 2.1 / 2.2 diffusion model (models/diffusion_models) with WanRT's DiT. "
                   "fp8 weight dtypes keep fp8 files in fp8 (dequantised per matmul).")
    CATEGORY = "model/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": _files("diffusion_models"),
                             "weight_dtype": (UNET_WEIGHT_DTYPES, {"advanced": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, unet_name):
        return base.validate_model_file("diffusion_models", unet_name)

    def load_unet(self, unet_name, weight_dtype):
        h = host.current()
        device = h.device()
        # As ComfyUI: fp32 on the CPU; projections stay unfused so LoRA keys find their weights.
        dit = wan_core.load_dit(h.model_path("diffusion_models", unet_name), device=device,
                                dtype=torch.float32 if torch.device(device).type == "cpu" else None,
                                keep_fp8=weight_dtype != "default")
        return (CoreModel(dit),)


class CLIPLoader:
    DESCRIPTION = "Load the UMT5-XXL text encoder Wan uses (type wan) from models/text_encoders."
    CATEGORY = "model/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": _files("text_encoders"), "type": (CLIP_TYPES,)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, clip_name, type):
        if type is not None and type != "wan":
            return f"type={type!r}: WanRT runs the Wan text encoder only (type 'wan')"
        return base.validate_model_file("text_encoders", clip_name)

    def load_clip(self, clip_name, type="wan", device="default"):
        h = host.current()
        target = "cpu" if device == "cpu" else h.device()
        return (wan_core.load_text_encoder(h.model_path("text_encoders", clip_name), device=target),)


class VAELoader:
    DESCRIPTION = "Load a Wan video VAE (models/vae): wan_2.1_vae or wan2.2_vae."
    CATEGORY = "model/loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (host.current().model_files("vae") + ["pixel_space"],)}}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        if vae_name == "pixel_space":
            return "vae_name 'pixel_space' has no Wan VAE; pick a Wan VAE file"
        return base.validate_model_file("vae", vae_name)

    def load_vae(self, vae_name):
        h = host.current()
        return (wan_core.load_vae(h.model_path("vae", vae_name), device=h.device()),)


class CLIPVisionLoader:
    DESCRIPTION = "Load the CLIP vision encoder Wan 2.1 I2V / FLF2V use (models/clip_vision)."
    CATEGORY = "model/loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": _files("clip_vision")}}

    @classmethod
    def VALIDATE_INPUTS(cls, clip_name):
        return base.validate_model_file("clip_vision", clip_name)

    def load_clip(self, clip_name):
        h = host.current()
        return (wan_core.load_clip_vision(h.model_path("clip_vision", clip_name), device=h.device()),)


class LoraLoaderModelOnly:
    DESCRIPTION = "Apply a LoRA (models/loras) to the diffusion model, merged into a new model."
    CATEGORY = "model/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "lora_name": _files("loras"),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0,
                                                          "step": 0.01})}}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return base.validate_model_file("loras", lora_name)

    def load_lora_model_only(self, model, lora_name, strength_model):
        if strength_model == 0:
            return (model,)
        from ...wan_core.lora import apply_lora  # lands with the LoRA work

        path = host.current().model_path("loras", lora_name)
        return (model.with_dit(apply_lora(model.dit, path, strength_model)),)


NODES = {cls.__name__: cls for cls in (UNETLoader, CLIPLoader, VAELoader, CLIPVisionLoader,
                                       LoraLoaderModelOnly)}
DISPLAY_NAMES = {"UNETLoader": "Load Diffusion Model", "CLIPLoader": "Load CLIP",
                 "VAELoader": "Load VAE", "CLIPVisionLoader": "Load CLIP Vision",
                 "LoraLoaderModelOnly": "Load LoRA"}
