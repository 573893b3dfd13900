"""MagCache: skip steps while the accumulated magnitude-ratio error of the residual stays small.

Ma et al., "MagCache: Fast Video Generation with Magnitude-Aware Cache" (arXiv 2506.09045);
Wan rules from Zehong-Ma/MagCache ``MagCache4Wan2.1/magcache_generate.py``:

- the per-model table ``γ`` of mean magnitude ratios ``‖r_t‖ / ‖r_{t−1}‖`` of the all-block
  residual ``r``, calibrated at the model's default step count (50 T2V, 40 I2V), cond and uncond
  apart; other step counts take the nearest entry (``published.nearest_interp``);
- per branch, from step ``int(retention · steps + 0.5)`` on (the retention steps always run):
  ``ratio *= γ[i]``, ``n += 1``, ``err += |1 − ratio|``; reuse the cached residual while
  ``err < threshold`` and ``n <= max_skips`` (K), else run the blocks and reset
  ``ratio, n, err = 1, 0, 0``. The last step is not special.

diffusers' ``MagCacheConfig`` implements the same rule (it skips at ``err <= threshold``; the
original, followed here, at ``<``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .policy import Policy, Step
from .published import nearest_interp, published


@dataclass
class MagCache(Policy):
    threshold: float
    max_skips: int
    retention: float
    cond_ratios: tuple[float, ...]
    uncond_ratios: tuple[float, ...]
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    name = "magcache"
    probe = "none"

    @classmethod
    def for_model(cls, key: str, threshold: float | None = None, max_skips: int | None = None,
                  retention: float | None = None) -> MagCache:
        """The published table of model ``key``; unset settings take the authors' (1.3B:
        E 0.12, K 4, R 0.2; 14B: E 0.24, K 6, R 0.2)."""
        entry = published()["magcache"][key]
        ratios = entry["mag_ratios"]  # cond, uncond interleaved per step
        return cls(entry["threshold"] if threshold is None else threshold,
                   entry["max_skips"] if max_skips is None else max_skips,
                   entry["retention"] if retention is None else retention,
                   tuple(ratios[0::2]), tuple(ratios[1::2]))

    def ratios(self, branch: str, steps: int) -> np.ndarray:
        """The ratio table of ``branch`` resampled to ``steps`` entries."""
        key = (branch, steps)
        if key not in self._tables:
            table = np.array(self.uncond_ratios if branch == "uncond" else self.cond_ratios)
            self._tables[key] = nearest_interp(table, steps)
        return self._tables[key]

    def retention_steps(self, steps: int) -> int:
        return int(self.retention * steps + 0.5)

    def decide(self, state, probe, step: Step) -> bool:
        if not step.may_skip or step.index < self.retention_steps(step.total):
            return False
        state["ratio"] = state.get("ratio", 1.0) * float(
            self.ratios(state["branch"], step.total)[step.index])
        state["count"] = state.get("count", 0) + 1
        state["error"] = state.get("error", 0.0) + abs(1.0 - state["ratio"])
        return (state["residual"] is not None and state["error"] < self.threshold
                and state["count"] <= self.max_skips)

    def computed(self, state, probe, output=None) -> None:
        state["ratio"], state["count"], state["error"] = 1.0, 0, 0.0

    def describe(self) -> str:
        return (f"magcache threshold {self.threshold:g}, K {self.max_skips}, "
                f"retention {self.retention:g}")
