"""The denoising loop every Wan pipeline runs: seeded noise, classifier-free guidance, the A14B
expert switch, TI2V first-frame re-imposition, progress, interrupt and NaN checks.

The model is any callable ``model(x, t, context, *, clip_fea=None, y=None) -> v`` with
``x [B, C, F, H, W]``, ``t [B]`` (or ``[B, L]`` per-token, ``L = F·(H/2)·(W/2)``),
``context [B, L_text, 4096]`` and the velocity ``v [B, C_out, F, H, W]``; it handles its own
dtype. Latents stay float32 throughout, as in the official loops (``wan/text2video.py``,
``wan/textimage2video.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from .parallel import guidance_passes, splits_guidance
from .residency import OutOfMemoryError, Residency
from .samplers import NUM_TRAIN_TIMESTEPS, make_sampler

PATCH_HW = 2  # the DiT patchifies 1×2×2, so a latent frame is (H/2)·(W/2) tokens


class NonFiniteLatentError(FloatingPointError):
    """The latent became NaN or infinite during sampling."""


def initial_noise(shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard normal float32 noise of ``shape`` from a CPU generator seeded with ``seed``, so a
    seed gives the same video on every device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed),
                       dtype=torch.float32)


def token_timesteps(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """TI2V per-token timesteps ``[B, L]`` for a latent of ``shape`` whose first frame is clean:
    0 on the tokens of latent frame 0, ``t`` [B] elsewhere (official ``mask2 · t``)."""
    b, _, f, h, w = shape
    per_frame = (h // PATCH_HW) * (w // PATCH_HW)
    ts = t[:, None].expand(b, f * per_frame).clone()
    ts[:, :per_frame] = 0
    return ts


class Guidance:
    """Classifier-free guidance ``v = v_u + g·(v_c − v_u)`` around one model; ``g == 1`` runs
    only the conditional pass. ``batched`` runs cond and uncond as one batch-2B forward (same
    result; needs both contexts of one shape, else two passes); ``"auto"`` tries that and falls
    back to two passes for the rest of the run after an out-of-memory error. Under CFG
    parallelism (``wan_core.parallel``) the two passes run on two ranks."""

    def __init__(self, context: Tensor, negative_context: Tensor | None, *,
                 clip_fea: Tensor | None, y: Tensor | None, batched: bool | str):
        self.context, self.negative_context = context, negative_context
        self.clip_fea, self.y = clip_fea, y
        self.batched = batched

    def __call__(self, model: Callable, x: Tensor, t: Tensor, scale: float) -> Tensor:
        if scale == 1.0:
            return self._forward(model, x, t, self.context).float()
        if (self.batched and self.context.shape == self.negative_context.shape
                and not splits_guidance()):
            try:
                v_c, v_u = self._forward_pair(model, x, t).float().chunk(2)
                return v_u + scale * (v_c - v_u)
            except OutOfMemoryError:
                if self.batched != "auto":
                    raise
                self.batched = False
        v_c, v_u = (v.float() for v in guidance_passes([
            lambda: self._forward(model, x, t, self.context),
            lambda: self._forward(model, x, t, self.negative_context)]))
        return v_u + scale * (v_c - v_u)

    def _forward(self, model, x, t, context):
        return model(x, t, context, clip_fea=self.clip_fea, y=self.y)

    def _forward_pair(self, model, x, t):
        def twice(a):
            return None if a is None else torch.cat([a, a])
        return model(twice(x), twice(t), torch.cat([self.context, self.negative_context]),
                     clip_fea=twice(self.clip_fea), y=twice(self.y))


def _batch_to(name: str, tensor: Tensor | None, batch: int) -> Tensor | None:
    """``tensor`` with batch ``batch`` (a batch of 1 is broadcast); other sizes are an error."""
    if tensor is None or tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{name} has batch {tensor.shape[0]}, the latent has batch {batch}")


@torch.no_grad()
def sample(model: Callable, shape: tuple[int, int, int, int, int], *, context: Tensor,
           negative_context: Tensor | None = None, seed: int, steps: int, cfg: float,
           shift: float, sampler: str = "unipc", clip_fea: Tensor | None = None,
           y: Tensor | None = None, low_noise_model: Callable | None = None,
           boundary: float | None = None, cfg_low: float | None = None,
           first_frame: Tensor | None = None, latent: Tensor | None = None,
           denoise: float = 1.0, callback: Callable[[int, int, Tensor], None] | None = None,
           interrupt: Callable[[], None] | None = None,
           batched_cfg: bool | str = "auto", residency: Residency | None = None,
           step_cache=None) -> Tensor:
    """Denoise seeded noise of ``shape = (B, C, F_lat, H_lat, W_lat)`` → final latent (float32,
    on ``context``'s device).

    - ``context`` / ``negative_context``: ``[B or 1, L_text, 4096]`` text embeddings; the
      negative one is required whenever a guidance scale is not 1.
    - ``cfg``: guidance of ``model``. Wan 2.2 A14B: ``model`` is the **high-noise** expert and
      runs while ``t >= boundary·1000`` with ``cfg``; below that ``low_noise_model`` runs with
      ``cfg_low`` (default ``cfg``). The official ``sample_guide_scale`` tuple is
      ``(cfg_low, cfg)`` in this order.
    - ``clip_fea`` (Wan 2.1 I2V/FLF2V) and ``y`` (I2V conditioning) go to every forward, cond and
      uncond alike.
    - ``first_frame``: TI2V start image latent ``[B, C, 1, H_lat, W_lat]``; it replaces latent
      frame 0 before the first and after every step, and its tokens get timestep 0.
    - ``latent`` with ``denoise < 1``: start from ``latent`` noised to the first σ of the last
      ``int(steps·denoise)`` steps of the ladder.
    - ``callback(step, total, x0)`` after each step (``step`` from 1), ``x0`` the model's clean
      estimate at that step; ``interrupt()`` is called before each step and should raise to stop.
    - ``batched_cfg``: ``True`` / ``False`` / ``"auto"`` (see :class:`Guidance`).
    - ``residency``: models are then ``nn.Module`` s it places: each expert is loaded when its
      steps begin (parking the other, A14B) and released at the end; an out-of-memory error
      names the sampling stage (see :mod:`wan_core.residency`).
    - ``step_cache``: a :class:`~wan_core.step_cache.StepCache`, reset here; it skips the
      forwards its policy deems predictable and counts them per expert
      (``"high"``, ``"low"``; ``"model"`` without a second expert).
    """
    shape = tuple(shape)
    if len(shape) != 5:
        raise ValueError(f"shape must be (B, C, F_lat, H_lat, W_lat), got {shape}")
    if (low_noise_model is None) != (boundary is None):
        raise ValueError("low_noise_model and boundary go together (Wan 2.2 A14B); "
                         f"got low_noise_model={'set' if low_noise_model is not None else None}, "
                         f"boundary={boundary}")
    cfg_low = cfg if cfg_low is None else cfg_low
    scales = [cfg] + ([cfg_low] if low_noise_model is not None else [])
    if negative_context is None and any(g != 1.0 for g in scales):
        raise ValueError(f"negative_context is required for guidance scales {scales} (not 1)")
    if latent is not None and tuple(latent.shape) != shape:
        raise ValueError(f"latent has shape {tuple(latent.shape)}, expected {shape}")
    if latent is None and denoise != 1.0:
        raise ValueError(f"denoise={denoise} needs a start latent")
    if first_frame is not None and tuple(first_frame.shape) != (*shape[:2], 1, *shape[3:]):
        raise ValueError(f"first_frame has shape {tuple(first_frame.shape)}, "
                         f"expected {(*shape[:2], 1, *shape[3:])}")
    if batched_cfg not in (True, False, "auto"):
        raise ValueError(f"batched_cfg must be True, False or 'auto', got {batched_cfg!r}")

    batch, device = shape[0], context.device
    guide = Guidance(_batch_to("context", context, batch),
                     _batch_to("negative_context", negative_context, batch),
                     clip_fea=_batch_to("clip_fea", clip_fea, batch),
                     y=_batch_to("y", y, batch), batched=batched_cfg)
    schedule = make_sampler(sampler, steps, shift, denoise=denoise)
    x = initial_noise(shape, seed).to(device)
    if latent is not None:
        sigma = schedule.sigma
        x = (1 - sigma) * latent.to(device, torch.float32) + sigma * x
    if first_frame is not None:
        first_frame = first_frame.to(device, torch.float32)
        x[:, :, :1] = first_frame

    total, placed = len(schedule), None
    if step_cache is not None:
        step_cache.reset()
    with contextlib.ExitStack() as placing:
        if step_cache is not None:
            placing.callback(step_cache.release)
        if residency is not None:  # released after an out-of-memory error is named
            placing.callback(lambda: [residency.release(m) for m in (model, low_noise_model)
                                      if m is not None])
            placing.enter_context(residency.stage("sampling"))
        for i, t in enumerate(schedule.timesteps.tolist()):
            if interrupt is not None:
                interrupt()
            high = low_noise_model is None or t >= boundary * NUM_TRAIN_TIMESTEPS
            expert, scale = (model, cfg) if high else (low_noise_model, cfg_low)
            if residency is not None and expert is not placed:
                residency.load(expert, "dit", None if low_noise_model is None else (
                    "high-noise expert" if high else "low-noise expert"))
                placed = expert
            t_model = torch.full((batch,), float(t), device=device)
            if first_frame is not None:
                t_model = token_timesteps(t_model, shape)
            # per-step settings (attention exclusions, step cache) see the step's place in the
            # full ladder of `steps` (denoise < 1 runs only its last `total` steps)
            if hasattr(expert, "set_sampling_step"):
                expert.set_sampling_step(steps - total + i, steps)
            if step_cache is not None:
                label = "model" if low_noise_model is None else "high" if high else "low"
                expert = step_cache.bind(expert, expert=label, step=steps - total + i,
                                         steps=steps, batch=batch, guided=scale != 1.0)
            v = guide(expert, x, t_model, scale)
            preview = schedule.denoised(v, x) if callback is not None else None
            x = schedule.step(v, x)
            if first_frame is not None:
                x[:, :, :1] = first_frame
            if not torch.isfinite(x).all():
                raise NonFiniteLatentError(f"the latent became NaN/inf at step {i + 1} of {total} "
                                           f"(t={t}); check the model weights and dtype")
            if callback is not None:
                callback(i + 1, total, preview)
        return x
