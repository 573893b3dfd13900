"""TeaCache: skip a step while the rescaled change of the timestep-modulated input stays small.

Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model"
(arXiv 2411.19108); Wan rules from ali-vilab/TeaCache ``TeaCache4Wan2.1/teacache_generate.py``:

- probe: the time embedding ``e`` (default) or, with ``use_ret_steps``, its projection ``e0``;
- per branch (cond and uncond keep separate accumulators) and per step:
  ``d += poly(mean|p - p_prev| / mean|p_prev|)`` with the per-model 4th-order polynomial
  ``poly`` (coefficients highest degree first); reuse the cached residual while ``d < threshold``,
  else run the blocks and reset ``d = 0``; ``p_prev`` is the previous step's probe, run or not;
- always run the first ``ret_steps`` steps (1; 5 with ``use_ret_steps``) and, without
  ``use_ret_steps``, the last step (the published ``cutoff_steps``: ``2·steps − 2`` forwards
  without, ``2·steps`` — no cut-off — with ``use_ret_steps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .policy import Policy, Step, relative_l1
from .published import published


@dataclass
class TeaCache(Policy):
    threshold: float
    coefficients: tuple[float, ...]
    use_ret_steps: bool = False

    name = "teacache"
    probe = "time"

    @classmethod
    def for_model(cls, key: str, threshold: float | None = None,
                  use_ret_steps: bool = False) -> TeaCache:
        """The published constants of model ``key`` (see ``published.model_key``); the default
        threshold is the authors' highest-speed-up setting for that model."""
        table = published()["teacache"][key]
        coefficients = table["ret_coefficients" if use_ret_steps else "coefficients"]
        return cls(table["thresholds"][-1] if threshold is None else threshold,
                   tuple(coefficients), use_ret_steps)

    @property
    def ret_steps(self) -> int:
        return 5 if self.use_ret_steps else 1

    def time_probe(self, e, e0):
        return e0 if self.use_ret_steps else e

    def decide(self, state, probe, step: Step) -> bool:
        previous, state["previous"] = state.get("previous"), probe
        if (not step.may_skip or step.index < self.ret_steps or previous is None
                or (step.last and not self.use_ret_steps)):
            state["distance"] = 0.0
            return False
        state["distance"] = state.get("distance", 0.0) + float(
            np.polyval(self.coefficients, relative_l1(probe, previous)))
        return state["distance"] < self.threshold

    def computed(self, state, probe, output=None) -> None:
        state["distance"] = 0.0

    def describe(self) -> str:
        return (f"teacache threshold {self.threshold:g}"
                f"{', ret_steps 5 (e0)' if self.use_ret_steps else ''}")
