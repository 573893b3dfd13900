"""Model loaders: a file from one of the host's model folders → a loaded WanRT model.

Each loader lists the files of its ComfyUI folder (``diffusion_models``, ``text_encoders``,
``vae``, ``clip_vision``), checks in ``VALIDATE_INPUTS`` that the chosen file exists (the error
names the folders searched), and caches nothing itself: the runner and ComfyUI cache node outputs,
so an unchanged loader is not run again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import wan_core
from ..wan_core.attention import BACKENDS
from ..wan_core.block_swap import enable_block_swap
from . import base, host

# weight_dtype choice -> (dtype, keep_fp8, fp8 GEMMs); None = the platform's default (bf16,
# else fp16).
WEIGHT_DTYPES = {
    "default": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "fp16": (torch.float16, False, False),
    "fp32": (torch.float32, False, False),
    "fp8_e4m3fn": (None, True, False),
    "fp8_e4m3fn_fast": (None, True, True),
}


class WanRTLoadDiffusionModel:
    DESCRIPTION = ("Load a Wan 2.1 / 2.2 diffusion model (DiT) from models/diffusion_models. The "
                   "variant (T2V, I2V, FLF2V, TI2V, an A14B expert) is detected from the file.")
    CATEGORY = base.CATEGORY + "/loaders"
    RETURN_TYPES = ("WANRT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion model, attention projections fused; it comes to the "
                       "compute device when it samples.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": base.model_file_input(
                "diffusion_models", "The DiT file, e.g. wan2.1_t2v_1.3B_fp16.safetensors (ComfyUI "
                                    "single files, official and diffusers layouts, fp8 included)."),
            "weight_dtype": (list(WEIGHT_DTYPES), {
                "default": "default",
                "tooltip": "Weight and compute dtype. default: bf16 (fp16 where the device has no "
                           "bf16); fp32: exact, twice the memory of bf16. fp8_e4m3fn: an fp8 "
                           "file's weights stay fp8 in memory and are "
                           "dequantised per matmul (half the memory); other files load as "
                           "default. fp8_e4m3fn_fast: the same, and the transformer blocks "
                           "multiply in fp8 (activations rounded to fp8 per token, ~1% more "
                           "error; a 14B forward 8-12% faster on an H200) on GPUs that can "
                           "(compute capability 8.9+: Ada, Hopper)."}),
            "attention": (sorted(BACKENDS), {
                "default": "auto",
                "tooltip": "Attention implementation. auto: cuDNN attention on Hopper GPUs, else "
                           "sdpa; sdpa: PyTorch's fused attention (picks flash / cuDNN / "
                           "memory-efficient itself); sdpa-*: held to that one kernel; sage8: 8-bit "
                           "attention (faster, slightly lossy; sage8-fp8 / sage8-fp16 force the "
                           "P·V type); math: the plain reference."}),
        }, "optional": {
            "blocks_to_swap": ("INT", {
                "default": 0, "min": 0, "max": 40,
                "tooltip": "Block swap: keep this many of the last transformer blocks in CPU "
                           "memory and stream each to the GPU just before it runs (14B: 40 "
                           "blocks of ~0.65 GiB in bf16, ~0.33 GiB in fp8). 0: all on the GPU. "
                           "More blocks, less GPU memory; the copies overlap the compute (on an "
                           "H100 a 14B step took as long with all 40 swapped)."}),
            "prefetch": ("INT", {
                "default": 1, "min": 0, "max": 8,
                "tooltip": "Block swap: blocks copied ahead of the one running, overlapping the "
                           "copy with compute (each costs one block of GPU memory)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return base.validate_model_file("diffusion_models", model_name)

    def load(self, model_name, weight_dtype, attention, blocks_to_swap=0, prefetch=1):
        h = host.current()
        residency = h.residency()
        dtype, keep_fp8, fp8_matmul = WEIGHT_DTYPES[weight_dtype]
        # Loaded to the offload device: the sampler brings it to the GPU when it runs (and an
        # A14B pair never needs both experts there at once).
        model = wan_core.load_dit(h.model_path("diffusion_models", model_name), dtype=dtype,
                                  device=residency.offload_device, keep_fp8=keep_fp8,
                                  attention_backend=attention)
        model.fuse_projections()  # q/k/v (and cross-attention k/v) as one GEMM each
        if fp8_matmul:
            model.use_fp8_matmul("row")
        if blocks_to_swap:
            enable_block_swap(model, blocks_to_swap, device=residency.compute_device("dit"),
                              prefetch=prefetch)
        return (residency.register(model, "dit", model_name),)


class _ModelFileLoader:
    """A loader whose one input picks a file of ``FOLDER``; ``LOADER`` (a ``wan_core.load_*``)
    loads it for the host's compute device. Subclasses state the folder, the input and the
    outputs; their ``VALIDATE_INPUTS`` and ``load`` name the input: ComfyUI passes inputs by name,
    and a ``**kwargs`` ``VALIDATE_INPUTS`` would switch off its built-in checks of every input."""

    CATEGORY = base.CATEGORY + "/loaders"
    FUNCTION = "load"
    FOLDER: str
    INPUT_NAME: str
    INPUT_TOOLTIP: str
    LOADER: Callable  # wan_core.load_*(path, dtype=..., device=...)
    ROLE: str  # its role for the residency policy (wan_core.residency.ROLES)
    ACCELERATOR_DTYPE: torch.dtype | None = None  # its dtype on a GPU (None: the loader's)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {cls.INPUT_NAME: base.model_file_input(cls.FOLDER, cls.INPUT_TOOLTIP)}}

    @classmethod
    def validate_file(cls, filename: str) -> bool | str:
        return base.validate_model_file(cls.FOLDER, filename)

    def load_file(self, filename: str) -> tuple:
        """Loaded in the dtype (and layout) of its compute device straight into the offload
        (CPU) memory it waits in between its stages: a GPU smaller than the model never holds
        more of it than its stage needs. (A model the policy keeps on the GPU loads there.)"""
        h = host.current()
        residency = h.residency()
        compute = residency.compute_device(self.ROLE)
        on_gpu = compute.type != "cpu"
        model = self.LOADER(h.model_path(self.FOLDER, filename),
                            dtype=self.ACCELERATOR_DTYPE if on_gpu else None,
                            device=compute if residency.keeps_idle(self.ROLE)
                            else residency.offload_device)
        return (residency.register(self.for_device(model, compute), self.ROLE, filename),)

    @staticmethod
    def for_device(model, device: torch.device):
        """``model`` laid out for computing on ``device`` (default: as loaded)."""
        return model


class WanRTLoadTextEncoder(_ModelFileLoader):
    DESCRIPTION = ("Load the UMT5-XXL text encoder Wan uses (models/text_encoders), with the "
                   "tokenizer embedded in ComfyUI's files.")
    FOLDER, INPUT_NAME = "text_encoders", "text_encoder_name"
    INPUT_TOOLTIP = "The UMT5-XXL file, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors."
    RETURN_TYPES = ("WANRT_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder (bf16 on accelerators, fp32 on CPU).",)
    LOADER = staticmethod(wan_core.load_text_encoder)
    ROLE = "text_encoder"
    ACCELERATOR_DTYPE = torch.bfloat16

    @classmethod
    def VALIDATE_INPUTS(cls, text_encoder_name):
        return cls.validate_file(text_encoder_name)

    def load(self, text_encoder_name):
        return self.load_file(text_encoder_name)


class WanRTLoadVAE(_ModelFileLoader):
    DESCRIPTION = ("Load a Wan video VAE (models/vae): wan_2.1_vae for every Wan 2.1 model and the "
                   "Wan 2.2 A14B models, wan2.2_vae for Wan 2.2 TI2V 5B.")
    FOLDER, INPUT_NAME = "vae", "vae_name"
    INPUT_TOOLTIP = "The VAE file, e.g. wan_2.1_vae.safetensors."
    RETURN_TYPES = ("WANRT_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE, in the file's dtype; on the compute device while it runs.",)
    LOADER = staticmethod(wan_core.load_vae)
    ROLE = "vae"

    @staticmethod
    def for_device(model, device):
        return model.laid_out_for(device)

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return cls.validate_file(vae_name)

    def load(self, vae_name):
        return self.load_file(vae_name)


class WanRTLoadCLIPVision(_ModelFileLoader):
    DESCRIPTION = ("Load the CLIP vision encoder (ViT-H, models/clip_vision) that Wan 2.1 I2V and "
                   "FLF2V read the start / end images with.")
    FOLDER, INPUT_NAME = "clip_vision", "clip_vision_name"
    INPUT_TOOLTIP = "The CLIP vision file, e.g. clip_vision_h.safetensors."
    RETURN_TYPES = ("WANRT_CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("The CLIP vision encoder (fp16 on accelerators, fp32 on CPU).",)
    LOADER = staticmethod(wan_core.load_clip_vision)
    ROLE = "clip_vision"
    ACCELERATOR_DTYPE = torch.float16

    @classmethod
    def VALIDATE_INPUTS(cls, clip_vision_name):
        return cls.validate_file(clip_vision_name)

    def load(self, clip_vision_name):
        return self.load_file(clip_vision_name)


NODES = {cls.__name__: cls for cls in (WanRTLoadDiffusionModel, WanRTLoadTextEncoder,
                                       WanRTLoadVAE, WanRTLoadCLIPVision)}
DISPLAY_NAMES = {
    "WanRTLoadDiffusionModel": "WanRT Load Diffusion Model",
    "WanRTLoadTextEncoder": "WanRT Load Text Encoder",
    "WanRTLoadVAE": "WanRT Load VAE",
    "WanRTLoadCLIPVision": "WanRT Load CLIP Vision",
}
