"""The sampler node: denoise a latent video with one Wan model, or the two Wan 2.2 A14B experts."""

from __future__ import annotations

from ..wan_core.pipelines import ImageCondition
from ..wan_core.presets import DEFAULTS
from ..wan_core.samplers import SAMPLERS
from ..wan_core.sampling import sample
from . import base, host
from .latents import CONDITION_KEY

T2V, A14B = DEFAULTS["t2v-1.3B"], DEFAULTS["t2v-A14B"]


class WanRTSampler:
    DESCRIPTION = ("Generate the video latent: flow-matching sampling with classifier-free "
                   "guidance. For Wan 2.2 A14B connect the low-noise expert too: the model input "
                   "(high-noise expert) runs while the timestep is above boundary · 1000, then the "
                   "low-noise expert with cfg_low.")
    CATEGORY = base.CATEGORY + "/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised latent video.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("WANRT_MODEL", {"tooltip": "The diffusion model (the high-noise expert "
                                                     "for Wan 2.2 A14B)."}),
                "conditioning": ("WANRT_CONDITIONING", {"tooltip": "From WanRT Text Encode."}),
                "latent": ("LATENT", {"tooltip": "From WanRT Empty Latent Video or Image To Video."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                                 "control_after_generate": True,
                                 "tooltip": "The noise seed; the same seed gives the same video on "
                                            "every device."}),
                "steps": ("INT", {"default": T2V.steps, "min": 1, "max": 1000,
                                  "tooltip": "Denoising steps (Wan's defaults: 50 for T2V, 40 for "
                                             "I2V and A14B)."}),
                "cfg": ("FLOAT", {"default": T2V.cfg, "min": 0.0, "max": 100.0, "step": 0.1,
                                  "round": 0.01,
                                  "tooltip": "Guidance scale: how strongly the prompt is followed; "
                                             "1 skips the negative pass (twice as fast)."}),
                "shift": ("FLOAT", {"default": T2V.shift, "min": 0.01, "max": 100.0, "step": 0.1,
                                    "round": 0.01,
                                    "tooltip": "Timestep shift of the noise schedule; higher "
                                               "spends more steps at high noise (Wan: 5, 3 for "
                                               "480p I2V, 12 for T2V A14B, 16 for FLF2V)."}),
                "sampler": (list(SAMPLERS), {"default": "unipc",
                                             "tooltip": "unipc: Wan's default; dpm++: DPM-Solver++ "
                                                        "2M; euler: first order."}),
            },
            "optional": {
                "low_noise_model": ("WANRT_MODEL", {"tooltip": "Wan 2.2 A14B: the low-noise expert "
                                                               "that finishes the video."}),
                "boundary": ("FLOAT", {"default": A14B.boundary, "min": 0.0, "max": 1.0,
                                       "step": 0.001,
                                       "tooltip": "A14B: switch to the low-noise expert once the "
                                                  "timestep drops below boundary · 1000 (0.875 "
                                                  "for T2V, 0.9 for I2V). Unused without a "
                                                  "low-noise model."}),
                "cfg_low": ("FLOAT", {"default": A14B.cfg_low, "min": 0.0, "max": 100.0,
                                      "step": 0.1, "round": 0.01,
                                      "tooltip": "A14B: guidance scale of the low-noise expert. "
                                                 "Unused without a low-noise model."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "1: start from pure noise. Below 1: noise the "
                                                 "input latent and run only the last "
                                                 "steps · denoise steps (video-to-video)."}),
            },
        }

    def sample(self, model, conditioning, latent, seed, steps, cfg, shift, sampler,
               low_noise_model=None, boundary=A14B.boundary, cfg_low=A14B.cfg_low, denoise=1.0):
        samples = latent["samples"]
        condition = latent.get(CONDITION_KEY) or ImageCondition()
        if model.config.y_dim and condition.y is None:
            raise ValueError(f"the {model.config.variant} model animates a start image: build its "
                             f"latent with WanRT Image To Video, not an empty latent")
        step_cache = getattr(model, "step_cache", None)
        h = host.current()
        residency = h.residency()
        device = residency.compute_device("dit")
        bar = h.progress(steps)  # the callback corrects the total when denoise < 1
        a14b = low_noise_model is not None
        out = sample(
            model, tuple(samples.shape), context=conditioning["context"].to(device),
            negative_context=conditioning["negative_context"].to(device), seed=seed, steps=steps,
            cfg=cfg, shift=shift, sampler=sampler, low_noise_model=low_noise_model,
            boundary=boundary if a14b else None, cfg_low=cfg_low if a14b else None,
            latent=samples if denoise < 1 else None, denoise=denoise,
            callback=lambda step, total, x0: bar.update_absolute(step, total),
            interrupt=h.step_interrupt, residency=residency, step_cache=step_cache,
            **{k: None if v is None else v.to(device) for k, v in condition.sample_kwargs().items()})
        result = ({**latent, "samples": out.cpu()},)  # between nodes latents rest on the CPU
        if step_cache is None:
            return result
        return {"ui": {"text": [f"step cache: {step_cache.summary()}"]}, "result": result}


NODES = {"WanRTSampler": WanRTSampler}
DISPLAY_NAMES = {"WanRTSampler": "WanRT Sampler"}
