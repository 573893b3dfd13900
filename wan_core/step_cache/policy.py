"""The one interface every step-cache policy implements, and the step a decision is made at.

A policy decides, per forward of one CFG branch (cond or uncond) of one expert, whether the
cached residual may stand in for the model's work. :class:`~.cache.StepCache` owns the states
(one dict per expert and branch), the stored residuals and the counting; a policy only reads a
probe tensor, updates its own entries in the state and answers.

Where the probe comes from (:attr:`Policy.probe`):

=================  ========================================================================
``"time"``         the time embedding of the step: ``e [B, S, C]`` or its projection
                   ``e0 [B, 6, S, C]`` (TeaCache); the cached residual spans all blocks
``"none"``         no tensor, the step alone (MagCache); residual over all blocks
``"first_block"``  the residual of block 0, ``block0(x) - x`` ``[B, L, C]``; the cached
                   residual spans blocks 1..N-1 (first-block cache)
``"latent"``       the noisy latent the model gets, ``x [B, C, F, H, W]`` (EasyCache); the
                   cached residual is ``model(x) - x``, the whole forward is skipped, and the
                   cond branch decides for the pair
=================  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Step:
    """Where a forward is: ``index`` of ``total`` steps (from 0); ``may_skip`` is False where the
    run forbids skipping (the user's start/end window, few-step runs)."""

    index: int
    total: int
    may_skip: bool = True

    @property
    def last(self) -> bool:
        return self.index >= self.total - 1


class Policy:
    """A step-cache policy: its name, where its probe comes from, and its decision rule.

    ``decide(state, probe, step)`` is called on every forward of a branch (skipped or not) and
    returns True to reuse the cached residual; ``computed(state, probe, output)`` follows every
    forward that ran (``output``: the latent-level output, used by ``"latent"`` policies only).
    ``state`` is the branch's dict: ``state["branch"]`` ("cond" / "uncond") and
    ``state["residual"]`` (None until a forward ran) and ``state["decided"]`` (the step and
    answer of the last decision) are the cache's, every other key the policy's own.
    """

    name: str = ""
    probe: str = "none"

    def decide(self, state: dict, probe: Tensor | None, step: Step) -> bool:
        raise NotImplementedError

    def computed(self, state: dict, probe: Tensor | None, output: Tensor | None = None) -> None:
        """Default: nothing to update."""

    def time_probe(self, e: Tensor, e0: Tensor) -> Tensor:
        """``"time"`` policies: which embedding to watch (default ``e``)."""
        return e

    def describe(self) -> str:
        """One line: the policy and its constants (for run summaries)."""
        return self.name


def relative_l1(a: Tensor, b: Tensor) -> float:
    """``mean|a - b| / mean|b|`` as a Python float (the decision leaves the graph here)."""
    return ((a - b).abs().mean() / b.abs().mean()).item()
