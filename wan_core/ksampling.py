"""ComfyUI's KSampler semantics on a flow-matching denoiser, for ComfyUI-native Wan workflows.

The model is a *denoiser* ``denoise(x, sigma) -> x0`` (``x [B, C, F, H, W]``, ``sigma [B]``):
for Wan's CONST flow prediction ``x0 = x − σ·v(x, 1000·σ)``. Sigmas follow ComfyUI's
``ModelSamplingDiscreteFlow`` (1000 discrete σ, ``σ(t) = shift·t / (1 + (shift − 1)·t)``) and its
schedulers; the samplers are the k-diffusion / UniPC algorithms ComfyUI runs, written in σ space
with the CONST noise scaling. Seeded noise comes from the generators ComfyUI seeds, so a seed
gives ComfyUI's latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor], None]  # (step index from 0, denoised)

SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "beta", "normal")
# Samplers that ComfyUI gives one extra step and then drops the penultimate σ.
DISCARD_PENULTIMATE = frozenset({"uni_pc", "uni_pc_bh2"})


class FlowSampling:
    """ComfyUI's ``ModelSamplingDiscreteFlow`` with ``multiplier=1000`` (what ModelSamplingSD3 sets)."""

    def __init__(self, shift: float = 8.0, timesteps: int = 1000, multiplier: float = 1000.0):
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)

    def sigma(self, timestep: Tensor) -> Tensor:
        t = timestep / self.multiplier
        return t if self.shift == 1.0 else self.shift * t / (1 + (self.shift - 1) * t)

    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma * self.multiplier

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        t = 1.0 - percent
        return self.shift * t / (1 + (self.shift - 1) * t)

    @staticmethod
    def noise_scaling(sigma: Tensor, noise: Tensor, latent: Tensor) -> Tensor:
        """The sample at ``sigma``: ``σ·noise + (1 − σ)·latent``."""
        return sigma * noise + (1.0 - sigma) * latent

    @staticmethod
    def inverse_noise_scaling(sigma: Tensor, latent: Tensor) -> Tensor:
        return latent / (1.0 - sigma)


# --- schedulers: (sampling, steps) -> [steps + 1] descending σ ending in 0 ---------------------

def _simple(s: FlowSampling, steps: int) -> Tensor:
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def _normal(s: FlowSampling, steps: int, sgm: bool = False) -> Tensor:
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    sigmas = [float(s.sigma(t)) for t in timesteps]
    return torch.FloatTensor(sigmas + ([0.0] if append_zero else []))


def _karras(s: FlowSampling, steps: int, rho: float = 7.0) -> Tensor:
    ramp = torch.linspace(0, 1, steps)
    lo, hi = float(s.sigma_min) ** (1 / rho), float(s.sigma_max) ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def _exponential(s: FlowSampling, steps: int) -> Tensor:
    sigmas = torch.linspace(math.log(float(s.sigma_max)), math.log(float(s.sigma_min)), steps).exp()
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _beta(s: FlowSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    import numpy as np
    try:
        from scipy.stats import beta as beta_distribution
    except ImportError as e:
        raise ImportError("the beta scheduler needs SciPy: pip install scipy") from e
    total = len(s.sigmas) - 1
    ts = np.rint(beta_distribution.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigmas, last = [], -1
    for t in ts:
        if t != last:
            sigmas.append(float(s.sigmas[int(t)]))
        last = t
    return torch.FloatTensor(sigmas + [0.0])


_SCHEDULER_FUNCTIONS = {"simple": _simple, "sgm_uniform": lambda s, n: _normal(s, n, sgm=True),
                        "karras": _karras, "exponential": _exponential, "beta": _beta,
                        "normal": _normal}


def calculate_sigmas(sampling: FlowSampling, scheduler: str, steps: int) -> Tensor:
    """``[steps + 1]`` σ of ``scheduler`` (ComfyUI's ``calculate_sigmas``)."""
    if scheduler not in _SCHEDULER_FUNCTIONS:
        raise ValueError(f"unknown scheduler {scheduler!r}; supported: {', '.join(SCHEDULERS)}")
    return _SCHEDULER_FUNCTIONS[scheduler](sampling, steps)


def ksampler_sigmas(sampling: FlowSampling, scheduler: str, sampler: str, steps: int,
                    denoise: float = 1.0) -> Tensor:
    """The σ a KSampler runs: one extra step then the penultimate dropped for UniPC, and for
    ``denoise < 1`` the last ``steps + 1`` of a ``steps / denoise`` schedule."""
    def full(n: int) -> Tensor:
        if sampler in DISCARD_PENULTIMATE:
            sigmas = calculate_sigmas(sampling, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(sampling, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return full(int(steps / denoise))[-(steps + 1):]


# --- noise ---------------------------------------------------------------------------------------

def prepare_noise(latent: Tensor, seed: int) -> Tensor:
    """ComfyUI's ``prepare_noise``: float32 normal noise of the latent's shape from the CPU
    generator seeded with ``seed``, in the latent's dtype."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(latent.size(), dtype=torch.float32, generator=generator).to(latent.dtype)


def step_noise(x: Tensor, seed: int | None) -> Callable[[], Tensor]:
    """The ancestral samplers' per-step noise (k-diffusion ``default_noise_sampler``): a generator
    on ``x``'s device seeded with ``seed`` (``seed + 1`` on the CPU, as ComfyUI does)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed + 1 if x.device.type == "cpu" else seed)
    return lambda: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)


def brownian_noise(x: Tensor, sigmas: Tensor, seed: int | None) -> Callable[[Tensor, Tensor], Tensor]:
    """The SDE samplers' noise: a torchsde Brownian tree on the CPU over ``[σ_min, σ_max]``
    (k-diffusion ``BrownianTreeNoiseSampler``), normalised per step."""
    try:
        import torchsde
    except ImportError as e:
        raise ImportError("the dpmpp_2m_sde sampler needs torchsde: pip install torchsde") from e
    t0, t1 = sigmas[sigmas > 0].min().cpu(), sigmas.max().cpu()
    seed = torch.randint(0, 2 ** 63 - 1, ()).item() if seed is None else seed
    tree = torchsde.BrownianTree(t0, torch.zeros_like(x).cpu(), t1, entropy=seed)

    def noise(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        w = tree(lo.cpu().float(), hi.cpu().float()).to(x.device, x.dtype) * sign
        return w / (b - a).abs().sqrt()
    return noise


# --- samplers: (denoise, x, sigmas, seed, callback) -> x -----------------------------------------

def _s_in(x: Tensor) -> Tensor:
    return x.new_ones([x.shape[0]])


def _to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    return (x - denoised) / sigma


def sample_euler(denoise, x, sigmas, seed=None, callback=None):
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(denoise, x, sigmas, seed=None, callback=None, eta=1.0):
    """ComfyUI's rectified-flow variant (``sample_euler_ancestral_RF``), used for CONST models."""
    noise = step_noise(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down = sigmas[i + 1] * (1 + (sigmas[i + 1] / sigmas[i] - 1) * eta)
        alpha_next, alpha_down = 1 - sigmas[i + 1], 1 - sigma_down
        renoise = (sigmas[i + 1] ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = (alpha_next / alpha_down) * x + noise() * renoise
    return x


def sample_dpmpp_2m(denoise, x, sigmas, seed=None, callback=None):
    def t_fn(sigma):
        return sigma.log().neg()
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is not None and sigmas[i + 1] != 0:
            r = (t - t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_dpmpp_2m_sde(denoise, x, sigmas, seed=None, callback=None, sampling=None, eta=1.0):
    """DPM-Solver++(2M) SDE, midpoint, with flow half-log-SNR ``log((1 − σ)/σ)``."""
    if len(sigmas) <= 1:
        return x
    noise = brownian_noise(x, sigmas, seed)
    if sigmas[0] >= 1 and len(sigmas) > 1:  # ComfyUI's offset_first_sigma_for_snr
        sigmas = sigmas.clone()
        sigmas[0] = sampling.percent_to_sigma(1e-4)
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = sigmas[i].logit().neg(), sigmas[i + 1].logit().neg()
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        old_denoised, h_last = denoised, h
    return x


def sample_lcm(denoise, x, sigmas, seed=None, callback=None):
    noise = step_noise(x, seed)
    for i in range(max(1, len(sigmas) - 1)):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = FlowSampling.noise_scaling(sigmas[i + 1], noise(), x)
    return x


def sample_res_multistep(denoise, x, sigmas, seed=None, callback=None):
    """RES 2nd-order multistep (arXiv 2308.02157), deterministic (eta 0)."""
    def t_fn(sigma):
        return sigma.log().neg()

    def phi1(t):
        return torch.expm1(t) / t

    def phi2(t):
        return (phi1(t) - 1.0) / t
    old_sigma, old_denoised = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * _s_in(x))
        if callback is not None:
            callback(i, denoised)
        sigma_down = sigmas[i + 1]
        if sigma_down == 0 or old_denoised is None:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            x = (-h).exp() * x + h * (b1 * denoised + b2 * old_denoised)
        old_denoised, old_sigma = denoised, sigma_down
    return x


def _vp_log_alpha(sigma: Tensor) -> Tensor:
    """UniPC's view of σ as a variance-exploding noise level: ``log α = ½·log(1 / (σ² + 1))``."""
    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _vp_std(sigma: Tensor) -> Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * _vp_log_alpha(sigma)))


def _vp_lambda(sigma: Tensor) -> Tensor:
    log_alpha = _vp_log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def sample_uni_pc(denoise, x, sigmas, seed=None, callback=None, variant="bh1"):
    """UniPC multistep (order ≤ 3, data prediction, lower order at the end) as ComfyUI runs it:
    σ mapped to a VP schedule with ``α = 1/√(σ² + 1)``, the final σ 0 taken as 0.001."""
    timesteps = sigmas
    if sigmas[-1] == 0:  # in place, as ComfyUI: the caller's final σ reads 0.001 afterwards too
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)

    def model_x0(x_vp: Tensor, t: Tensor) -> Tensor:
        sigma = t.view(t.shape[:1] + (1,) * (x_vp.ndim - 1))
        scaled = x_vp * ((sigma ** 2 + 1.0) ** 0.5)
        eps = (scaled - denoise(scaled, t)) / sigma
        alpha, std = torch.exp(_vp_log_alpha(t)), _vp_std(t)
        return (x_vp - std.view_as(sigma) * eps) / alpha.view_as(sigma)

    steps = len(timesteps) - 1
    order = min(3, len(timesteps) - 2)
    vec = lambda k: timesteps[k].expand(x.shape[0])  # noqa: E731
    models, ts = [model_x0(x, vec(0))], [vec(0)]
    for step_index in range(steps):
        if step_index == 0:
            pass  # the model was evaluated at timesteps[0] above
        elif step_index < order:
            x, model_t = _uni_pc_update(model_x0, x, models, ts, vec(step_index), step_index, variant, True)
            models.append(model_t if model_t is not None else model_x0(x, vec(step_index)))
            ts.append(vec(step_index))
        elif step_index >= order:
            last = step_index + (2 if step_index == steps - 1 else 1)
            for step in range(step_index, last):
                step_order = min(order, steps + 1 - step)
                x, model_t = _uni_pc_update(model_x0, x, models, ts, vec(step), step_order, variant,
                                            step != steps)
                models, ts = models[1:] + models[-1:], ts[1:] + [vec(step)]
                if step < steps:
                    models[-1] = model_t if model_t is not None else model_x0(x, vec(step))
        if callback is not None:
            callback(step_index, models[-1])
    return x / torch.exp(_vp_log_alpha(timesteps[-1]))


def _uni_pc_update(model_x0, x, models, ts, t, order, variant, use_corrector):
    """One UniPC B(h) predictor(-corrector) step from ``ts[-1]`` to ``t`` (data prediction)."""
    lambda_prev, lambda_t = _vp_lambda(ts[-1]), _vp_lambda(t)
    model_prev = models[-1]
    sigma_prev, sigma_t = _vp_std(ts[-1]), _vp_std(t)
    alpha_t = torch.exp(_vp_log_alpha(t))
    h = lambda_t - lambda_prev
    rks, d1s = [], []
    for i in range(1, order):
        rk = ((_vp_lambda(ts[-(i + 1)]) - lambda_prev) / h)[0]
        rks.append(rk)
        d1s.append((models[-(i + 1)] - model_prev) / rk)
    rks.append(1.0)
    rks = torch.tensor(rks, device=x.device)
    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    r_rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        r_rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_mat, b = torch.stack(r_rows), torch.tensor(b, device=x.device)
    d1s = torch.stack(d1s, dim=1) if d1s else None
    rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(r_mat, b)

    def bcast(v):
        return v[(...,) + (None,) * (x.dim() - 1)]
    x_t_ = bcast(sigma_t / sigma_prev) * x - bcast(alpha_t * h_phi_1) * model_prev
    pred = 0
    if d1s is not None:
        rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
        pred = torch.tensordot(d1s, rhos_p, dims=([1], [0]))
    x_t = x_t_ - bcast(alpha_t * b_h) * pred
    model_t = None
    if use_corrector:
        model_t = model_x0(x_t, t)
        corr = torch.tensordot(d1s, rhos_c[:-1], dims=([1], [0])) if d1s is not None else 0
        x_t = x_t_ - bcast(alpha_t * b_h) * (corr + rhos_c[-1] * (model_t - model_prev))
    return x_t, model_t


SAMPLERS: dict[str, Callable] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": lambda *a, **k: sample_uni_pc(*a, **k, variant="bh2"),
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "lcm": sample_lcm,
    "res_multistep": sample_res_multistep,
}


def run_sampler(name: str, denoise: Denoiser, x: Tensor, sigmas: Tensor, *, sampling: FlowSampling,
                seed: int | None, callback: StepCallback | None = None) -> Tensor:
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is not supported; supported: {', '.join(SAMPLERS)}")
    kwargs = {"sampling": sampling} if name == "dpmpp_2m_sde" else {}
    return SAMPLERS[name](denoise, x, sigmas, seed=seed, callback=callback, **kwargs)


@torch.no_grad()
def ksample(denoise: Denoiser, sampling: FlowSampling, latent: Tensor, noise: Tensor, sigmas: Tensor,
            *, sampler: str, seed: int | None, start_step: int | None = None,
            last_step: int | None = None, force_full_denoise: bool = False,
            callback: StepCallback | None = None) -> Tensor:
    """ComfyUI's ``KSampler.sample`` + ``CFGGuider.inner_sample`` + ``KSAMPLER.sample`` on a
    *normalised* latent (``process_latent_in`` applied by the caller; all-zero stays zero):
    cut σ at ``start_step`` / ``last_step`` (σ_last → 0 with ``force_full_denoise``), noise the
    latent to σ_0, run the sampler, undo the leftover-noise scaling. Returns the normalised latent."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return latent
    if sigmas.shape[-1] == 0:
        return latent
    sigmas = sigmas.to(latent.device, copy=True)
    x = sampling.noise_scaling(sigmas[0], noise.to(latent.device), latent)
    x = run_sampler(sampler, denoise, x, sigmas, sampling=sampling, seed=seed, callback=callback)
    return sampling.inverse_noise_scaling(sigmas[-1], x).float()
