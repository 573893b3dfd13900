"""Generation pipelines: prompts (+ images) -> video, for every Wan 2.1 / 2.2 task.

The steps are plain functions that the ComfyUI nodes call one by one; :class:`WanPipeline`
chains them for Python users::

    pipe = WanPipeline(load_dit(...), load_vae(...), load_text_encoder(...))
    video = pipe.generate("a fox in the snow", seed=1)   # [B, T, H, W, 3] in [0, 1]

The task (T2V, I2V, FLF2V, TI2V, A14B) follows from the loaded DiT(s) and the images given; its
official defaults (steps, shift, guidance, size) fill whatever is not passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import prompts as wan_prompts
from .conditioning import clip_image, first_frame_latent, image_to_video_condition
from .presets import DEFAULTS, TaskDefaults, check_video_size
from .residency import Residency
from .sampling import sample


def _device(module) -> torch.device:
    return next(module.parameters()).device


def task_name(dit, low_noise_dit=None) -> str:
    """The :data:`presets.DEFAULTS` key for a DiT (and its low-noise partner, A14B)."""
    config = dit.config
    kind = config.model_type
    if kind == "t2v":
        return "t2v-A14B" if low_noise_dit is not None else (
            "t2v-1.3B" if config.dim <= 1536 else "t2v-14B")
    if kind == "i2v":
        return "i2v-14B" if config.image_dim else "i2v-A14B"
    return {"flf2v": "flf2v-14B", "ti2v": "ti2v-5B"}[kind]


def default_negative_prompt(task: str) -> str:
    """Wan's negative prompt for a task (Wan 2.1 I2V / FLF2V carry a task-specific prefix)."""
    return {"i2v-14B": wan_prompts.NEGATIVE_PROMPT_I2V,
            "flf2v-14B": wan_prompts.NEGATIVE_PROMPT_FLF2V}.get(task, wan_prompts.NEGATIVE_PROMPT)


def encode_prompts(text_encoder, prompt: str | list[str], negative_prompt: str | None = None, *,
                   task: str = "t2v-14B") -> tuple[torch.Tensor, torch.Tensor]:
    """``(context, negative_context)``, each ``[B, 512, C]``. An empty or missing negative prompt
    means Wan's default one for ``task``."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("the prompt is empty: describe the video to generate")
    negative = negative_prompt if negative_prompt and negative_prompt.strip() else (
        default_negative_prompt(task))
    context = text_encoder.encode(prompts)
    return context, text_encoder.encode([negative] * len(prompts))


def spatial_step(vae) -> int:
    """Width / height granularity: VAE compression × the DiT's 2×2 patch (16 or 32)."""
    return vae.spatial_compression * 2


def latent_shape(vae, *, batch: int, frames: int, height: int, width: int) -> tuple[int, ...]:
    """``(B, z, F_lat, H/s, W/s)`` after checking the size rules."""
    check_video_size(frames=frames, height=height, width=width, spatial_step=spatial_step(vae))
    s = vae.spatial_compression
    return (batch, vae.z_dim, (frames - 1) // vae.temporal_compression + 1, height // s, width // s)


@dataclass
class ImageCondition:
    """What the start / end images contribute to sampling (``None`` where a task has none)."""

    y: torch.Tensor | None = None  # [B, 4 + z, F_lat, h, w]  (I2V / FLF2V / I2V-A14B)
    clip_fea: torch.Tensor | None = None  # [B, 257 or 514, 1280]  (Wan 2.1 I2V / FLF2V)
    first_frame: torch.Tensor | None = None  # [B, z, 1, h, w]  (TI2V with a start image)

    def sample_kwargs(self) -> dict:
        return {"y": self.y, "clip_fea": self.clip_fea, "first_frame": self.first_frame}


def encode_images(dit_config, vae, clip_vision=None, *, start: torch.Tensor | None,
                  end: torch.Tensor | None = None, frames: int, height: int,
                  width: int) -> ImageCondition:
    """Turn start / end images ``[B, 3, H, W]`` in [0, 1] into the DiT's image conditioning."""
    kind = dit_config.model_type
    if kind in ("t2v",) or (kind == "ti2v" and start is None):
        if start is not None or end is not None:
            raise ValueError(f"this {dit_config.variant} model is text-to-video only; "
                             f"load an I2V / FLF2V / TI2V model to use a start image")
        return ImageCondition()
    if start is None:
        raise ValueError(f"the {dit_config.variant} model needs a start image")
    if end is not None and kind != "flf2v":
        raise ValueError(f"an end image needs an FLF2V model, not {dit_config.variant}")
    if kind == "ti2v":
        return ImageCondition(first_frame=first_frame_latent(vae, start, height=height,
                                                             width=width))
    cond = ImageCondition(y=image_to_video_condition(vae, start, frames=frames, height=height,
                                                     width=width, end=end))
    if dit_config.image_dim:
        if clip_vision is None:
            raise ValueError(f"the {dit_config.variant} model needs a CLIP vision model "
                             f"(clip_vision_h.safetensors)")
        if kind == "flf2v" and end is None:
            raise ValueError("the FLF2V model needs an end image")
        feats = clip_vision.encode(clip_image(start, end).to(_device(clip_vision)))
        cond.clip_fea = feats.reshape(start.shape[0], -1, feats.shape[-1])
    return cond


@dataclass
class WanPipeline:
    """The loaded models of one task. ``dit`` is the high-noise expert for Wan 2.2 A14B.

    ``residency`` places the models stage by stage (default: compute on the DiT's device, the
    encoders and the VAE parked on the CPU between their stages, see ``wan_core.residency``).
    """

    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    clip_vision: torch.nn.Module | None = None
    low_noise_dit: torch.nn.Module | None = None
    residency: Residency | None = None

    def __post_init__(self):
        if self.residency is None:
            self.residency = Residency(_device(self.dit))
        a14b = self.low_noise_dit is not None
        for model, role, label in (
                (self.text_encoder, "text_encoder", None), (self.vae, "vae", None),
                (self.clip_vision, "clip_vision", None),
                (self.dit, "dit", "high-noise expert" if a14b else None),
                (self.low_noise_dit, "dit", "low-noise expert")):
            if model is not None:
                self.residency.register(model, role, label)

    @property
    def task(self) -> str:
        return task_name(self.dit, self.low_noise_dit)

    @property
    def defaults(self) -> TaskDefaults:
        return DEFAULTS[self.task]

    @torch.no_grad()
    def generate(self, prompt: str, *, negative_prompt: str | None = None,
                 image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                 width: int | None = None, height: int | None = None, frames: int | None = None,
                 batch_size: int = 1, steps: int | None = None, cfg: float | None = None,
                 cfg_low: float | None = None, shift: float | None = None,
                 boundary: float | None = None, seed: int = 0, sampler: str = "unipc",
                 tiled_decode: bool = False,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None,
                 interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Generate ``[B, T, H, W, 3]`` frames in [0, 1]; unset options take the task defaults.

        ``image`` / ``end_image``: ``[B or 1, 3, H, W]`` in [0, 1], cover-resized and
        centre-cropped to ``width × height``.
        """
        d = self.defaults
        width, height, frames = width or d.width, height or d.height, frames or d.frames
        shape = latent_shape(self.vae, batch=batch_size, frames=frames, height=height, width=width)
        res = self.residency
        with res.use(self.text_encoder, "text_encoder", "text encode"):
            context, negative = encode_prompts(self.text_encoder, [prompt] * batch_size,
                                               negative_prompt, task=self.task)
        if image is not None:
            image = image.expand(batch_size, -1, -1, -1)
        if end_image is not None:
            end_image = end_image.expand(batch_size, -1, -1, -1)
        with contextlib.ExitStack() as stage:
            if image is not None:
                stage.enter_context(res.use(self.vae, "vae", "image encode"))
                if self.clip_vision is not None:
                    stage.enter_context(res.use(self.clip_vision, "clip_vision", "image encode"))
            cond = encode_images(self.dit.config, self.vae, self.clip_vision, start=image,
                                 end=end_image, frames=frames, height=height, width=width)
        device = res.compute_device("dit")
        latent = sample(
            self.dit, shape, context=context.to(device), negative_context=negative.to(device),
            seed=seed, steps=steps or d.steps, cfg=d.cfg if cfg is None else cfg,
            shift=shift or d.shift, sampler=sampler, low_noise_model=self.low_noise_dit,
            boundary=boundary or d.boundary if self.low_noise_dit is not None else None,
            cfg_low=cfg_low if cfg_low is not None else d.cfg_low,
            callback=callback, interrupt=interrupt, residency=res,
            **{k: None if v is None else v.to(device) for k, v in cond.sample_kwargs().items()})
        with res.use(self.vae, "vae", "VAE decode"):
            video = self.vae.decode(latent.to(res.compute_device("vae")), tiled=tiled_decode)
        return ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
