"""Wan 2.1 / 2.2 video VAEs: ``load_vae(path)`` → :class:`WanVAE` with ``encode`` / ``decode``."""

from .config import WAN21_VAE, WAN22_VAE, VAEConfig
from .loader import load_vae, read_vae_config
from .model import WanVAE

__all__ = ["VAEConfig", "WAN21_VAE", "WAN22_VAE", "WanVAE", "load_vae", "read_vae_config"]
