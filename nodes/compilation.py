"""The Compile node: ``torch.compile`` the diffusion model per layer, per block or whole."""

from __future__ import annotations

from ..wan_core import runtime
from ..wan_core.attention import BACKENDS
from ..wan_core.compile import MODES, compile_summary, persistent_compile_cache
from ..wan_core.dit.model import weight_sharing_copy
from . import base

INDUCTOR_MODES = {"default": None, "reduce-overhead": "reduce-overhead",
                  "max-autotune": "max-autotune",
                  "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
DYNAMIC = {"auto": None, "true": True, "false": False}
# The optional inputs that keep parts of a run dense under an 8-bit attention backend
# (AttentionOptions' exclusions); the Compile and Accelerate nodes share them.
DENSE_EXCLUSIONS = {
    "dense_first_blocks": ("INT", {
        "default": 0, "min": 0, "max": 64,
        "tooltip": "With an 8-bit backend: the first N transformer blocks keep the dense "
                   "(auto) attention."}),
    "dense_first_steps": ("INT", {
        "default": 0, "min": 0, "max": 1000,
        "tooltip": "With an 8-bit backend: the first N sampling steps run dense attention."}),
    "dense_last_steps": ("INT", {
        "default": 0, "min": 0, "max": 1000,
        "tooltip": "With an 8-bit backend: the last N sampling steps run dense attention."}),
}


class WanRTCompile:
    DESCRIPTION = ("torch.compile the diffusion model. off: the platform's own layers (fused "
                   "Triton kernels on CUDA / ROCm); layers: compile each norm / modulation / RoPE "
                   "layer that has no fused kernel; blocks: one graph shared by all transformer "
                   "blocks (compiles once, fastest to warm up); full: the whole model. Compiling "
                   "happens on the first sampling step; the kernels are kept in the user's cache "
                   "folder (~/.cache/wanrt/torchinductor, or $TORCHINDUCTOR_CACHE_DIR), so later "
                   "sessions start faster. The info output says what this platform "
                   "does for the chosen mode (platforms without torch.compile run eager). "
                   "attention switches the attention backend; sage8 (8-bit, faster, lossy) can "
                   "keep the first blocks and the first / last steps dense.")
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
        }, "optional": {
            "attention": (["from loader"] + sorted(BACKENDS), {
                "default": "from loader",
                "tooltip": "Self-attention backend. from loader: keep the loader's choice. sage8: "
                           "8-bit attention (INT8 Q·K, fp8 P·V on Ada / Hopper, fp16 elsewhere), "
                           "faster and slightly lossy; sage8-fp16 / sage8-fp8 force the P·V type."}),
            **DENSE_EXCLUSIONS,
        }}

    def compile(self, model, mode, backend, inductor_mode, dynamic, attention="from loader",
                dense_first_blocks=0, dense_first_steps=0, dense_last_steps=0):
        plan = model.attention_options
        if attention != "from loader":
            plan = runtime.AttentionOptions(backend=attention)
        plan = plan.replace(dense_first_blocks=dense_first_blocks,
                            dense_first_steps=dense_first_steps, dense_last_steps=dense_last_steps)
        if mode != "off" and backend == "inductor":
            persistent_compile_cache()  # the next process reuses these kernels
        options = runtime.RuntimeOptions.from_env(
            attention=plan,
            compile=runtime.CompileOptions(mode, backend, INDUCTOR_MODES[inductor_mode],
                                           DYNAMIC[dynamic]))
        compiled = runtime.apply(weight_sharing_copy(model), options)
        info = compile_summary(mode) + f"; attention {describe(plan)}"
        return {"ui": {"text": [info]}, "result": (compiled, info)}


def describe(plan: runtime.AttentionOptions) -> str:
    """``sage8 (dense: first 2 blocks, first 3 / last 2 steps)`` style summary of a plan."""
    dense = [f"first {plan.dense_first_blocks} blocks"] if plan.dense_first_blocks else []
    steps = [f"{which} {n}" for which, n in (("first", plan.dense_first_steps),
                                             ("last", plan.dense_last_steps)) if n]
    dense += [" / ".join(steps) + " steps"] if steps else []
    return plan.backend + (f" (dense {plan.dense_backend}: {', '.join(dense)})"
                           if dense and plan.backend != plan.dense_backend else "")


NODES = {"WanRTCompile": WanRTCompile}
DISPLAY_NAMES = {"WanRTCompile": "WanRT Compile"}
