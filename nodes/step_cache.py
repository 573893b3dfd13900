"""The Step Cache nodes: attach a step-caching policy (TeaCache, MagCache, EasyCache, first-block)
to the diffusion model: WanRT Step Cache for WanRT Sampler, WanRT Step Cache (MODEL) for core
KSampler workflows (after WanRT Accelerate)."""

from __future__ import annotations

from ..wan_core.dit.model import weight_sharing_copy
from ..wan_core.step_cache import FEW_STEPS, POLICIES, StepCache, make_policy
from ..wan_core.step_cache.published import CONSTANTS
from . import base
from .accelerate import is_comfy_model_patcher


DESCRIPTION = (
    "Skip sampling steps whose result the previous steps predict, reusing the cached residual "
    "(fewer DiT forwards, a small loss of fidelity). teacache and magcache use their authors' "
    "constants for Wan 2.1 T2V 1.3B / 14B and I2V 14B (a Wan 2.2 T2V A14B expert counts as "
    "14B); easycache and first_block need none. The thresholds were tuned by their authors on "
    "the real models; 0 takes theirs. The sampler reports the forwards run and skipped. "
    f"Runs of at most {FEW_STEPS} steps (distilled models) are not cached unless "
    "allow_few_steps is on.")
SETTINGS = {
    "policy": (list(POLICIES), {
        "default": "magcache",
        "tooltip": "teacache: time-embedding change (TeaCache4Wan2.1); magcache: "
                   "residual magnitude ratios (MagCache4Wan2.1); easycache: runtime "
                   "transformation rate, no constants; first_block: change of block 0's "
                   "residual (ParaAttention / diffusers)."}),
    "threshold": ("FLOAT", {
        "default": 0.0, "min": 0.0, "max": 2.0, "step": 0.001,
        "tooltip": "Higher skips more. 0: the authors' value (TeaCache 1.3B 0.08, 14B "
                   "0.2, I2V 0.26; MagCache 1.3B 0.12, 14B 0.24; EasyCache 0.05; "
                   "first-block 0.05)."}),
    "start_percent": ("FLOAT", {
        "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
        "tooltip": "No skips before this fraction of the steps (on top of each "
                   "policy's own warm-up steps)."}),
    "end_percent": ("FLOAT", {
        "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
        "tooltip": "No skips from this fraction of the steps on."}),
    "retention": ("FLOAT", {
        "default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01,
        "tooltip": "MagCache: the fraction of first steps that always run (the authors' "
                   "0.2). Unused by the other policies, which keep their published "
                   "warm-up."}),
    "constants": (["auto", *CONSTANTS], {
        "default": "auto",
        "tooltip": "teacache / magcache: whose published constants to use. auto: the "
                   "loaded model's (Wan 2.1 I2V 14B: 480p; pick i2v-14B-720p for the "
                   "720p model)."}),
    "allow_few_steps": ("BOOLEAN", {
        "default": False,
        "tooltip": f"Also skip in runs of at most {FEW_STEPS} steps (4-step distilled "
                   f"models have no redundant step to spare)."}),
}


def make_step_cache(config, policy, threshold, start_percent, end_percent, retention, constants,
                    allow_few_steps) -> tuple[StepCache, str]:
    """The node inputs as a :class:`StepCache` for a DiT of ``config``, and its one-line info."""
    chosen = make_policy(policy, config, threshold=threshold or None, retention=retention,
                         constants=constants)
    cache = StepCache(chosen, start=start_percent, end=end_percent, allow_few_steps=allow_few_steps)
    info = (f"{chosen.describe()}; skips allowed in steps {start_percent:g}-{end_percent:g} "
            f"of the run{'' if allow_few_steps else f', not in runs of <= {FEW_STEPS} steps'}")
    return cache, info


def check_not_compiled_whole(dit) -> None:
    if getattr(dit, "_compiled_call_impl", None) is not None:
        raise ValueError("WanRT Step Cache: the model is compiled whole (compile mode 'full'); "
                         "step caching runs between the blocks, use mode 'blocks'")


class _StepCacheNode:
    """The inputs and outputs both Step Cache nodes share; ``with_cache(model, make)`` attaches
    the cache ``make(config)`` builds to a copy of ``model`` and returns ``(copy, info)``."""

    DESCRIPTION = DESCRIPTION
    CATEGORY = base.CATEGORY + "/model"
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The model with the step cache attached (its weights are shared with the "
                       "input).", "One line: the policy and its settings.")
    FUNCTION = "attach"
    MODEL_INPUT: tuple

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": cls.MODEL_INPUT, **SETTINGS}}

    def attach(self, model, policy, threshold, start_percent, end_percent, retention, constants,
               allow_few_steps):
        def make(config):
            return make_step_cache(config, policy, threshold, start_percent, end_percent,
                                   retention, constants, allow_few_steps)
        cached, info = self.with_cache(model, make)
        return {"ui": {"text": [info]}, "result": (cached, info)}


class WanRTStepCache(_StepCacheNode):
    RETURN_TYPES = ("WANRT_MODEL", "STRING")
    MODEL_INPUT = ("WANRT_MODEL", {"tooltip": "The diffusion model (for Wan 2.2 A14B the "
                                              "high-noise expert: the cache serves both)."})

    @staticmethod
    def with_cache(model, make):
        check_not_compiled_whole(model)
        cache, info = make(model.config)
        cached = weight_sharing_copy(model)
        cached.step_cache = cache
        return cached, info


class WanRTStepCacheModel(_StepCacheNode):
    DESCRIPTION = (DESCRIPTION + " For ComfyUI's core nodes: put it after WanRT Accelerate "
                   "(before ModelSamplingSD3 / KSampler); each model (each A14B expert) keeps "
                   "its own cache.")
    RETURN_TYPES = ("MODEL", "STRING")
    MODEL_INPUT = ("MODEL", {"tooltip": "ComfyUI's Wan model after WanRT Accelerate."})

    @staticmethod
    def with_cache(model, make):
        from .core.model import CoreModel
        if isinstance(model, CoreModel):
            check_not_compiled_whole(model.dit)
            cache, info = make(model.dit.config)
            return model.with_step_cache(cache), info
        if is_comfy_model_patcher(model):
            from .comfy_step_cache import with_step_cache
            return with_step_cache(model, make)
        raise TypeError(f"WanRT Step Cache (MODEL): input 'model' must be a MODEL (after WanRT "
                        f"Accelerate), got {type(model).__name__}")


NODES = {"WanRTStepCache": WanRTStepCache, "WanRTStepCacheModel": WanRTStepCacheModel}
DISPLAY_NAMES = {"WanRTStepCache": "WanRT Step Cache",
                 "WanRTStepCacheModel": "WanRT Step Cache (MODEL)"}
