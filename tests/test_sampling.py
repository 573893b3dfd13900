"""The denoising loop: parity with the official Wan loops driving the official model, and the
loop's own contract (seed, guidance, experts, TI2V, progress, interrupt, NaN) on a fake model."""

import pytest
import torch

from reference import official_module, official_scheduler
from wanrt.wan_core.sampling import NonFiniteLatentError, initial_noise, sample
from wanrt.wan_core.samplers import make_sampler

SHAPE = (1, 16, 3, 8, 8)  # [B, C, F_lat, H_lat, W_lat] -> 3·4·4 = 48 tokens
SEQ_LEN = 48


def official_model(seed):
    """Tiny official Wan 2.2 ``WanModel`` (fp32). Its init zeroes the output head, so every
    parameter is redrawn to get a non-trivial velocity field."""
    torch.manual_seed(seed)
    model = official_module("modules/model").WanModel(
        model_type="t2v", dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=16, out_dim=16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


class Adapter:
    """Our call signature → the official list-based forward (``t`` [B] is expanded to [B, L],
    which the official forward does itself for batch 1)."""

    def __init__(self, official):
        self.official = official

    def __call__(self, x, t, context, *, clip_fea=None, y=None):
        assert clip_fea is None and y is None
        b, _, f, h, w = x.shape
        seq_len = f * (h // 2) * (w // 2)
        t = t[:, None].expand(b, seq_len) if t.dim() == 1 else t
        return torch.stack(self.official(list(x), t=t, context=list(context), seq_len=seq_len))


@torch.no_grad()
def official_text2video_loop(low, high, boundary, guide_scale, context, context_null, seed,
                             steps, shift, solver="unipc"):
    """The sampling part of ``WanT2V.generate`` (wan22 ``wan/text2video.py``), single GPU;
    ``guide_scale`` is the official ``(low, high)`` tuple. Returns [C, F, H, W]."""
    seed_g = torch.Generator(device="cpu")
    seed_g.manual_seed(seed)
    noise = [torch.randn(*SHAPE[1:], dtype=torch.float32, generator=seed_g)]
    scheduler = official_scheduler(solver, steps, shift)
    boundary = boundary * 1000
    latents = noise
    arg_c = {"context": [context[0]], "seq_len": SEQ_LEN}
    arg_null = {"context": [context_null[0]], "seq_len": SEQ_LEN}
    for t in scheduler.timesteps:
        timestep = torch.stack([t])
        model = high if t.item() >= boundary else low
        sample_guide_scale = guide_scale[1] if t.item() >= boundary else guide_scale[0]
        noise_pred_cond = model(latents, t=timestep, **arg_c)[0]
        noise_pred_uncond = model(latents, t=timestep, **arg_null)[0]
        noise_pred = noise_pred_uncond + sample_guide_scale * (noise_pred_cond - noise_pred_uncond)
        temp_x0 = scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0),
                                 return_dict=False, generator=seed_g)[0]
        latents = [temp_x0.squeeze(0)]
    return latents[0]


@torch.no_grad()
def official_ti2v_loop(model, z, guide_scale, context, context_null, seed, steps, shift):
    """The sampling part of ``WanTI2V.i2v`` (wan22 ``wan/textimage2video.py``): per-token
    timesteps from ``mask2`` and the first frame ``z`` [C, 1, H, W] re-imposed after each step."""
    seed_g = torch.Generator(device="cpu")
    seed_g.manual_seed(seed)
    noise = torch.randn(*SHAPE[1:], dtype=torch.float32, generator=seed_g)
    scheduler = official_scheduler("unipc", steps, shift)
    mask2 = torch.ones_like(noise)
    mask2[:, 0] = 0  # masks_like([noise], zero=True)[1][0]
    latent = (1. - mask2) * z + mask2 * noise
    for t in scheduler.timesteps:
        timestep = torch.stack([t])
        temp_ts = (mask2[0][:, ::2, ::2] * timestep).flatten()
        temp_ts = torch.cat([temp_ts, temp_ts.new_ones(SEQ_LEN - temp_ts.size(0)) * timestep])
        timestep = temp_ts.unsqueeze(0)
        cond = model([latent], t=timestep, context=[context[0]], seq_len=SEQ_LEN)[0]
        uncond = model([latent], t=timestep, context=[context_null[0]], seq_len=SEQ_LEN)[0]
        noise_pred = uncond + guide_scale * (cond - uncond)
        temp_x0 = scheduler.step(noise_pred.unsqueeze(0), t, latent.unsqueeze(0),
                                 return_dict=False, generator=seed_g)[0]
        latent = (1. - mask2) * z + mask2 * temp_x0.squeeze(0)
    return latent


@pytest.fixture(scope="module")
def contexts():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 1, 16, 4096, generator=gen).unbind(0)  # cond, uncond: [1, 16, 4096]


# fp32 throughout; the loops differ only in the solvers' coefficient rounding (official fp32,
# ours fp64) and, batched, in GEMM summation order (measured ≤ 1.5e-6 of max|x|).
def assert_close_to(ours, official):
    torch.testing.assert_close(ours, official, rtol=0, atol=5e-6 * official.abs().max().item())


@pytest.mark.parametrize("solver,batched", [("unipc", False), ("unipc", True), ("dpm++", False)])
def test_text2video_loop_matches_official(contexts, solver, batched):
    model = official_model(0)
    context, context_null = contexts
    expected = official_text2video_loop(model, model, 0.0, (5.0, 5.0), context, context_null,
                                        seed=42, steps=4, shift=5.0, solver=solver)
    ours = sample(Adapter(model), SHAPE, context=context, negative_context=context_null,
                  seed=42, steps=4, cfg=5.0, shift=5.0, sampler=solver, batched_cfg=batched)
    assert ours.shape == SHAPE and ours.dtype == torch.float32
    assert_close_to(ours[0], expected)


def test_a14b_loop_matches_official_two_expert_loop(contexts):
    """Steps at t = 999, 937 (≥ 875) run the high-noise expert with guidance 4, t = 833, 624 the
    low-noise expert with guidance 3; official tuple order is (low, high)."""
    high, low = official_model(0), official_model(1)
    context, context_null = contexts
    expected = official_text2video_loop(low, high, 0.875, (3.0, 4.0), context, context_null,
                                        seed=7, steps=4, shift=5.0)
    seen = {"high": [], "low": []}

    def recording(name, official):
        adapter = Adapter(official)

        def forward(x, t, context, **kw):
            seen[name].append(int(t[0]))
            return adapter(x, t, context, **kw)
        return forward

    ours = sample(recording("high", high), SHAPE, context=context, negative_context=context_null,
                  seed=7, steps=4, cfg=4.0, shift=5.0, low_noise_model=recording("low", low),
                  boundary=0.875, cfg_low=3.0, batched_cfg=False)
    assert_close_to(ours[0], expected)
    assert seen == {"high": [999, 999, 937, 937], "low": [833, 833, 624, 624]}


def test_ti2v_loop_matches_official(contexts):
    model = official_model(2)
    context, context_null = contexts
    z = torch.randn(SHAPE[1], 1, *SHAPE[3:], generator=torch.Generator().manual_seed(3))
    expected = official_ti2v_loop(model, z, 5.0, context, context_null, seed=5, steps=4, shift=5.0)
    ours = sample(Adapter(model), SHAPE, context=context, negative_context=context_null, seed=5,
                  steps=4, cfg=5.0, shift=5.0, first_frame=z[None], batched_cfg=False)
    assert_close_to(ours[0], expected)
    assert torch.equal(ours[:, :, :1], z[None])


class FakeModel:
    """Deterministic stand-in for the DiT that records what it is called with."""

    def __init__(self, nan_at_call=None):
        self.calls = []
        self.nan_at_call = nan_at_call

    def __call__(self, x, t, context, *, clip_fea=None, y=None):
        self.calls.append({"x": x.clone(), "t": t.clone(), "context": context.clone(),
                           "clip_fea": clip_fea, "y": y})
        t_last = (t if t.dim() == 1 else t[:, -1]).view(-1, 1, 1, 1, 1)
        v = 0.5 * torch.tanh(x) + context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + t_last / 1000
        if len(self.calls) == self.nan_at_call:
            v[0, 0, 0, 0, 0] = float("nan")
        return v


CTX = torch.linspace(-1, 1, 2 * 4 * 8).view(2, 4, 8)  # [B=2, L_text, D]; fake model: any D
NEG = torch.zeros(1, 4, 8)
FAKE_SHAPE = (2, 4, 3, 4, 6)


def run(model=None, **kw):
    args = dict(context=CTX, negative_context=NEG, seed=0, steps=4, cfg=3.0, shift=5.0)
    return sample(model or FakeModel(), FAKE_SHAPE, **{**args, **kw})


def test_noise_comes_from_a_cpu_generator_seeded_by_the_user():
    model = FakeModel()
    first = run(model, seed=123, batched_cfg=False)
    expected = torch.randn(FAKE_SHAPE, generator=torch.Generator().manual_seed(123))
    assert torch.equal(model.calls[0]["x"], expected)
    assert torch.equal(initial_noise(FAKE_SHAPE, 123), expected)
    assert torch.equal(run(seed=123), first)
    assert not torch.equal(run(seed=124), first)


@pytest.mark.parametrize("sampler", ["unipc", "dpm++", "euler"])
def test_model_sees_the_sampler_timesteps_as_float(sampler):
    model = FakeModel()
    run(model, sampler=sampler, cfg=1.0)
    expected = make_sampler(sampler, 4, 5.0).timesteps.float()
    assert [c["t"].dtype for c in model.calls] == [torch.float32] * 4
    assert torch.equal(torch.stack([c["t"] for c in model.calls]), expected[:, None].expand(4, 2))


def test_cfg_one_runs_only_the_conditional_pass():
    model = FakeModel()
    run(model, cfg=1.0, negative_context=None)
    assert len(model.calls) == 4 and all(torch.equal(c["context"], CTX) for c in model.calls)


def test_guidance_combines_cond_and_uncond():
    """One Euler step from σ0: x1 = x + (σ1 − σ0)·(v_u + g·(v_c − v_u))."""
    model = FakeModel()
    out = run(model, steps=1, sampler="euler", batched_cfg=False)
    x = model.calls[0]["x"]
    v_c, v_u = (FakeModel()(x, c["t"], c["context"]) for c in model.calls)
    s0 = make_sampler("euler", 1, 5.0).sigmas[0].item()
    torch.testing.assert_close(out, x - s0 * (v_u + 3.0 * (v_c - v_u)))


def test_batched_cfg_is_one_batch_2b_forward_with_the_same_result():
    model = FakeModel()
    batched = run(model, batched_cfg=True, clip_fea=torch.ones(1, 3, 5), y=torch.ones(2, 1, 3, 4, 6))
    assert [c["x"].shape[0] for c in model.calls] == [4] * 4
    call = model.calls[0]
    assert torch.equal(call["context"], torch.cat([CTX, NEG.expand(2, 4, 8)]))
    assert call["clip_fea"].shape == (4, 3, 5) and call["y"].shape == (4, 1, 3, 4, 6)
    assert torch.equal(batched, run(batched_cfg=False))


def test_auto_batching_falls_back_to_two_passes_after_out_of_memory():
    class OOMOnPairs(FakeModel):
        def __call__(self, x, t, context, **kw):
            if x.shape[0] == 2 * FAKE_SHAPE[0]:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().__call__(x, t, context, **kw)

    model = OOMOnPairs()
    assert torch.equal(run(model, batched_cfg="auto"), run(batched_cfg=False))
    assert len(model.calls) == 8  # every step ran cond and uncond separately
    with pytest.raises(torch.OutOfMemoryError):
        run(OOMOnPairs(), batched_cfg=True)


def test_expert_switch_uses_the_low_noise_guidance():
    """boundary 0.875 with steps 4 / shift 5 (t = 999, 937, 833, 624): the high-noise model runs
    twice per step with cfg; the low-noise one once per step because cfg_low = 1."""
    high, low = FakeModel(), FakeModel()
    run(high, low_noise_model=low, boundary=0.875, cfg=4.0, cfg_low=1.0, batched_cfg=False)
    assert [int(c["t"][0]) for c in high.calls] == [999, 999, 937, 937]
    assert [int(c["t"][0]) for c in low.calls] == [833, 624]


def test_ti2v_first_frame_is_clean_every_step_and_its_tokens_get_timestep_zero():
    model = FakeModel()
    first = torch.randn(2, 4, 1, 4, 6, generator=torch.Generator().manual_seed(9))
    out = run(model, first_frame=first, batched_cfg=False)
    tokens_per_frame = (4 // 2) * (6 // 2)
    for call, t in zip(model.calls[::2], make_sampler("unipc", 4, 5.0).timesteps.tolist()):
        assert torch.equal(call["x"][:, :, :1], first)
        assert call["t"].shape == (2, 3 * tokens_per_frame)
        assert (call["t"][:, :tokens_per_frame] == 0).all()
        assert (call["t"][:, tokens_per_frame:] == t).all()
    assert torch.equal(out[:, :, :1], first)


def test_callback_reports_every_step_with_the_clean_estimate():
    reports = []
    run(callback=lambda step, total, x0: reports.append((step, total, x0.shape)))
    assert reports == [(i, 4, FAKE_SHAPE) for i in range(1, 5)]


def test_interrupt_stops_before_the_next_model_call():
    class Interrupted(Exception):
        pass

    model, checks = FakeModel(), []

    def interrupt():
        checks.append(len(model.calls))
        if len(checks) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(model, interrupt=interrupt, batched_cfg=False)
    assert checks == [0, 2, 4] and len(model.calls) == 4


def test_nan_latent_names_the_step():
    with pytest.raises(NonFiniteLatentError, match=r"NaN/inf at step 3 of 4 \(t=833\)"):
        run(FakeModel(nan_at_call=3), cfg=1.0)


def test_denoise_starts_from_the_noised_latent_on_the_tail_of_the_ladder():
    model = FakeModel()
    start = torch.full(FAKE_SHAPE, 0.25)
    run(model, latent=start, denoise=0.5, cfg=1.0, steps=8)
    tail = make_sampler("unipc", 8, 5.0).timesteps[4:]
    assert [int(c["t"][0]) for c in model.calls] == tail.tolist()
    sigma = make_sampler("unipc", 8, 5.0, denoise=0.5).sigmas[0].item()
    expected = (1 - sigma) * start + sigma * initial_noise(FAKE_SHAPE, 0)
    torch.testing.assert_close(model.calls[0]["x"], expected)


@pytest.mark.parametrize("kwargs,match", [
    (dict(negative_context=None), r"negative_context is required for guidance scales \[3.0\]"),
    (dict(boundary=0.875), "low_noise_model and boundary go together"),
    (dict(low_noise_model=FakeModel()), "low_noise_model and boundary go together"),
    (dict(context=torch.zeros(3, 4, 8)), "context has batch 3, the latent has batch 2"),
    (dict(first_frame=torch.zeros(2, 4, 2, 4, 6)), r"first_frame has shape \(2, 4, 2, 4, 6\)"),
    (dict(latent=torch.zeros(1, 4, 3, 4, 6)), r"latent has shape \(1, 4, 3, 4, 6\)"),
    (dict(denoise=0.5), "denoise=0.5 needs a start latent"),
    (dict(batched_cfg="yes"), "batched_cfg must be True, False or 'auto'"),
    (dict(sampler="ddim"), "sampler 'ddim' is unknown"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(**kwargs)
