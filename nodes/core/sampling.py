"""ModelSamplingSD3, KSampler and KSamplerAdvanced with ComfyUI's semantics on a WanRT DiT
(``wan_core.ksampling``): flow shift, the seed's CPU noise, cfg on the denoised latents,
start / end steps with leftover noise for the Wan 2.2 A14B two-expert split, denoise < 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...wan_core import ksampling
from ...wan_core.parallel import guidance_passes
from ...wan_core.sampling import PATCH_HW
from ...wan_core.step_cache import BRANCHES
from .. import host
from .model import process_in, process_out

# ComfyUI 0.33's combo lists (so saved widget values line up); WanRT runs ksampling's subset.
SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
    "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v",
    "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                   "normal", "linear_quadratic", "kl_optimal"]
SPATIAL_DOWNSCALE = {16: 8, 48: 16}  # latent channels -> pixels per latent (Wan21 / Wan22 formats)
SEED = ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True})
STEPS = ("INT", {"default": 20, "min": 1, "max": 10000})
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})


def check_choices(sampler_name, scheduler) -> bool | str:
    """``VALIDATE_INPUTS``: ComfyUI's names, limited to what WanRT runs (None: linked)."""
    for kind, value, known, supported in (
            ("sampler_name", sampler_name, SAMPLER_NAMES, ksampling.SAMPLERS),
            ("scheduler", scheduler, SCHEDULER_NAMES, ksampling.SCHEDULERS)):
        if value is not None and value not in known:
            return f"{kind}: {value!r} is not one of ComfyUI's {kind}s"
        if value is not None and value not in supported:
            return f"{kind} {value!r} is not supported by WanRT; supported: {', '.join(supported)}"
    return True


def _image_inputs(dit, extras: dict, noise_shape: tuple) -> dict:
    """``y`` (mask + image latent channels) and ``clip_fea`` as ComfyUI's WAN21 builds them."""
    out = {}
    clip = extras.get("clip_vision_output")
    if clip is not None and dit.config.image_dim:
        out["clip_fea"] = clip.penultimate_hidden_states
    extra = dit.config.in_dim - noise_shape[1]
    if extra <= 0:
        return out
    b, _, f, h, w = noise_shape
    image = extras.get("concat_latent_image")
    if image is None:
        out["y"] = torch.zeros(b, extra, f, h, w)
        return out
    image = process_in(_resize(image.float(), h, w))[:, :extra - 4].expand(b, -1, -1, -1, -1)
    mask = extras.get("concat_mask")
    if mask is None:
        mask = torch.zeros(b, 4, f, h, w)
    else:
        mask = 1.0 - (mask if mask.shape[1] == 4 else mask.mean(dim=1, keepdim=True))
        mask = _resize(mask.float(), h, w)
        if mask.shape[-3] < f:
            mask = F.pad(mask, (0, 0, 0, 0, 0, f - mask.shape[-3]))
        mask = mask.expand(b, 4, -1, -1, -1)
    out["y"] = torch.cat([mask, image], dim=1)
    return out


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    frames = x.shape[2]
    flat = x.transpose(1, 2).flatten(0, 1)
    flat = F.interpolate(flat, size=(h, w), mode="bilinear")
    return flat.unflatten(0, (-1, frames)).transpose(1, 2)


def make_denoiser(model, positive: list, negative: list, cfg: float, noise_shape: tuple,
                  noise_mask: torch.Tensor | None = None, latent: torch.Tensor | None = None,
                  schedule: torch.Tensor | None = None):
    """``denoise(x, σ) -> x0``: cfg on the CONST denoised ``x − σ·v`` of the cond and uncond
    passes (uncond skipped at cfg 1). With a ``noise_mask`` the kept frames (mask 0) are held at
    the clean latent and get timestep 0 (ComfyUI's inpaint wrapper + WAN22 per-frame timesteps).
    ``schedule``: the run's σ (all its steps, before a KSamplerAdvanced cut); each call tells
    the DiT its step, the place of σ there (the attention plan's step exclusions)."""
    dit, cache = model.dit, model.step_cache
    device = next(dit.parameters()).device
    sampling = model.sampling()
    passes = [positive] if math.isclose(cfg, 1.0) else [positive, negative]
    conds = []
    for conditioning, branch in zip(passes, BRANCHES):
        context, extras = conditioning[0]
        kwargs = {k: v.to(device) for k, v in _image_inputs(dit, extras, noise_shape).items()}
        conds.append((context.to(device), kwargs, branch))

    plan = getattr(dit, "attention_options", None)
    by_step = schedule is not None and (cache is not None
                                        or (plan is not None and plan.varies_by_step))

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        step = steps = None
        if by_step:  # the step's place in the run (one read of σ off the device)
            step, steps = int((schedule - sigma[0].cpu()).abs().argmin()), len(schedule) - 1
            dit.set_sampling_step(step, steps)
        s = sigma.view(-1, *(1,) * (x.dim() - 1))
        if noise_mask is not None:
            x = x * noise_mask + latent * (1.0 - noise_mask)
        t = sampling.timestep(sigma).float()
        if noise_mask is not None:
            b, _, f, h, w = x.shape
            per_frame = noise_mask[:, :1, :, ::PATCH_HW, ::PATCH_HW].expand(b, 1, f, h // PATCH_HW, w // PATCH_HW)
            t = (per_frame.flatten(1) * t[:, None])

        def velocity(context, kwargs, branch):
            context = context.expand(x.shape[0], -1, -1)
            if cache is None or step is None:
                return dit(x, t, context, **kwargs).float()
            return cache.forward(dit, x, t, context, branches=(branch,), step=step, steps=steps,
                                 expert="model", **kwargs).float()

        outs = [x - v * s for v in guidance_passes(
            [lambda c=c: velocity(*c) for c in conds])]
        out = outs[0] if len(outs) == 1 else outs[1] + (outs[0] - outs[1]) * cfg
        if noise_mask is not None:
            out = out * noise_mask + latent * (1.0 - noise_mask)
        return out
    return denoise


def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                    denoise=1.0, disable_noise=False, start_step=None, last_step=None,
                    force_full_denoise=False):
    """ComfyUI's ``nodes.common_ksampler`` on a CoreModel: returns the new LATENT dict."""
    samples = latent["samples"].float()
    empty = torch.count_nonzero(samples) == 0
    if empty:  # ComfyUI's fix_empty_latent_channels: an empty latent takes the model's shape
        ratio = latent.get("downscale_ratio_spacial")
        scale = ratio / SPATIAL_DOWNSCALE[model.latent_channels] if ratio is not None else 1
        samples = torch.zeros(*samples.shape[:1], model.latent_channels, samples.shape[2],
                              round(samples.shape[3] * scale), round(samples.shape[4] * scale))
    if samples.shape[-1] % PATCH_HW or samples.shape[-2] % PATCH_HW:
        raise ValueError(f"the latent is {samples.shape[-1]}x{samples.shape[-2]}: a Wan DiT needs both even "
                         f"(width and height multiples of 16, 32 for Wan 2.2 TI2V 5B)")
    noise = torch.zeros_like(samples) if disable_noise else ksampling.prepare_noise(samples, seed)
    sampling = model.sampling()
    sigmas = ksampling.ksampler_sigmas(sampling, scheduler, sampler_name, steps, denoise)
    device = next(model.dit.parameters()).device
    clean = (samples if empty else process_in(samples)).to(device)  # an empty latent stays 0
    mask = latent.get("noise_mask")
    mask = None if mask is None else mask.float().to(device)
    denoise_fn = make_denoiser(model, positive, negative, cfg, tuple(samples.shape), mask, clean,
                               schedule=sigmas)
    h = host.current()
    bar = h.progress(steps)

    def callback(i, x0):
        h.step_interrupt()
        bar.update_absolute(i + 1, steps)

    h.throw_if_interrupted()
    if model.step_cache is not None:
        model.step_cache.reset()
    try:
        out = ksampling.ksample(denoise_fn, sampling, clean.to(device), noise, sigmas,
                                sampler=sampler_name, seed=seed, start_step=start_step,
                                last_step=last_step, force_full_denoise=force_full_denoise,
                                callback=callback)
    finally:
        if hasattr(model.dit, "set_sampling_step"):
            model.dit.set_sampling_step(None, None)  # outside sampling no step is excluded
        if model.step_cache is not None:
            model.step_cache.release()
    result = {k: v for k, v in latent.items() if k not in ("downscale_ratio_spacial", "downscale_ratio_temporal")}
    result["samples"] = process_out(out).cpu()
    return result


def with_summary(model, latent: dict):
    """A sampler node's result; with a step cache, the forwards it ran and skipped as UI text."""
    if model.step_cache is None:
        return (latent,)
    return {"ui": {"text": [f"step cache: {model.step_cache.summary()}"]}, "result": (latent,)}


class ModelSamplingSD3:
    DESCRIPTION = "Set the flow-matching timestep shift: σ = shift·t / (1 + (shift − 1)·t)."
    CATEGORY = "model/patch/stable diffusion"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01})}}

    def patch(self, model, shift):
        return (model.with_shift(shift),)


class KSampler:
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."
    CATEGORY = "model/sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "seed": SEED, "steps": STEPS, "cfg": CFG,
            "sampler_name": (SAMPLER_NAMES,), "scheduler": (SCHEDULER_NAMES,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    @classmethod
    def VALIDATE_INPUTS(cls, sampler_name, scheduler):
        return check_choices(sampler_name, scheduler)

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, denoise=1.0):
        return with_summary(model, common_ksampler(
            model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
            denoise=denoise))


class KSamplerAdvanced:
    DESCRIPTION = ("KSampler with the step range exposed: add_noise, start / end step and leftover "
                   "noise, as the Wan 2.2 A14B high / low-noise split uses.")
    CATEGORY = "model/sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "add_noise": (["enable", "disable"], {"advanced": True}),
            "noise_seed": SEED, "steps": STEPS, "cfg": CFG,
            "sampler_name": (SAMPLER_NAMES,), "scheduler": (SCHEDULER_NAMES,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000, "advanced": True}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000, "advanced": True}),
            "return_with_leftover_noise": (["disable", "enable"], {"advanced": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, sampler_name, scheduler):
        return check_choices(sampler_name, scheduler)

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive,
               negative, latent_image, start_at_step, end_at_step, return_with_leftover_noise,
               denoise=1.0):
        return with_summary(model, common_ksampler(
            model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, denoise=denoise, disable_noise=add_noise == "disable",
            start_step=start_at_step, last_step=end_at_step,
            force_full_denoise=return_with_leftover_noise != "enable"))


NODES = {cls.__name__: cls for cls in (ModelSamplingSD3, KSampler, KSamplerAdvanced)}
DISPLAY_NAMES = {"KSampler": "KSampler", "KSamplerAdvanced": "KSampler (Advanced)"}
