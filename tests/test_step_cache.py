"""Step caching (``wan_core.step_cache``): the four policies' decisions, their parity with
diffusers 0.42.1 where it implements the same policy (first-block cache, MagCache), and how the
cache behaves in a run (CFG batched or in two passes, A14B experts, TI2V per-token timesteps,
compiled blocks, few-step runs).

Parity: our DiT and diffusers' ``WanTransformer3DModel`` hold the same tiny fp32 weights and see
the same inputs, one forward at a time, cond and uncond apart (diffusers' ``cache_context``).
Skip decisions must be equal; outputs agree to fp32 rounding (relative L2 1e-5, as in
test_dit_parity). Policies diffusers lacks (TeaCache, EasyCache) are checked on constructed
inputs whose right answers follow from the published rules by hand.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from dit_helpers import rel_l2
from wanrt.wan_core.compile import compile_dit
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.dit.formats import official_to_diffusers
from wanrt.wan_core.samplers import make_sampler
from wanrt.wan_core.sampling import sample
from wanrt.wan_core.step_cache import (FEW_STEPS, EasyCache, FirstBlockCache, MagCache,
                                       StepCache, TeaCache, make_policy)
from wanrt.wan_core.step_cache.policy import Step
from wanrt.wan_core.step_cache.published import nearest_interp, published
from wanrt.wan_core.tiny.dit import VARIANTS, weights

TOL = 1e-5
T2V = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, in_dim=16, out_dim=16,
                text_dim=16, freq_dim=16)
TI2V = replace(T2V, in_dim=48, out_dim=48)


def tiny(config=T2V, seed=0):
    return init_random_(WanModel(config), seed=seed).eval()


def contexts(text_dim=T2V.text_dim, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 6, text_dim, generator=g), torch.randn(1, 6, text_dim, generator=g)


# --- parity with diffusers ------------------------------------------------------------------------

def twin_models():
    """Our DiT and diffusers' with the same tiny Wan 2.1 T2V weights."""
    from diffusers import WanTransformer3DModel

    config = VARIANTS["wan2.1_t2v_1.3B"]
    state = weights("wan2.1_t2v_1.3B")
    ours = WanModel(config)
    ours.load_state_dict(state)
    ref = WanTransformer3DModel(
        patch_size=config.patch_size, num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim, in_channels=config.in_dim,
        out_channels=config.out_dim, text_dim=config.text_dim, freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim, num_layers=config.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=config.eps)
    ref.load_state_dict({official_to_diffusers(k): v for k, v in state.items()}, strict=True)
    return ours.eval(), ref.eval()


@torch.no_grad()
def run_side_by_side(ours, ref, cache, ref_skipped, steps=20, cfg=5.0):
    """Sample with our cached model (two CFG passes, through ``StepCache.forward`` as a wrapper
    would) while diffusers' cached model sees every same input; ``ref_skipped()`` reads
    diffusers' decision inside its cache context. Returns our and diffusers' skip decisions and
    the largest relative L2 between the two models' outputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)
    text = {b: torch.randn(1, 7, ours.config.text_dim, generator=g) for b in ("cond", "uncond")}
    sampler = make_sampler("unipc", steps, 5.0)
    ours_skipped, theirs, worst = [], [], 0.0
    for i, t in enumerate(sampler.timesteps.tolist()):
        t = torch.tensor([float(t)])
        out = {}
        for branch in ("cond", "uncond"):
            before = cache.counts["model"]["skipped"]
            out[branch] = cache.forward(ours, x, t, text[branch], branches=(branch,), step=i,
                                        steps=steps)
            ours_skipped.append(cache.counts["model"]["skipped"] > before)
            with ref.cache_context(branch):
                expected = ref(x, t, text[branch], return_dict=False)[0]
                theirs.append(ref_skipped())
            worst = max(worst, rel_l2(out[branch], expected))
        x = sampler.step(out["uncond"] + cfg * (out["cond"] - out["uncond"]), x)
    return ours_skipped, theirs, worst


def test_first_block_cache_matches_diffusers():
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

    ours, ref = twin_models()
    apply_first_block_cache(ref, FirstBlockCacheConfig(threshold=0.03))
    head = HookRegistry.check_if_exists_or_initialize(ref.blocks[0]).get_hook(
        "fbc_leader_block_hook")
    ours_skipped, theirs, worst = run_side_by_side(
        ours, ref, StepCache(FirstBlockCache(0.03)),
        lambda: not head.state_manager.get_state().should_compute)
    assert ours_skipped == theirs
    assert 0 < sum(theirs) < len(theirs) - 2  # a mix of skips and full forwards
    assert worst < TOL


def test_magcache_matches_diffusers():
    """diffusers takes one ratio table for both branches: ours gets the published cond table
    for both. 20 steps resample the 50-step table; K = 2 and retention 0.2 as published for
    other settings."""
    from diffusers.hooks import HookRegistry, MagCacheConfig, apply_mag_cache

    table = MagCache.for_model("t2v-1.3B").cond_ratios
    ours, ref = twin_models()
    config = MagCacheConfig(threshold=0.12, max_skip_steps=2, retention_ratio=0.2,
                            num_inference_steps=20, mag_ratios=list(table))
    apply_mag_cache(ref, config)
    head = HookRegistry.check_if_exists_or_initialize(ref.blocks[0]).get_hook(
        "mag_cache_leader_block_hook")
    policy = MagCache(threshold=0.12, max_skips=2, retention=0.2, cond_ratios=table,
                      uncond_ratios=table)
    ours_skipped, theirs, worst = run_side_by_side(
        ours, ref, StepCache(policy), lambda: not head.state_manager.get_state().should_compute)
    assert ours_skipped == theirs
    assert 0 < sum(theirs) < len(theirs) - 8  # retention 0.2 keeps the first 4 steps (8 forwards)
    assert not any(theirs[:8])
    assert worst < TOL


def test_magcache_tables_resample_like_diffusers():
    from diffusers.hooks.mag_cache import nearest_interp as diffusers_interp

    table = np.array(MagCache.for_model("t2v-14B").uncond_ratios)
    for steps in (1, 4, 20, 30, 50, 80):
        np.testing.assert_array_equal(
            nearest_interp(table, steps),
            diffusers_interp(torch.tensor(table, dtype=torch.float64), steps).numpy())


# --- published constants ---------------------------------------------------------------------------

def test_published_constants_are_complete():
    """TeaCache: 5 polynomial coefficients per model, plain and ret_steps; MagCache: cond and
    uncond ratios for each calibrated step (50 T2V, 40 I2V), step 0 padded with 1."""
    data = published()
    for key in ("t2v-1.3B", "t2v-14B", "i2v-14B-480p", "i2v-14B-720p"):
        tea = data["teacache"][key]
        assert len(tea["coefficients"]) == len(tea["ret_coefficients"]) == 5
        assert tea["thresholds"] == sorted(tea["thresholds"])
        mag = MagCache.for_model(key)
        steps = 50 if key.startswith("t2v") else 40
        assert len(mag.cond_ratios) == len(mag.uncond_ratios) == steps
        assert mag.cond_ratios[0] == mag.uncond_ratios[0] == 1.0
    assert TeaCache.for_model("t2v-1.3B").threshold == 0.08  # the authors' fastest setting
    assert TeaCache.for_model("t2v-14B").coefficients[0] == -5784.54975374
    assert (MagCache.for_model("t2v-1.3B").threshold, MagCache.for_model("t2v-1.3B").max_skips,
            MagCache.for_model("t2v-14B").max_skips) == (0.12, 4, 6)


def test_teacache_and_magcache_need_published_constants():
    with pytest.raises(ValueError, match="no published constants for ti2v-5B.*easycache or first_block"):
        make_policy("teacache", replace(T2V, dim=3072, in_dim=48, out_dim=48))
    assert make_policy("magcache", T2V, constants="i2v-14B-720p").threshold == 0.24
    assert isinstance(make_policy("easycache", T2V), EasyCache)
    with pytest.raises(ValueError, match="'deepcache'.*teacache, magcache"):
        make_policy("deepcache", T2V)


# --- decisions on constructed inputs ----------------------------------------------------------------

def teacache_decisions(policy, probes, total):
    state = {"branch": "cond", "residual": "cached"}
    decisions = []
    for i, probe in enumerate(probes):
        skip = policy.decide(state, probe, Step(i, total))
        if not skip:
            policy.computed(state, probe)
        decisions.append(skip)
    return decisions


def test_teacache_accumulates_the_rescaled_change_and_keeps_first_and_last_steps():
    """With a linear rescaling poly(d) = d and probes changing by 10 % a step, the accumulated
    distance reaches the threshold 0.25 every third step; step 0 and the last step always run."""
    policy = TeaCache(threshold=0.25, coefficients=(1.0, 0.0))
    probes = [torch.full((1, 1, 4), 1.1 ** i) for i in range(10)]  # rel. L1 change 0.1 each
    assert teacache_decisions(policy, probes, 10) == [
        False, True, True, False, True, True, False, True, True, False]


def test_teacache_ret_steps_mode_runs_five_steps_first_and_may_skip_the_last():
    policy = TeaCache(threshold=0.25, coefficients=(1.0, 0.0), use_ret_steps=True)
    probes = [torch.full((1, 1, 4), 1.1 ** i) for i in range(10)]
    assert teacache_decisions(policy, probes, 10) == [False] * 5 + [True, True, False, True, True]


def test_teacache_rescales_with_the_published_polynomial():
    """1.3B coefficients: a relative change of 0.05 rescales to poly(0.05) ≈ 0.077 (the
    polynomial, highest degree first), so under the threshold 0.08 one step in two is skipped."""
    policy = TeaCache.for_model("t2v-1.3B")
    d = float(np.polyval(policy.coefficients, 0.05))
    assert d == pytest.approx(2396.76752 * 0.05 ** 4 - 1311.10545 * 0.05 ** 3
                              + 201.331979 * 0.05 ** 2 - 8.29855975 * 0.05 + 0.137887774)
    probes = [torch.full((1, 1, 4), 1.05 ** i) for i in range(6)]
    assert d < 0.08 < 2 * d
    assert teacache_decisions(policy, probes, 50) == [False, True, False, True, False, True]


def test_teacache_keeps_cond_and_uncond_apart():
    """Through the cache: a batched pair whose uncond probe changes fast runs every step,
    while two passes let the slowly changing cond branch skip on its own."""
    policy = TeaCache(threshold=0.25, coefficients=(1.0, 0.0))
    slow = [torch.full((1, 1, 4), 1.1 ** i) for i in range(6)]
    fast = [torch.full((1, 1, 4), 1.5 ** i) for i in range(6)]
    cache = StepCache(policy)
    blocks = lambda x, start=0, stop=None: x + 1.0  # noqa: E731 - one "block stack" adding 1

    def step(i, branches, probe):
        return cache.run_blocks(torch.zeros(len(branches), 2, 4), probe, None, blocks,
                                branches=branches, step=i, steps=20)

    for i in range(6):
        step(i, ("cond", "uncond"), torch.cat([slow[i], fast[i]]))
    assert cache.counts["model"] == {"run": 12, "skipped": 0}
    cache.reset()
    for i in range(6):
        step(i, ("cond",), slow[i])
        step(i, ("uncond",), fast[i])
    assert cache.counts["model"] == {"run": 8, "skipped": 4}  # cond skips steps 1, 2, 4, 5


def test_easycache_predicts_the_output_change_from_the_transformation_rate():
    """A model ``v = 2x`` has transformation rate k = 2; inputs shrinking by 1 % a step predict
    an output change of k·|Δx|/|v| ≈ 1 % a step, so with threshold 0.025 two steps are skipped
    between full forwards. The first ``ret_steps`` (2) and the last step run; a skipped step
    returns ``x + (v − x)`` of the last forward; uncond follows cond's decision."""
    calls = []

    def model(x, t, context):
        calls.append(x.shape[0])
        return 2 * x

    cache = StepCache(EasyCache(threshold=0.025, ret_steps=2))
    x0 = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    ran, outputs = [], []
    for i in range(10):
        x = (1 - 0.01 * i) * x0
        before = len(calls)
        for branch in ("cond", "uncond"):
            outputs.append(cache.forward(model, x, None, None, branches=(branch,), step=i,
                                         steps=10))
        ran.append(len(calls) - before)
    assert ran == [2, 2, 0, 0, 2, 0, 0, 2, 0, 2]
    last_run_input = (1 - 0.01 * 7) * x0
    torch.testing.assert_close(outputs[2 * 8], (1 - 0.01 * 8) * x0 + last_run_input)
    assert cache.counts["model"] == {"run": 10, "skipped": 10}


# --- the cache in a run -----------------------------------------------------------------------------

def run(model, cache, steps=12, batched_cfg=True, config=T2V, low=None, **kwargs):
    context, negative = contexts()
    g = torch.Generator().manual_seed(2)
    first_frame = (torch.randn(1, config.out_dim, 1, 4, 6, generator=g)
                   if config is TI2V else None)
    return sample(model, (1, config.out_dim, 3, 4, 6), context=context, negative_context=negative,
                  seed=0, steps=steps, cfg=5.0, shift=5.0, batched_cfg=batched_cfg,
                  first_frame=first_frame, step_cache=cache, low_noise_model=low,
                  boundary=0.9 if low is not None else None, **kwargs)


POLICY_CASES = {
    "teacache": lambda: TeaCache.for_model("t2v-1.3B", threshold=0.5),
    "magcache": lambda: MagCache.for_model("t2v-1.3B"),
    "easycache": lambda: EasyCache(threshold=0.2, ret_steps=2),
    "first_block": lambda: FirstBlockCache(threshold=0.3),
}


@torch.no_grad()
@pytest.mark.parametrize("policy, batched_cfg, config", [
    ("teacache", True, T2V), ("magcache", False, T2V), ("first_block", True, TI2V),
    ("easycache", False, TI2V)],
    ids=["teacache-cfg-batch-2", "magcache-two-passes", "first-block-batch-2-ti2v",
         "easycache-two-passes-ti2v"])
def test_compiled_blocks_cache_without_recompiles(policy, batched_cfg, config):
    """Regional compile (blocks mode) keeps one graph whatever the cache skips: the decisions
    and the residual arithmetic run eagerly between compiled blocks. Compiled and eager runs
    skip the same forwards and end on the same latent (fp32, traced with the eager backend)."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny(config)
    eager_cache, compiled_cache = StepCache(POLICY_CASES[policy]()), StepCache(POLICY_CASES[policy]())
    expected = run(model, eager_cache, batched_cfg=batched_cfg, config=config)
    counter = CompileCounterWithBackend("eager")
    compile_dit(model, "blocks", backend=counter)
    out = run(model, compiled_cache, batched_cfg=batched_cfg, config=config)
    assert compiled_cache.counts == eager_cache.counts
    assert eager_cache.counts["model"]["skipped"] > 0
    assert counter.frame_count == 1 and not counters["graph_break"]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


@torch.no_grad()
def test_each_a14b_expert_keeps_its_own_cache_and_every_run_starts_afresh():
    """The low-noise expert's first step runs in full (the high expert's residual is not its
    own); a second run reproduces the first exactly (the cache is reset per run); a finished
    run holds no cached tensors, only its counts."""
    high, low = tiny(seed=0), tiny(seed=1)
    cache = StepCache(FirstBlockCache(threshold=10.0))  # skips whatever it may
    seen = []
    first = run(high, cache, low=low, callback=lambda step, total, x0: seen.append(
        {e: dict(c) for e, c in cache.counts.items()}))
    switch = next(i for i, counts in enumerate(seen) if "low" in counts)
    assert seen[switch]["low"] == {"run": 2, "skipped": 0}
    assert cache.counts["high"]["skipped"] > 0 and cache.counts["low"]["skipped"] > 0
    counts = {e: dict(c) for e, c in cache.counts.items()}
    assert cache._states == {}
    assert torch.equal(run(high, cache, low=low), first)
    assert {e: dict(c) for e, c in cache.counts.items()} == counts


@torch.no_grad()
@pytest.mark.parametrize("name", list(POLICY_CASES))
def test_few_step_runs_are_not_cached_unless_asked(name):
    """At most FEW_STEPS (8) steps (distilled 4-step models): every forward runs, however
    permissive the policy, and the cache stays out of the way (no probe is taken, no residual
    kept); ``allow_few_steps`` lifts the rule."""
    model = tiny()
    policy = replace(POLICY_CASES[name](), threshold=100.0)
    consulted = []
    policy.decide = lambda *args: consulted.append(args)
    cache = StepCache(policy)
    plain = run(model, None, steps=FEW_STEPS)
    assert torch.equal(run(model, cache, steps=FEW_STEPS), plain)
    assert cache.counts["model"] == {"run": 2 * FEW_STEPS, "skipped": 0}
    assert consulted == []
    forced = StepCache(replace(POLICY_CASES[name](), threshold=100.0), allow_few_steps=True)
    run(model, forced, steps=FEW_STEPS)
    assert forced.counts["model"]["skipped"] > 0


@torch.no_grad()
def test_a_partial_denoise_is_placed_in_the_full_ladder():
    """denoise 0.5 of 20 steps runs the last 10: the policy sees steps 10..19 of 20 (MagCache's
    ratio table and the retention are positions in the full schedule)."""
    policy = FirstBlockCache(threshold=0.0)
    seen = []
    decide = policy.decide
    policy.decide = lambda state, probe, step: (seen.append((step.index, step.total)),
                                                decide(state, probe, step))[1]
    run(tiny(), StepCache(policy), steps=20, denoise=0.5,
        latent=torch.zeros(1, T2V.out_dim, 3, 4, 6))
    assert sorted(set(seen)) == [(i, 20) for i in range(10, 20)]


@torch.no_grad()
@pytest.mark.parametrize("cfg_rank, guided, branch", [(0, True, "cond"), (1, True, "uncond"),
                                                      (1, False, "cond")])
def test_under_cfg_parallelism_each_rank_decides_the_branch_it_runs(monkeypatch, cfg_rank,
                                                                    guided, branch):
    """Each rank of a cfg group runs one pass of a guided step, its cfg rank's branch (at cfg 1
    every rank runs the cond pass); the cache keeps that branch's state."""
    from types import SimpleNamespace

    from wanrt.wan_core import parallel

    monkeypatch.setattr(parallel, "splits_guidance", lambda: True)
    monkeypatch.setattr(parallel, "current", lambda: SimpleNamespace(cfg_rank=cfg_rank))
    policy = FirstBlockCache(threshold=0.05)
    seen = []
    decide = policy.decide
    policy.decide = lambda state, probe, step: (seen.append(state["branch"]),
                                                decide(state, probe, step))[1]
    model = tiny()
    forward = StepCache(policy).bind(model, expert="model", step=3, steps=20, batch=1,
                                     guided=guided)
    forward(torch.randn(1, 16, 3, 4, 6), torch.tensor([500.0]), contexts()[0])
    assert seen == [branch]


@torch.no_grad()
def test_a_step_retried_in_two_passes_after_a_batched_oom_is_decided_once():
    """batched_cfg="auto": the pair's batched forward runs out of memory after the cache
    decided, and the step is redone as two passes; each branch's policy is asked once per step
    (else its accumulators would advance twice), and the run equals a two-pass one."""
    def recording(seen):
        policy = FirstBlockCache(threshold=0.05)
        decide = policy.decide
        policy.decide = lambda state, probe, step: (seen.append((step.index, state["branch"])),
                                                    decide(state, probe, step))[1]
        return policy

    model = tiny()
    failed = []

    def out_of_memory_once(module, args):
        if args[0].shape[0] == 2 and not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory")
    model.blocks[1].register_forward_pre_hook(out_of_memory_once)
    seen, reference = [], []
    out = run(model, StepCache(recording(seen)), batched_cfg="auto")
    expected = run(model, StepCache(recording(reference)), batched_cfg=False)
    assert failed and len(seen) == len(set(seen)) == 2 * 12
    assert seen == reference
    torch.testing.assert_close(out, expected)


@torch.no_grad()
def test_start_and_end_bound_where_skips_happen():
    model = tiny()
    cache = StepCache(FirstBlockCache(threshold=10.0), start=0.5, end=0.75)
    seen = []
    run(model, cache, steps=12, callback=lambda step, total, x0: seen.append(
        cache.counts["model"]["skipped"]))
    skipped_at = [i for i in range(12) if seen[i] > (seen[i - 1] if i else 0)]
    assert skipped_at == [6, 7, 8]


def test_whole_model_compile_is_refused_with_the_mode_to_use():
    model = tiny()
    compile_dit(model, "full", backend="eager")
    with pytest.raises(ValueError, match="mode 'blocks'"):
        run(model, StepCache(FirstBlockCache(threshold=0.1)), steps=10)
    torch._dynamo.reset()


def test_bench_smoke_run_reports_forwards_and_fidelity():
    """``bench/step_cache.py --tiny``: the GPU benchmark's code path on CPU, tiny models."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "step_cache.py"
    out = subprocess.run([sys.executable, str(bench), "--tiny", "--steps", "10", "--policies",
                          "magcache,first_block"], check=True, capture_output=True, text=True,
                         timeout=600).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [row[0].split()[0] for row in rows[1:]] == ["no", "magcache", "first-block"]
    assert all(int(row[1]) + int(row[2]) == 20 for row in rows[1:])  # 10 steps x cond, uncond
    assert int(rows[2][2]) > 0, "MagCache's table skips steps whatever the weights"
    assert float(rows[2][5]) > 0 and float(rows[1][5]) == 0  # rel. L2 vs the uncached latent
