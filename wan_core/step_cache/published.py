"""The constants the cache authors published for the Wan models (``published.json``, data only),
and which of them a loaded DiT gets.

Keys (:data:`CONSTANTS`): ``t2v-1.3B``, ``t2v-14B`` (Wan 2.1), ``i2v-14B-480p`` /
``i2v-14B-720p`` (Wan 2.1 I2V; same weights layout, so 480p unless asked). Sources are listed in
the file's ``_sources``. Only the Wan 2.1 tables are carried: a Wan 2.2 T2V-A14B expert has the
14B layout and gets the Wan 2.1 T2V-14B constants, which were calibrated on Wan 2.1, not on it
(MagCache's authors have since published Wan 2.2 settings, MagCache4Wan2.2, not carried here).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

CONSTANTS = ("t2v-1.3B", "t2v-14B", "i2v-14B-480p", "i2v-14B-720p")


@functools.cache
def published() -> dict:
    return json.loads((Path(__file__).with_name("published.json")).read_text())


def model_key(config) -> str | None:
    """The published-constants key of a :class:`~wan_core.dit.DiTConfig` (Wan 2.1 I2V 14B:
    ``i2v-14B-480p``, the 720p model has the same layout); None where no carried table fits
    (TI2V-5B, FLF2V, I2V-A14B, other widths)."""
    variant = config.variant
    if variant in ("t2v-1.3B", "t2v-14B"):
        return variant
    return "i2v-14B-480p" if variant == "i2v-14B" else None


def nearest_interp(table: np.ndarray, length: int) -> np.ndarray:
    """``table`` resampled to ``length`` entries by nearest index (MagCache's rule: index
    ``round(i * (n - 1) / (length - 1))``, numpy's round half to even; one entry: the last)."""
    if length == 1:
        return table[-1:]
    scale = (len(table) - 1) / (length - 1)
    return table[np.round(np.arange(length) * scale).astype(int)]
