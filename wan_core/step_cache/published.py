"""The constants the cache authors published for the Wan models (``published.json``, data only),
and which of them a loaded DiT gets.

Keys: ``t2v-1.3B``, ``t2v-14B`` (Wan 2.1; a Wan 2.2 T2V-A14B expert has the same layout and gets
these too), ``i2v-14B-480p`` / ``i2v-14B-720p`` (Wan 2.1 I2V; same weights layout, so 480p
unless asked). Sources are listed in the file's ``_sources``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

I2V_RESOLUTIONS = ("480p", "720p")


@functools.cache
def published() -> dict:
    return json.loads((Path(__file__).with_name("published.json")).read_text())


def model_key(config, i2v_resolution: str = "480p") -> str | None:
    """The published-constants key of a :class:`~wan_core.dit.DiTConfig`; None when the authors
    published nothing for it (TI2V-5B, FLF2V, I2V-A14B)."""
    if i2v_resolution not in I2V_RESOLUTIONS:
        raise ValueError(f"i2v_resolution must be one of {I2V_RESOLUTIONS}, got {i2v_resolution!r}")
    variant = config.variant
    if variant in ("t2v-1.3B", "t2v-14B"):
        return variant
    if variant == "i2v-14B":
        return f"i2v-14B-{i2v_resolution}"
    return None


def nearest_interp(table: np.ndarray, length: int) -> np.ndarray:
    """``table`` resampled to ``length`` entries by nearest index (MagCache's rule: index
    ``round(i * (n - 1) / (length - 1))``, numpy's round half to even; one entry: the last)."""
    if length == 1:
        return table[-1:]
    scale = (len(table) - 1) / (length - 1)
    return table[np.round(np.arange(length) * scale).astype(int)]
