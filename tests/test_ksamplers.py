"""k-diffusion's samplers: the closed forms of :mod:`specsched.theory.kclosed` against the real code.

Every ``sample_*`` function of k-diffusion 0.1.1.post1 (``sampling.py``, loaded without the
package ``__init__`` by :func:`load_k_diffusion_sampling`) is driven with the exact Wiener
denoiser of ``N(m, diag(lambda))`` in VE form, ``D(x, sigma) = m + (x - m) lambda /
(lambda + sigma^2)``, in torch float64 (docs/theory.md section 3):

- the samplers are affine in the start and in the noise draws, so one batched run on probe
  inputs gives the exact law: row 0 starts at ``sigma_0 * 1`` with no noise (the transfer
  function H), row ``c + 1`` starts at 0 and receives a unit draw at the noise hook's call
  ``c`` only (that draw's coefficient). The variance is ``H^2 sigma_0^2 + c^T R c`` with
  ``R`` the draws' covariance: the identity for independent draws, the overlap of the
  intervals ``[sigma_next, sigma]`` the hook was called with for the Brownian motion of
  ``BrownianTreeNoiseSampler``, computed here from the recorded calls;
- with k-diffusion's own noise (``torch.randn_like``, ``BrownianTreeNoiseSampler`` over
  torchsde): Monte Carlo, sample mean and variance within 3 standard errors;
- identities (``euler`` = ``ddim-ve``, ``euler-ancestral`` = ``ddpm-ve``), the gradient
  against central differences, and hypothesis properties of the deterministic samplers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.errors import InputError
from specsched.schedules.kdiffusion import load_k_diffusion_sampling
from specsched.testing import schedules, spectra
from specsched.theory import closed_form
from specsched.theory.kclosed import (
    kclosed_form,
    kclosed_form_vjp,
    resolve_options,
    sigmas_from_alphas_cumprod,
)
from specsched.theory.ksolvers import KSAMPLERS
from specsched.theory.losses import loss_value_and_partials

torch = pytest.importorskip("torch", reason="k-diffusion's samplers are torch code")
try:
    K = load_k_diffusion_sampling()
except InputError as exc:  # not installed, or a module sampling.py imports is missing
    pytest.skip(f"k-diffusion's sampling.py cannot be loaded: {exc}", allow_module_level=True)

RTOL = 1e-8
LAM = np.geomspace(1e-4, 50.0, 9)  # data variances spanning 1e-4 .. 50
MEAN = np.linspace(-1.0, 2.0, LAM.size)
LINEAR_AB = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # Ho et al.'s T = 1000 grid


def linear_sigmas(n_steps: int) -> np.ndarray:
    """k-diffusion sigmas of the linear training grid at S evenly spaced timesteps."""
    return sigmas_from_alphas_cumprod(LINEAR_AB[np.linspace(0, 999, n_steps).round().astype(int)])


SCHEDULES = {f"linear-{S}": linear_sigmas(S) for S in (3, 10, 25)}
# k-diffusion's own Karras sigmas (float32 linspace inside; taken as given, in float64)
SCHEDULES["karras-10"] = K.get_sigmas_karras(10, 0.002, 80.0).double().numpy()

ANCESTRAL = ("euler-ancestral", "dpm-2-ancestral", "dpmpp-2s-ancestral")
OPTIONS = [(name, {}) for name in KSAMPLERS]
OPTIONS += [(name, {"eta": 0.5, "s_noise": 0.8}) for name in ANCESTRAL]
OPTIONS += [(name, {"eta": 0.0}) for name in ANCESTRAL]
OPTIONS += [("dpmpp-sde", {"r": 0.3}), ("dpmpp-sde", {"eta": 0.5, "s_noise": 0.8}),
            ("dpmpp-2m-sde", {"solver_type": "heun"}),
            ("dpmpp-2m-sde", {"eta": 0.5, "s_noise": 0.8, "solver_type": "heun"}),
            ("dpmpp-2m-sde", {"eta": 0.0}), ("dpmpp-3m-sde", {"eta": 0.5, "s_noise": 0.8}),
            ("dpmpp-3m-sde", {"eta": 0.0})]


def _id(case):
    name, given_options = case
    return name + "".join(f"-{k}={v}" for k, v in given_options.items())


def wiener(lam, mean):
    """The exact Wiener denoiser ``D(x, sigma)`` of ``N(mean, diag(lam))`` as k-diffusion calls it.

    ``x``: tensor (n, d) float64; ``sigma``: tensor (n,) (``sigmas[i] * s_in``).
    """
    L, M = torch.from_numpy(lam), torch.from_numpy(mean)
    return lambda x, sigma: M + (x - M) * (L / (L + sigma.reshape(-1, 1) ** 2))


class ProbeNoise:
    """A ``noise_sampler(sigma, sigma_next)`` that returns ``e_{c+1}`` (a unit row) at call c.

    Row ``c + 1`` of the batch receives a unit draw at call ``c`` and nothing else; every other
    row (row 0; all rows past ``rows - 1`` calls) receives zeros. ``calls`` records the
    ``(sigma, sigma_next)`` of every call.
    """

    def __init__(self, rows: int, d: int):
        self.rows, self.d, self.calls = rows, d, []

    def __call__(self, sigma, sigma_next):
        out = torch.zeros((self.rows, self.d), dtype=torch.float64)
        c = len(self.calls)
        self.calls.append((float(sigma), float(sigma_next)))
        if c + 1 < self.rows:
            out[c + 1] = 1.0
        return out


def run_k(name, sigmas, x0, options, lam=LAM, mean=None, noise_sampler=None):
    """Output (n, d) of k-diffusion's ``sample_*`` for ``name`` from ``x0`` (n, d)."""
    spec = KSAMPLERS[name]
    kwargs = dict(options)
    if noise_sampler is not None:
        kwargs["noise_sampler"] = noise_sampler
    mean = np.zeros(lam.size) if mean is None else mean
    out = getattr(K, spec.function)(wiener(lam, mean), torch.from_numpy(x0),
                                    torch.from_numpy(sigmas), disable=True, **kwargs)
    return out.numpy()


def brownian_covariance(calls) -> np.ndarray:
    """Covariance of ``(W(b) - W(a)) / sqrt|b - a|`` over the calls' intervals ``(a, b)``."""
    iv = [sorted(c) for c in calls]
    R = np.empty((len(iv), len(iv)))
    for a, (a0, a1) in enumerate(iv):
        for b, (b0, b1) in enumerate(iv):
            R[a, b] = max(0.0, min(a1, b1) - max(a0, b0)) / np.sqrt((a1 - a0) * (b1 - b0))
    return R


def k_law(name, sigmas, options, lam=LAM):
    """``(H, coefficients (n_draws, d), R)`` of k-diffusion's sampler, by probes (module doc)."""
    n_steps = sigmas.size - 1
    rows = 1 + 2 * n_steps  # at most two draws per step
    x0 = np.zeros((rows, lam.size))
    x0[0] = sigmas[0]
    probe = ProbeNoise(rows, lam.size) if KSAMPLERS[name].noise != "none" else None
    out = run_k(name, sigmas, x0, options, lam, noise_sampler=probe)
    if probe is None:
        return out[0] / sigmas[0], np.zeros((0, lam.size)), np.eye(0)
    n = len(probe.calls)
    assert n < rows, "more draws than probe rows"
    R = brownian_covariance(probe.calls) if KSAMPLERS[name].noise == "brownian" else np.eye(n)
    return out[0] / sigmas[0], out[1:1 + n], R


# ---- 1 + 2: exact, through probes -----------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("case", OPTIONS, ids=_id)
def test_transfer_and_variance_equal_k_diffusion(case, schedule):
    name, given_options = case
    sigmas = SCHEDULES[schedule]
    options = resolve_options(name, **given_options)
    H, C, R = k_law(name, sigmas, options)
    gen = kclosed_form(LAM, sigmas, name, options)
    np.testing.assert_allclose(gen.transfer, H, rtol=RTOL)
    variance = H**2 * sigmas[0] ** 2 + np.einsum("ad,ab,bd->d", C, R, C)
    np.testing.assert_allclose(gen.variance, variance, rtol=RTOL)
    if not KSAMPLERS[name].stochastic or options.get("eta") == 0.0:
        assert np.all(C == 0.0)  # no noise reaches the output
    else:
        assert np.all(np.max(np.abs(C), axis=0) > 0.0)


@pytest.mark.parametrize("schedule", ["linear-10", "karras-10"])
def test_dpmpp_sde_draws_within_a_step_are_correlated(schedule):
    """The probe check can fail: with independent draws dpmpp-sde's variance is another one."""
    sigmas = SCHEDULES[schedule]
    options = resolve_options("dpmpp-sde")
    H, C, R = k_law("dpmpp-sde", sigmas, options)
    assert np.max(np.abs(R - np.eye(R.shape[0]))) > 0.1  # [sigma_s, sigma_i] in [sigma_next, ..]
    iid = H**2 * sigmas[0] ** 2 + np.sum(C**2, axis=0)
    gen = kclosed_form(LAM, sigmas, "dpmpp-sde", options)
    assert np.max(np.abs(iid / gen.variance - 1.0)) > 1e-3


@pytest.mark.parametrize("schedule", ["linear-3", "linear-25", "karras-10"])
@pytest.mark.parametrize("case", OPTIONS, ids=_id)
def test_mean_equals_k_diffusion(case, schedule):
    """From x = 0, no noise, data mean m: k-diffusion's output is ``m + mean_gain m``."""
    name, given_options = case
    sigmas = SCHEDULES[schedule]
    options = resolve_options(name, **given_options)
    d = LAM.size
    probe = ProbeNoise(1, d) if KSAMPLERS[name].noise != "none" else None  # zeros: row 0
    out = run_k(name, sigmas, np.zeros((1, d)), options, mean=MEAN, noise_sampler=probe)[0]
    gen = kclosed_form(LAM, sigmas, name, options)
    np.testing.assert_allclose(out, MEAN + gen.mean_error(MEAN), rtol=RTOL)
    np.testing.assert_allclose(out - MEAN, gen.mean_error(MEAN), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(gen.mean_gain, -gen.transfer, rtol=0)

