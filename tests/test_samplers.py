"""Flow samplers vs the official Wan schedulers (``wan/utils/fm_solvers_unipc.py``,
``wan/utils/fm_solvers.py``), constructed exactly as ``wan/text2video.py`` does."""

import pytest
import torch

from reference import official_scheduler
from wanrt.wan_core.samplers import make_sampler

CASES = [(1, 5.0), (2, 5.0), (4, 5.0), (10, 3.0), (50, 5.0), (40, 12.0), (50, 16.0), (7, 1.0)]


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
@pytest.mark.parametrize("steps,shift", CASES)
def test_ladder_equals_official_bit_for_bit(name, steps, shift):
    official, ours = official_scheduler(name, steps, shift), make_sampler(name, steps, shift)
    assert ours.timesteps.dtype == torch.int64 and torch.equal(ours.timesteps, official.timesteps)
    assert ours.sigmas.dtype == torch.float32 and torch.equal(ours.sigmas, official.sigmas)


# wan_formats.md §7.3, computed from the official code.
@pytest.mark.parametrize("steps,shift,first,last,sigma0,sigma_last", [
    (50, 5.0, [999, 995, 991, 987, 982], [356, 302, 241, 172, 92], 0.99979985, 0.09250686),
    (40, 3.0, [999, 991, 982, 973, 963], [299, 249, 195, 136, 71], 0.99966645, 0.07136054),
    (40, 12.0, [999, 997, 995, 993, 990], [631, 571, 492, 386, 235], 0.99991661, 0.23510954),
    (50, 16.0, [999, 998, 997, 995, 994], [639, 581, 504, 399, 245], 0.99993742, 0.24596445),
])
def test_unipc_reference_vectors(steps, shift, first, last, sigma0, sigma_last):
    sampler = make_sampler("unipc", steps, shift)
    assert sampler.timesteps[:5].tolist() == first and sampler.timesteps[-5:].tolist() == last
    assert sampler.sigmas[0].item() == pytest.approx(sigma0, abs=1e-8)
    assert sampler.sigmas[-2].item() == pytest.approx(sigma_last, abs=1e-8)
    assert sampler.sigmas[-1].item() == 0.0


def test_dpm_ladder_starts_at_one():
    sampler = make_sampler("dpm++", 50, 5.0)
    assert sampler.sigmas[0].item() == 1.0 and sampler.timesteps[0].item() == 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["unipc", "dpm++"])
@pytest.mark.parametrize("steps,shift", CASES)
def test_steps_equal_official_on_random_velocities(name, steps, shift, dtype):
    """Every intermediate sample of a full run matches ``scheduler.step``.

    Tolerance 2e-6 relative to max|x|: the official computes its step coefficients in float32,
    we in float64 (measured ≤ 9e-7 over 50 steps). DPM++ also upcasts/rounds the sample to fp32.
    """
    official, ours = official_scheduler(name, steps, shift), make_sampler(name, steps, shift)
    gen = torch.Generator().manual_seed(steps)
    x = torch.randn(1, 4, 2, 3, 3, generator=gen, dtype=dtype)
    x_official = x.clone()
    for t in official.timesteps:
        v = torch.randn(x.shape, generator=gen, dtype=dtype)
        x_official = official.step(v, t, x_official, return_dict=False)[0]
        x = ours.step(v, x)
        assert x.dtype == dtype
        torch.testing.assert_close(x, x_official, rtol=0, atol=2e-6 * x_official.abs().max().item())
    assert ours.step_index == steps


@pytest.mark.parametrize("name", ["unipc", "dpm++", "euler"])
def test_exact_velocity_field_lands_on_the_data_point(name):
    """For a single data point x0 the true flow is v = (x − x0)/σ (straight paths); every solver
    integrates a straight path exactly, so the run must end at x0."""
    gen = torch.Generator().manual_seed(0)
    x0, x = torch.randn(2, 1, 4, 2, 3, 3, generator=gen, dtype=torch.float64)
    sampler = make_sampler(name, 6, 5.0)
    for _ in sampler.timesteps:
        x = sampler.step((x - x0) / sampler.sigma, x)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-12)


def test_euler_is_a_plain_flow_step():
    sampler = make_sampler("euler", 3, 5.0)
    x, v = torch.ones(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 2.0)
    s0, s1 = sampler.sigmas[:2].tolist()
    assert sampler.step(v, x).item() == pytest.approx(1.0 + (s1 - s0) * 2.0)
    assert torch.equal(sampler.timesteps, make_sampler("unipc", 3, 5.0).timesteps)


def test_denoise_runs_the_tail_of_the_full_ladder():
    full, half = make_sampler("unipc", 10, 5.0), make_sampler("unipc", 10, 5.0, denoise=0.55)
    assert torch.equal(half.timesteps, full.timesteps[5:])
    assert torch.equal(half.sigmas, full.sigmas[5:])


def test_stepping_past_the_end_is_an_error():
    sampler = make_sampler("euler", 1, 1.0)
    x = torch.zeros(1, 1, 1, 1, 1)
    sampler.step(x, x)
    with pytest.raises(IndexError, match="1 steps are done"):
        sampler.step(x, x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="ddim", steps=4, shift=5.0), "sampler 'ddim' is unknown; valid names: unipc, dpm"),
    (dict(name="unipc", steps=0, shift=5.0), "steps must be a positive integer"),
    (dict(name="unipc", steps=2.5, shift=5.0), "steps must be a positive integer"),
    (dict(name="unipc", steps=4, shift=0.0), "shift must be > 0"),
    (dict(name="unipc", steps=4, shift=5.0, denoise=1.5), r"denoise must be in \(0, 1\]"),
    (dict(name="unipc", steps=4, shift=5.0, denoise=0.1), "leaves none of the 4 steps"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sampler(**kwargs)
