"""First-block cache: run block 0; if its residual barely changed since the last full forward,
reuse the cached residual of the other blocks.

chengzeyi/ParaAttention README ("First Block Cache"), as diffusers' ``FirstBlockCacheConfig``
implements it: per branch, ``diff = mean|r0 − r0_prev| / mean|r0_prev|`` with ``r0 = block0(x) − x``
and ``r0_prev`` that of the last forward that ran all blocks; reuse when ``diff <= threshold``
(diffusers' rule), then the output is ``block0(x) + (blocks(x) − block0(x))`` of that forward. No
step is special; with no previous forward the blocks run.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Policy, Step, relative_l1
from .published import published


@dataclass
class FirstBlockCache(Policy):
    threshold: float

    name = "first_block"
    probe = "first_block"

    @classmethod
    def published(cls, threshold: float | None = None) -> FirstBlockCache:
        entry = published()["first_block"]
        return cls(entry["threshold"] if threshold is None else threshold)

    def decide(self, state, probe, step: Step) -> bool:
        previous = state.get("previous")
        if not step.may_skip or previous is None or state["residual"] is None:
            return False
        return relative_l1(probe, previous) <= self.threshold

    def computed(self, state, probe, output=None) -> None:
        state["previous"] = probe

    def describe(self) -> str:
        return f"first-block cache threshold {self.threshold:g}"
