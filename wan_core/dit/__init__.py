"""The Wan 2.1 / 2.2 diffusion transformer: config detection, model, checkpoint loading."""

from .config import DiTConfig, detect_config
from .loader import load_dit
from .model import WanModel, init_random_

__all__ = ["DiTConfig", "WanModel", "detect_config", "init_random_", "load_dit"]
