"""Flow-matching samplers as Wan runs them: the official σ ladders and the UniPC, DPM++ 2M and
Euler solvers (no diffusers at runtime).

Flow matching: ``x_σ = (1 − σ)·x0 + σ·ε``; the model predicts the velocity ``v = ε − x0``, so the
clean estimate is ``x0 = x − σ·v``. The multistep solvers integrate in ``λ = log((1 − σ)/σ)``
(log signal-to-noise ratio) on data predictions, like the official
``wan/utils/fm_solvers_unipc.py`` (``FlowUniPCMultistepScheduler``: order 2, ``bh2``,
``predict_x0``, ``lower_order_final``, corrector from step 2, final σ 0) and
``wan/utils/fm_solvers.py`` (``FlowDPMSolverMultistepScheduler``: ``dpmsolver++``, order 2,
``midpoint``, final σ 0). Both use first order on their first and last step.

Step coefficients are Python floats (float64) computed from the float32 σ ladder, so no float64
tensor ever reaches the device (MPS and MUSA have none).

    sampler = make_sampler("unipc", steps=50, shift=5.0)
    for t in sampler.timesteps:          # int64, what the DiT sees
        x = sampler.step(model(x, t), x)  # v -> next sample; history kept inside
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
# The official schedulers start from a 1000-entry float32 table whose largest σ is 1 − 1/1000.
SIGMA_MAX = float(np.float32(1 - 1 / NUM_TRAIN_TIMESTEPS))


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Wan's time shift ``σ' = shift·σ / (1 + (shift − 1)·σ)`` (more steps at high noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    """UniPC / Euler ladder ``[steps]`` float64: ``linspace(0.999, 0, steps + 1)[:-1]``, shifted."""
    return shift_sigmas(np.linspace(SIGMA_MAX, 0.0, steps + 1)[:-1], shift)


def dpm_sigmas(steps: int, shift: float) -> np.ndarray:
    """DPM++ ladder ``[steps]`` float64 (official ``get_sampling_sigmas``): starts at exactly 1."""
    return shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:steps], shift)


def log_snr(sigma: float) -> float:
    """``λ = log(1 − σ) − log σ``; +inf at σ = 0 (clean), −inf at σ = 1 (pure noise)."""
    if sigma == 0.0:
        return math.inf
    if sigma == 1.0:
        return -math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


# --- solver updates (stateless; x0 = data predictions, σ as Python floats) -------------------

def euler_update(x: Tensor, v: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """Flow Euler: ``x + (σ_next − σ)·v``."""
    return x + (sigma_next - sigma) * v


def dpmpp_2m_update(x: Tensor, x0: Tensor, x0_prev: Tensor | None, sigma_prev: float | None,
                    sigma: float, sigma_next: float) -> Tensor:
    """DPM-Solver++(2M), midpoint form; first order when ``x0_prev`` is None.

    ``x' = (σ'/σ)·x − α'(e^−h − 1)·(D0 + D1/2)`` with ``h = λ' − λ``, ``D0 = x0``,
    ``D1 = (x0 − x0_prev)·h / (λ − λ_prev)``.
    """
    h = log_snr(sigma_next) - log_snr(sigma)
    scale = (1.0 - sigma_next) * math.expm1(-h)  # α'(e^−h − 1)
    d = x0
    if x0_prev is not None:  # λ_prev = −inf at σ = 1 makes the correction vanish, as officially
        r = (log_snr(sigma) - log_snr(sigma_prev)) / h
        d = x0 + (0.5 / r) * (x0 - x0_prev)
    return (sigma_next / sigma) * x - scale * d


def unipc_predict(x: Tensor, x0: Tensor, x0_prev: Tensor | None, sigma_prev: float | None,
                  sigma: float, sigma_next: float) -> Tensor:
    """UniP-2 (B(h) = e^−h − 1, data prediction); UniP-1 when ``x0_prev`` is None.

    ``x' = (σ'/σ)·x − α'·B(h)·(x0 + ½·D1)`` with ``h = λ' − λ``,
    ``D1 = (x0_prev − x0)·h / (λ_prev − λ)``.
    """
    h = log_snr(sigma_next) - log_snr(sigma)
    b_h = (1.0 - sigma_next) * math.expm1(-h)  # α'·B(h); φ1 equals B(h) for bh2
    d = x0
    if x0_prev is not None:
        rk = (log_snr(sigma_prev) - log_snr(sigma)) / h
        d = x0 + (0.5 / rk) * (x0_prev - x0)
    return (sigma_next / sigma) * x - b_h * d


def unipc_correct(x_prev: Tensor, x0: Tensor, x0_prev: Tensor, x0_prev2: Tensor | None,
                  sigma_prev2: float | None, sigma_prev: float, sigma: float) -> Tensor:
    """UniC: redo the step ``σ_prev → σ`` from ``x_prev`` using the new data prediction ``x0``
    (made at σ); ``x0_prev`` was made at σ_prev. Order 2 with ``x0_prev2`` (at σ_prev2), else 1.

    ``x_c = (σ/σ_prev)·x_prev − α·B(h)·(x0_prev + ρ0·D1 + ρ1·(x0 − x0_prev))``, where
    ``D1 = (x0_prev2 − x0_prev)/r``, ``r = (λ_prev2 − λ_prev)/h`` and ``ρ`` solves
    ``[[1, 1], [r, 1]]·ρ = [b1, b2]``, ``b_k = k!·φ_k(−h)/B(h)``; order 1: ``ρ1 = ½``.
    """
    h = log_snr(sigma) - log_snr(sigma_prev)
    hh = -h
    b_h = math.expm1(hh)
    d = x0_prev
    if x0_prev2 is None:
        rho_new = 0.5
    else:
        r = (log_snr(sigma_prev2) - log_snr(sigma_prev)) / h
        phi_1 = b_h / hh - 1.0
        b1 = phi_1 / b_h
        b2 = 2.0 * (phi_1 / hh - 0.5) / b_h
        rho_old = (b1 - b2) / (1.0 - r)
        rho_new = b1 - rho_old
        d = d + (rho_old / r) * (x0_prev2 - x0_prev)
    d = d + rho_new * (x0 - x0_prev)
    return (sigma / sigma_prev) * x_prev - (1.0 - sigma) * b_h * d


# --- samplers: a ladder plus multistep history ------------------------------------------------

class FlowSampler:
    """One denoising run over a σ ladder. ``timesteps`` [N] int64 (``σ·1000`` truncated, what
    the model sees), ``sigmas`` [N + 1] float32 ending in 0; ``step(v, x)`` advances by one."""

    def __init__(self, ladder: np.ndarray):
        self.timesteps = torch.from_numpy(ladder * NUM_TRAIN_TIMESTEPS).to(torch.int64)
        self.sigmas = torch.from_numpy(np.append(ladder, 0.0).astype(np.float32))
        self._sigma = self.sigmas.tolist()
        self.step_index = 0

    def __len__(self) -> int:
        return len(self.timesteps)

    @property
    def sigma(self) -> float:
        """σ of the next step."""
        return self._sigma[self.step_index]

    def denoised(self, velocity: Tensor, sample: Tensor) -> Tensor:
        """The clean estimate ``x0 = x − σ·v`` at the current step (also a preview)."""
        return sample - self.sigma * velocity

    def step(self, velocity: Tensor, sample: Tensor) -> Tensor:
        """Velocity [B, C, F, H, W] at the current σ and the sample → sample at the next σ."""
        if self.step_index >= len(self):
            raise IndexError(f"all {len(self)} steps are done")
        out = self._update(self.step_index, sample, velocity)
        self.step_index += 1
        return out

    def _order(self, i: int) -> int:
        """Second order except on the first and the last step (``lower_order_final``)."""
        return 1 if i == 0 or i == len(self) - 1 else 2

    def _update(self, i: int, x: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError


class EulerSampler(FlowSampler):
    """Flow Euler on the UniPC ladder (not an official Wan solver)."""

    def _update(self, i, x, v):
        return euler_update(x, v, self._sigma[i], self._sigma[i + 1])


class DPMPP2MSampler(FlowSampler):
    """Official ``FlowDPMSolverMultistepScheduler`` (dpmsolver++, order 2, midpoint)."""

    def __init__(self, ladder: np.ndarray):
        super().__init__(ladder)
        self._x0_prev: Tensor | None = None

    def _update(self, i, x, v):
        x0 = self.denoised(v, x)
        s = self._sigma
        second = self._order(i) == 2
        out = dpmpp_2m_update(x, x0, self._x0_prev if second else None,
                              s[i - 1] if second else None, s[i], s[i + 1])
        self._x0_prev = x0
        return out


class UniPCSampler(FlowSampler):
    """Official ``FlowUniPCMultistepScheduler`` (UniP-2 + UniC, bh2, data prediction)."""

    def __init__(self, ladder: np.ndarray):
        super().__init__(ladder)
        self._x0s: list[Tensor] = []  # the last two data predictions, oldest first
        self._x_prev: Tensor | None = None  # sample the previous predictor started from
        self._prev_order = 0

    def _update(self, i, x, v):
        x0 = self.denoised(v, x)
        s = self._sigma
        if i > 0:
            second = self._prev_order == 2
            x = unipc_correct(self._x_prev, x0, self._x0s[-1], self._x0s[-2] if second else None,
                              s[i - 2] if second else None, s[i - 1], s[i])
        self._x0s = [*self._x0s[-1:], x0]
        order = self._order(i)
        second = order == 2
        out = unipc_predict(x, x0, self._x0s[0] if second else None,
                            s[i - 1] if second else None, s[i], s[i + 1])
        self._x_prev, self._prev_order = x, order
        return out


SAMPLERS = {"unipc": (UniPCSampler, unipc_sigmas),
            "dpm++": (DPMPP2MSampler, dpm_sigmas),
            "euler": (EulerSampler, unipc_sigmas)}


def make_sampler(name: str, steps: int, shift: float, *, denoise: float = 1.0) -> FlowSampler:
    """A fresh sampler ``name`` (``unipc`` — Wan's default —, ``dpm++`` or ``euler``) over the
    official ladder for ``steps`` and ``shift``. ``denoise < 1`` keeps only the last
    ``int(steps·denoise)`` steps of that ladder (img2img-style partial denoising)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is unknown; valid names: {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise!r}")
    kept = int(steps * denoise)
    if kept == 0:
        raise ValueError(f"denoise={denoise} leaves none of the {steps} steps to run")
    cls, ladder = SAMPLERS[name]
    return cls(ladder(steps, shift)[steps - kept:])
