"""WanRT core: the Wan DiT, VAEs, text and image encoders, samplers and pipelines.

Nothing here imports ComfyUI. Public entry points are imported lazily so that ``import wanrt``
stays cheap inside ComfyUI.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_dit": ".dit.loader",
    "load_vae": ".vae.loader",
    "read_vae_config": ".vae.loader",
    "load_text_encoder": ".text_encoder",
    "load_clip_vision": ".clip_vision",
    "CheckpointError": ".checkpoint",
    "make_tiny": ".tiny",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
