"""The step cache of one sampling run: per expert and CFG branch states, the cached residuals,
the skip window and the forward counts; it drives a policy (``policy.Policy``) around a
:class:`~wan_core.dit.WanModel` forward.

Three ways to drive it, one forward at a time:

- ``sampling.sample(..., step_cache=cache)``: our loop binds each expert per step
  (:meth:`StepCache.bind`) and tells branches apart by batch size and call order.
- ``cache.forward(model, x, t, context, branches=("cond", "uncond"), step=i, steps=n,
  expert="model", clip_fea=..., y=...)``: ``x`` holds one batch chunk per branch (batched CFG) or
  one branch (two passes), with ``cache.reset()`` when a run starts; what another sampler calls
  (the runner's KSampler). ``model`` is a :class:`~wan_core.dit.WanModel` (its ``block_hook``);
  EasyCache works around any ``model(x, t, context, **kwargs)``.
- ``cache.run_blocks(x, e, e0, blocks, branches=..., step=i, steps=n)``: in place of the block
  loop of a model without ``block_hook`` (ComfyUI's own Wan model, ``nodes/comfy_step_cache``).

A batched forward (both branches in one batch) skips only when every branch's policy says so;
otherwise all run, and each branch counts as freshly computed. Two passes decide apart, as the
publications do. Caching needs an eager model forward: ``compile_dit`` modes ``off``, ``layers``
and ``blocks`` (the blocks stay compiled; what runs between them is Python) — not ``full``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor

from .. import parallel
from .easycache import EasyCache
from .first_block import FirstBlockCache
from .magcache import MagCache
from .policy import Policy, Step
from .published import CONSTANTS, model_key
from .teacache import TeaCache

BRANCHES = ("cond", "uncond")
POLICIES = ("teacache", "magcache", "easycache", "first_block")
# Distilled few-step runs (4-8 steps, cfg 1) have no redundant steps to spare: no skips at or
# below this many steps unless the caller asks (``allow_few_steps``).
FEW_STEPS = 8


def make_policy(name: str, config=None, *, threshold: float | None = None,
                retention: float | None = None, max_skips: int | None = None,
                use_ret_steps: bool = False, constants: str = "auto") -> Policy:
    """Policy ``name`` (:data:`POLICIES`); unset settings take the publication's defaults.
    TeaCache and MagCache read the constants published for the model: ``constants="auto"``
    picks them from the DiT ``config`` (``published.model_key``), or name a
    :data:`~.published.CONSTANTS` entry. ``retention``: MagCache's retention ratio."""
    if name in ("teacache", "magcache"):
        key = constants if constants != "auto" else (
            model_key(config) if config is not None else None)
        if key is None:
            variant = config.variant if config is not None else "this model"
            raise ValueError(f"{name}: no published constants for {variant} (WanRT carries "
                             f"those for Wan 2.1 T2V 1.3B / 14B and I2V 14B); use easycache or "
                             f"first_block, which need none, or name the constants to use")
        if key not in CONSTANTS:
            raise ValueError(f"unknown {name} constants {key!r}; choose one of "
                             f"auto, {', '.join(CONSTANTS)}")
        if name == "teacache":
            return TeaCache.for_model(key, threshold, use_ret_steps)
        return MagCache.for_model(key, threshold, max_skips, retention)
    if name == "easycache":
        return EasyCache.published(threshold)
    if name == "first_block":
        return FirstBlockCache.published(threshold)
    raise ValueError(f"unknown step-cache policy {name!r}; choose one of {', '.join(POLICIES)}")


class StepCache:
    """Skip-or-run decisions of ``policy`` over one run; :meth:`reset` starts the next run.

    ``start`` / ``end``: fractions of the run where skipping is allowed (``start·steps <= i <
    end·steps``; each policy also keeps its own published warm-up). ``allow_few_steps``: also
    skip in runs of at most :data:`FEW_STEPS` steps.
    """

    def __init__(self, policy: Policy, *, start: float = 0.0, end: float = 1.0,
                 allow_few_steps: bool = False):
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"step cache window must satisfy 0 <= start <= end <= 1, "
                             f"got start={start}, end={end}")
        self.policy, self.start, self.end = policy, start, end
        self.allow_few_steps = allow_few_steps
        self.reset()

    def reset(self) -> None:
        """Forget every state and count (a new run)."""
        self._states: dict[tuple[str, str], dict] = {}
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"run": 0, "skipped": 0})

    def release(self) -> None:
        """Drop the cached tensors (residuals, probes) when a run ends; the counts stay for
        its summary. A residual is a whole ``[B, L, C]`` activation per expert and branch."""
        self._states = {}

    def caches(self, steps: int) -> bool:
        """Whether a run of ``steps`` steps is cached at all (not a few-step run, unless asked)."""
        return steps > FEW_STEPS or self.allow_few_steps

    def step_info(self, step: int, steps: int) -> Step:
        may_skip = self.caches(steps) and self.start * steps <= step < self.end * steps
        return Step(step, steps, may_skip)

    def summary(self) -> str:
        """E.g. ``teacache threshold 0.08: high 62 forwards run, 38 skipped``."""
        experts = "; ".join(f"{expert} {c['run']} forwards run, {c['skipped']} skipped"
                            for expert, c in self.counts.items()) or "no forwards"
        return f"{self.policy.describe()}: {experts}"

    def _state(self, expert: str, branch: str) -> dict:
        key = (expert, branch)
        if key not in self._states:
            self._states[key] = {"branch": branch, "residual": None}
        return self._states[key]

    def _decide(self, state: dict, probe, info: Step) -> bool:
        """The policy's answer for this branch at this step, asked once: a forward retried at
        the same step (two passes after a batched one ran out of memory) gets the same answer
        instead of advancing the policy's accumulators twice."""
        if state.get("decided", (None,))[0] != info.index:
            state["decided"] = (info.index, self.policy.decide(state, probe, info))
        return state["decided"][1]

    def _count(self, expert: str, n: int, skipped: bool) -> None:
        self.counts[expert]["skipped" if skipped else "run"] += n

    @torch.no_grad()
    def forward(self, model, x: Tensor, t: Tensor, context: Tensor, *,
                branches: tuple[str, ...], step: int, steps: int, expert: str = "model",
                **kwargs) -> Tensor:
        """``model(x, t, context, **kwargs)`` with cached steps; ``x`` stacks one equal batch
        chunk per name in ``branches`` (``"cond"`` / ``"uncond"``)."""
        if any(b not in BRANCHES for b in branches) or x.shape[0] % len(branches):
            raise ValueError(f"branches must name {BRANCHES} entries, one equal batch chunk "
                             f"each; got {branches} for batch {x.shape[0]}")
        if getattr(model, "_compiled_call_impl", None) is not None:
            raise ValueError("step caching needs an eager model forward: compile the model in "
                             "mode 'blocks' (or 'layers' / 'off'), not 'full'")
        if not self.caches(steps):  # out of the way: no probes, no stored residuals
            self._count(expert, len(branches), skipped=False)
            return model(x, t, context, **kwargs)
        if self.policy.probe == "latent":
            states = [self._state(expert, b) for b in branches]
            return self._forward_latent(model, x, t, context, kwargs, states,
                                        self.step_info(step, steps), expert)
        if not hasattr(model, "block_hook"):
            raise TypeError(f"{self.policy.name} decides between the DiT blocks: it needs a "
                            f"wan_core WanModel (block_hook), not {type(model).__name__}; "
                            f"easycache works around any model callable")
        model.block_hook = lambda h, e, e0, blocks: self.run_blocks(
            h, e, e0, blocks, branches=branches, step=step, steps=steps, expert=expert,
            sequence_parallel=getattr(model, "sequence_parallel", None))
        try:
            return model(x, t, context, **kwargs)
        finally:
            model.block_hook = None

    def run_blocks(self, x: Tensor, e: Tensor, e0: Tensor, blocks: Callable, *,
                   branches: tuple[str, ...], step: int, steps: int, expert: str = "model",
                   sequence_parallel=None) -> Tensor:
        """The block loop ``blocks(x, start=0, stop=None)`` over the tokens ``x: [B, L, C]``, or
        the cached residuals (policies that decide between the blocks; ``e`` / ``e0``: the time
        embedding and its projection). What a model without ``block_hook`` calls in place of
        its blocks. Over token shards (``sequence_parallel``) each rank probes its own tokens
        and the blocks are skipped only where all ranks agree."""
        if not self.caches(steps):
            self._count(expert, len(branches), skipped=False)
            return blocks(x)
        states = [self._state(expert, b) for b in branches]
        info = self.step_info(step, steps)
        n, policy = len(states), self.policy
        start, base = 0, x
        if policy.probe == "first_block":
            base, start = blocks(x, 0, 1), 1
            probe = base - x
        elif policy.probe == "time":
            probe = policy.time_probe(e, e0)
        else:
            probe = None
        probes = probe.chunk(n) if probe is not None else [None] * n
        reuse = [self._decide(s, p, info) for s, p in zip(states, probes)]
        skip = all(reuse) and all(s["residual"] is not None for s in states)
        if sequence_parallel is not None:
            skip = sequence_parallel.agree(skip)
        if skip:
            self._count(expert, n, skipped=True)
            return base + torch.cat([s["residual"] for s in states])
        out = blocks(base, start)
        for s, p, r in zip(states, probes, (out - base).chunk(n)):
            s["residual"] = r
            policy.computed(s, p)
        self._count(expert, n, skipped=False)
        return out

    def _forward_latent(self, model, x, t, context, kwargs, states, info, expert):
        n, policy = len(states), self.policy
        inputs = x.chunk(n)
        lead, names = self._state(expert, "cond"), [s["branch"] for s in states]
        if "cond" in names:  # the cond branch decides for the pair (two passes: uncond reads it)
            self._decide(lead, inputs[names.index("cond")], info)
        reuse = lead.get("decided") == (info.index, True)
        if reuse and all(s["residual"] is not None for s in states):
            self._count(expert, n, skipped=True)
            return x + torch.cat([s["residual"] for s in states])
        out = model(x, t, context, **kwargs)
        for s, inp, o in zip(states, inputs, out.chunk(n)):
            s["residual"] = o - inp
            policy.computed(s, inp, o)
        self._count(expert, n, skipped=False)
        return out

    def bind(self, model, *, expert: str, step: int, steps: int, batch: int,
             guided: bool = True) -> Callable:
        """``model`` as the sampling loop calls it at ``step``: a forward of batch ``2·batch``
        is the cond/uncond pair, batch ``batch`` forwards are cond then uncond (``guided``:
        the step runs both; else cond alone). Under CFG parallelism (``wan_core.parallel``)
        each rank of the cfg group runs the branch of its cfg rank."""
        calls = itertools.count()

        def forward(x, t, context, **kwargs):
            chunks = x.shape[0] // batch
            if chunks > 1:
                branches = BRANCHES[:chunks]
            elif guided and parallel.splits_guidance():
                branches = (BRANCHES[parallel.current().cfg_rank],)
            else:
                branches = (BRANCHES[next(calls) % 2 if guided else 0],)
            return self.forward(model, x, t, context, branches=branches, step=step,
                                steps=steps, expert=expert, **kwargs)
        return forward
