"""The WanRT Accelerate node: ComfyUI's own Wan MODEL on WanRT's kernels, attention and compile.

Inside ComfyUI the input is ComfyUI's ``ModelPatcher`` (from ``UNETLoader`` /
``LoraLoaderModelOnly``); the ComfyUI-specific part lives in ``comfy_wan.py`` and is imported only
when such a model arrives. In ``wanrt run`` / ``wanrt serve`` the core nodes' MODEL is a
``nodes.core.CoreModel``, accelerated by ``nodes.core.accelerate``. Any other model type is a
TypeError naming the node and input.
"""

from __future__ import annotations

from ..wan_core.runtime import AttentionOptions
from . import base
from .compilation import DENSE_EXCLUSIONS

COMPILE_MODES = ("off", "blocks", "full")
ATTENTION = {"auto": "auto", "sdpa": "sdpa", "cudnn": "sdpa-cudnn", "flash": "sdpa-flash",
             "efficient": "sdpa-efficient", "sage8": "sage8", "sage8-fp16": "sage8-fp16",
             "sage8-fp8": "sage8-fp8"}  # node choice -> wan_core.attention backend


def is_comfy_model_patcher(model) -> bool:
    """Duck-typed: ComfyUI's ``ModelPatcher`` (clone, object patches, model objects by name)."""
    return all(callable(getattr(model, name, None))
               for name in ("clone", "add_object_patch", "get_model_object"))


class WanRTAccelerate:
    DESCRIPTION = (
        "Run ComfyUI's own Wan 2.1 / 2.2 model (from Load Diffusion Model, after any LoRA) "
        "through WanRT: fused norm + modulation, gated residual, RMSNorm and RoPE kernels, WanRT's "
        "attention backend choice and compile modes. ComfyUI's LoRA and weight patches, model "
        "sampling (shift), wrappers and memory management keep working; the output equals "
        "ComfyUI's own within bf16 rounding. Per platform: CUDA / ROCm run the Triton kernels "
        "and torch.compile; MUSA runs the torch kernels under torch.compile; Ascend NPU runs "
        "them eager (no compile); XPU, MPS and CPU run the torch path (compiled where torch "
        "supports it). Compiling happens on the first sampling step.")
    CATEGORY = base.CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The same model (a clone sharing its weights) running WanRT's fast path.",)
    FUNCTION = "accelerate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "ComfyUI's Wan model, e.g. from Load Diffusion Model "
                                           "or LoraLoaderModelOnly."}),
            "compile": (list(COMPILE_MODES), {
                "default": "blocks",
                "tooltip": "off: eager kernels; blocks: one torch.compile graph shared by all "
                           "transformer blocks (fast to warm up); full: ComfyUI's whole-model "
                           "torch.compile around the accelerated blocks."}),
            "attention": (list(ATTENTION), {
                "default": "auto",
                "tooltip": "auto: cuDNN attention on Hopper in fp16/bf16, PyTorch's SDPA choice "
                           "elsewhere; or SDPA held to one kernel (cudnn / flash / efficient); "
                           "sage8: WanRT's 8-bit self-attention (INT8 Q·K, fp8 P·V on Ada / "
                           "Hopper, fp16 elsewhere), faster and slightly lossy; sage8-fp16 / "
                           "sage8-fp8 force the P·V type."}),
        }, "optional": DENSE_EXCLUSIONS}

    def accelerate(self, model, compile, attention, dense_first_blocks=0, dense_first_steps=0,
                   dense_last_steps=0):
        plan = AttentionOptions(backend=ATTENTION[attention], dense_first_blocks=dense_first_blocks,
                                dense_first_steps=dense_first_steps,
                                dense_last_steps=dense_last_steps)
        from .core.model import CoreModel
        if isinstance(model, CoreModel):
            from .core.accelerate import accelerate_core_model
            return (accelerate_core_model(model, compile, plan),)
        if not is_comfy_model_patcher(model):
            raise TypeError(f"WanRT Accelerate: input 'model' must be ComfyUI's MODEL (a "
                            f"ModelPatcher from Load Diffusion Model), got {type(model).__name__}")
        from .comfy_wan import accelerate
        return (accelerate(model, compile, plan),)


NODES = {"WanRTAccelerate": WanRTAccelerate}
DISPLAY_NAMES = {"WanRTAccelerate": "WanRT Accelerate"}
