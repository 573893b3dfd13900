"""The Compile node: ``torch.compile`` the diffusion model per layer, per block or whole."""

from __future__ import annotations

from ..wan_core.compile import MODES, compile_dit, compile_summary
from ..wan_core.dit.model import weight_sharing_copy
from . import base

INDUCTOR_MODES = {"default": None, "reduce-overhead": "reduce-overhead",
                  "max-autotune": "max-autotune",
                  "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
DYNAMIC = {"auto": None, "true": True, "false": False}


class WanRTCompile:
    DESCRIPTION = ("torch.compile the diffusion model. off: the platform's own layers (fused "
                   "Triton kernels on CUDA / ROCm); layers: compile each norm / modulation / RoPE "
                   "layer that has no fused kernel; blocks: one graph shared by all transformer "
                   "blocks (compiles once, fastest to warm up); full: the whole model. Compiling "
                   "happens on the first sampling step. The info output says what this platform "
                   "does for the chosen mode (platforms without torch.compile run eager).")
    CATEGORY = base.CATEGORY + "/model"
    RETURN_TYPES = ("WANRT_MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The model, compiled on first use (its weights are shared with the input).",
                       "One line: what the chosen mode compiles on this platform.")
    FUNCTION = "compile"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WANRT_MODEL", {"tooltip": "From WanRT Load Diffusion Model."}),
            "mode": (list(MODES), {"default": "blocks",
                                   "tooltip": "off / layers / blocks / full (see the node "
                                              "description). blocks is the usual choice."}),
            "backend": (["inductor", "cudagraphs", "aot_eager", "eager"], {
                "default": "inductor",
                "tooltip": "torch.compile backend; aot_eager / eager only trace (for debugging)."}),
            "inductor_mode": (list(INDUCTOR_MODES), {
                "default": "default",
                "tooltip": "Inductor's mode: max-autotune tries more kernels (slow first run); "
                           "reduce-overhead adds CUDA graphs."}),
            "dynamic": (list(DYNAMIC), {
                "default": "auto",
                "tooltip": "Dynamic shapes. auto: a static graph first, dynamic after the first "
                           "size change (one recompile); true: dynamic from the start."}),
        }}

    def compile(self, model, mode, backend, inductor_mode, dynamic):
        compiled = compile_dit(weight_sharing_copy(model), mode, backend=backend,
                               inductor_mode=INDUCTOR_MODES[inductor_mode], dynamic=DYNAMIC[dynamic])
        info = compile_summary(mode)
        return {"ui": {"text": [info]}, "result": (compiled, info)}


NODES = {"WanRTCompile": WanRTCompile}
DISPLAY_NAMES = {"WanRTCompile": "WanRT Compile"}
