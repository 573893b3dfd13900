"""The LoRA node: a LoRA file from models/loras applied to a WanRT diffusion model."""

from __future__ import annotations

from ..wan_core.lora import MODES, apply_lora
from . import base, host


class WanRTLoadLoRA:
    DESCRIPTION = ("Apply a LoRA (models/loras) to a WanRT diffusion model: every common layout "
                   "(ComfyUI / kohya, diffusers, PEFT, lightx2v with full deltas). merge bakes it "
                   "into the weights (no cost per step); runtime keeps the weights as loaded "
                   "(fp8 stays fp8) and adds the low-rank path in each matmul. Chain nodes to "
                   "stack LoRAs; the input model is left as it was.")
    CATEGORY = base.CATEGORY + "/loaders"
    RETURN_TYPES = ("WANRT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA; it shares every unpatched weight with the input.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WANRT_MODEL", {"tooltip": "From WanRT Load Diffusion Model (or another "
                                                 "WanRT Load LoRA, to stack)."}),
            "lora_name": base.model_file_input(
                "loras", "The LoRA file, e.g. wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise"
                         ".safetensors for the high-noise expert."),
            "strength": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                   "tooltip": "How strongly the LoRA changes the model; may be "
                                              "negative. 0 returns the model unchanged."}),
            "mode": (list(MODES), {"default": "merge",
                                   "tooltip": "merge: add the LoRA into the weights once. "
                                              "runtime: keep the weights, add the LoRA's "
                                              "low-rank product per matmul (fp8 weights stay "
                                              "fp8)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return base.validate_model_file("loras", lora_name)

    def apply(self, model, lora_name, strength, mode):
        path = host.current().model_path("loras", lora_name)
        return (apply_lora(model, path, strength, mode=mode),)


NODES = {"WanRTLoadLoRA": WanRTLoadLoRA}
DISPLAY_NAMES = {"WanRTLoadLoRA": "WanRT Load LoRA"}
