"""What ComfyUI's ``MODEL`` and ``LATENT`` carry here: a :class:`CoreModel` (a Wan DiT with its
flow-sampling shift) and latents in ComfyUI's Wan latent format (raw VAE latents; the model
normalises them per channel, ``latent_formats.Wan21`` / ``Wan22``)."""

from __future__ import annotations

import dataclasses

import torch

from ...wan_core.ksampling import FlowSampling
from ...wan_core.step_cache import StepCache
from ...wan_core.vae.config import LATENT_MEAN, LATENT_STD

DEFAULT_SHIFT = 8.0  # ComfyUI's WAN21 / WAN22 sampling_settings, until ModelSamplingSD3 sets one


@dataclasses.dataclass(frozen=True)
class CoreModel:
    """``MODEL``: the DiT, the flow shift and the step cache its sampling uses (WanRT Step Cache
    (MODEL)); nodes return new instances, never edit one."""

    dit: torch.nn.Module
    shift: float = DEFAULT_SHIFT
    step_cache: StepCache | None = None

    def with_dit(self, dit: torch.nn.Module) -> CoreModel:
        return dataclasses.replace(self, dit=dit)

    def with_step_cache(self, step_cache: StepCache | None) -> CoreModel:
        return dataclasses.replace(self, step_cache=step_cache)

    def with_shift(self, shift: float) -> CoreModel:
        return dataclasses.replace(self, shift=float(shift))

    def sampling(self) -> FlowSampling:
        return FlowSampling(self.shift)

    @property
    def latent_channels(self) -> int:
        return self.dit.config.out_dim


def _stats(channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if channels not in LATENT_MEAN:
        raise ValueError(f"a Wan latent has 16 or 48 channels, got {channels}")
    shape = (1, channels) + (1,) * (like.dim() - 2)
    mean = torch.tensor(LATENT_MEAN[channels], device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(LATENT_STD[channels], device=like.device, dtype=like.dtype).view(shape)
    return mean, std


def process_in(latent: torch.Tensor) -> torch.Tensor:
    """Raw latent → the model's normalised space, ``(x − mean) / std`` per channel."""
    mean, std = _stats(latent.shape[1], latent)
    return (latent - mean) / std


def process_out(latent: torch.Tensor) -> torch.Tensor:
    """Normalised → raw, ``x · std + mean``."""
    mean, std = _stats(latent.shape[1], latent)
    return latent * std + mean
