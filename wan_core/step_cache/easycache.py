"""EasyCache: runtime-adaptive reuse of the model's transformation vector, no per-model constants.

Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via Runtime-Adaptive
Caching" (arXiv 2507.02860); Wan rules from H-EmbodVis/EasyCache
``EasyCache4Wan2.2/easycache_generate.py``:

- the cache is the transformation vector ``Δ = v − x`` of the last forward that ran (per branch),
  applied as ``v ≈ x + Δ``: a skipped step skips the whole model;
- the cond branch decides for the step (uncond follows): with ``k`` the transformation rate
  ``mean|v − v_prev| / mean|x − x_prev|`` measured between the last two forwards that ran,
  accumulate ``err += k · mean|x − x_{t−1}| / mean|v_prev|`` (``x_{t−1}``: the previous step's
  input, run or not); reuse while ``err < threshold``, else run and reset ``err = 0``;
- the first ``ret_steps`` steps and the last step always run; without a rate yet the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Policy, Step
from .published import published


@dataclass
class EasyCache(Policy):
    threshold: float
    ret_steps: int

    name = "easycache"
    probe = "latent"

    @classmethod
    def published(cls, threshold: float | None = None,
                  ret_steps: int | None = None) -> EasyCache:
        entry = published()["easycache"]
        return cls(entry["threshold"] if threshold is None else threshold,
                   entry["ret_steps"] if ret_steps is None else ret_steps)

    def decide(self, state, probe, step: Step) -> bool:
        previous, state["previous_input"] = state.get("previous_input"), probe
        if not step.may_skip or step.index < self.ret_steps or step.last:
            state["error"] = 0.0
            return False
        if previous is None or state.get("rate") is None:
            return False
        state["error"] = state.get("error", 0.0) + state["rate"] * (
            (probe - previous).abs().mean() / state["output"].abs().mean()).item()
        return state["error"] < self.threshold

    def computed(self, state, probe, output=None) -> None:
        if state["branch"] != "cond":
            return
        if state.get("output") is not None and state.get("computed_input") is not None:
            state["rate"] = ((output - state["output"]).abs().mean()
                             / (probe - state["computed_input"]).abs().mean()).item()
        state["computed_input"], state["output"], state["error"] = probe, output, 0.0

    def describe(self) -> str:
        return f"easycache threshold {self.threshold:g}, ret_steps {self.ret_steps}"
