"""Tiny random checkpoints in every real layout, laid out as a ComfyUI models folder.

``make_tiny(outdir)`` writes ``diffusion_models/``, ``text_encoders/``, ``vae/``, ``clip_vision/``
and ``loras/`` with the file names users have for the real models, plus ``official/`` and
``diffusers/`` folders.
Each component's writer lives in its own module here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# One module per component; each exposes ``write(outdir: Path, seed: int) -> list[Path]``.
WRITERS = ("dit", "vae", "text_encoder", "clip_vision", "lora")


def make_tiny(outdir, *, seed: int = 0) -> list[Path]:
    outdir = Path(outdir)
    written: list[Path] = []
    for name in WRITERS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue  # component not built yet
        written += module.write(outdir, seed=seed)
    return written
