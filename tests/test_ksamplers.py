"""k-diffusion's samplers: the closed forms of :mod:`specsched.theory.kclosed` vs the real code.

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
    kdiffusion_sigmas,
    resolve_options,
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
    return kdiffusion_sigmas(LINEAR_AB[np.linspace(0, 999, n_steps).round().astype(int)])


SCHEDULES = {f"linear-{S}": linear_sigmas(S) for S in (3, 10, 25)}
# k-diffusion's own Karras sigmas (float32 linspace inside; taken as given, in float64)
SCHEDULES["karras-10"] = K.get_sigmas_karras(10, 0.002, 80.0).double().numpy()

ANCESTRAL = ("euler-ancestral", "dpm-2-ancestral", "dpmpp-2s-ancestral")
#: the samplers k-diffusion's code specifies (unipc is diffusers': tests/test_diffusers_solvers.py)
K_NAMES = [name for name, spec in KSAMPLERS.items() if spec.library == "k-diffusion"]
OPTIONS = [(name, {}) for name in K_NAMES]
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
    L, M = torch.tensor(lam, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64)
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


BACKENDS = ["numpy", "numba"]  # the reference trace, and the compiled corner recursion


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("case", OPTIONS, ids=_id)
def test_transfer_and_variance_equal_k_diffusion(case, schedule, backend):
    name, given_options = case
    sigmas = SCHEDULES[schedule]
    options = resolve_options(name, **given_options)
    H, C, R = k_law(name, sigmas, options)
    gen = kclosed_form(LAM, sigmas, name, options, backend=backend)
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
    assert np.all(np.abs(iid / gen.variance - 1.0) > 0.1)  # measured 17% .. 47% too low


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



@pytest.mark.parametrize("order", [1, 2, 3])
def test_lms_of_other_orders_equals_k_diffusion(order):
    """``sample_lms(order=...)``: the step's order path, options given as k-diffusion takes them."""
    sigmas = SCHEDULES["karras-10"]
    H, _, _ = k_law("lms", sigmas, {"order": order})
    np.testing.assert_allclose(kclosed_form(LAM, sigmas, "lms", {"order": order}).transfer, H,
                               rtol=RTOL)


# resolve_options used to turn order into a float (found by this test, fixed)
def test_lms_order_through_resolve_options():
    sigmas = SCHEDULES["karras-10"]
    H, _, _ = k_law("lms", sigmas, {"order": 2})
    gen = kclosed_form(LAM, sigmas, "lms", resolve_options("lms", order=2))
    np.testing.assert_allclose(gen.transfer, H, rtol=RTOL)


# ---- 3: Monte Carlo with k-diffusion's own noise ----------------------------------------------

N_MC = 20000  # rows per direction; torchsde's tree slows ~50x past ~32768 entries per query
MC_LAM = np.array([1e-3, 0.1, 1.0, 20.0])
MC_MEAN = np.array([0.5, -1.0, 2.0, 1.0])


def variance_z(samples, variance):
    """Per-direction ``(sample variance - variance) / s.e.``, s.e. ``variance sqrt(2/(n-1))``."""
    n = samples.shape[0]
    return (samples.var(axis=0, ddof=1) - variance) / (variance * np.sqrt(2.0 / (n - 1)))


def assert_within_3_se(samples, gen, mean):
    """Per-direction sample mean and variance within 3 standard errors of the closed form."""
    z_var = variance_z(samples, gen.variance)
    z_mean = ((samples.mean(axis=0) - mean - gen.mean_error(mean))
              / np.sqrt(gen.variance / samples.shape[0]))
    assert np.all(np.abs(z_var) < 3.0), z_var
    assert np.all(np.abs(z_mean) < 3.0), z_mean


# torchsde rounds times to 1e-6 (tol) and warns when a query below the rounded start is clamped
@pytest.mark.filterwarnings("ignore:Should have t:UserWarning")
@pytest.mark.parametrize("name", ["dpmpp-sde", "dpmpp-2m-sde", "dpmpp-3m-sde"])
def test_brownian_samplers_with_k_diffusions_noise(name):
    """BrownianTreeNoiseSampler (k-diffusion's default here): one (N_MC, 1) run per direction."""
    sigmas = SCHEDULES["linear-10"]
    options = resolve_options(name)
    samples = np.empty((N_MC, MC_LAM.size))
    for k in range(MC_LAM.size):
        torch.manual_seed(k)  # the start, and the tree's seed (torch.randint)
        x0 = (torch.randn((N_MC, 1), dtype=torch.float64) * sigmas[0]).numpy()
        samples[:, k] = run_k(name, sigmas, x0, options, MC_LAM[k:k + 1], MC_MEAN[k:k + 1])[:, 0]
    assert_within_3_se(samples, kclosed_form(MC_LAM, sigmas, name, options), MC_MEAN)
    if name == "dpmpp-sde":  # the check has power: independent draws within a step are rejected
        H, C, _ = k_law(name, sigmas, options, MC_LAM)
        iid = H**2 * sigmas[0] ** 2 + np.sum(C**2, axis=0)
        assert np.all(np.abs(variance_z(samples, iid)) > 10.0)


@pytest.mark.parametrize("name, given_options", [("euler-ancestral", {}),
                                                 ("dpmpp-2s-ancestral", {"eta": 0.5})])
def test_ancestral_sampler_with_k_diffusions_noise(name, given_options):
    """default_noise_sampler (torch.randn_like), the directions in one batch."""
    sigmas = SCHEDULES["karras-10"]
    options = resolve_options(name, **given_options)
    torch.manual_seed(3)
    x0 = (torch.randn((N_MC, MC_LAM.size), dtype=torch.float64) * sigmas[0]).numpy()
    samples = run_k(name, sigmas, x0, options, MC_LAM, MC_MEAN)
    assert_within_3_se(samples, kclosed_form(MC_LAM, sigmas, name, options), MC_MEAN)


def test_brownian_tree_noise_quantises_sigma_to_1e_6():
    """What the closed form idealises: torchsde rounds query times to 6 decimals.

    k-diffusion's draw is ``(W(round(b)) - W(round(a))) / sqrt|b - a|``, of variance
    ``|round(b) - round(a)| / |b - a|``, not 1: two levels closer than 1e-6 that round alike
    get no noise at all. The closed form's unit-variance Brownian increments differ by
    ~1e-6 / |sigma_{i+1} - sigma_i| relative, far below what Monte Carlo resolves here.
    """
    x = torch.zeros((4, 3), dtype=torch.float64)
    noise = K.BrownianTreeNoiseSampler(x, 0.01, 1.0, seed=0)
    assert torch.all(noise(torch.tensor(0.0100004), torch.tensor(0.0100001)) == 0.0)
    assert torch.all(noise(torch.tensor(0.5), torch.tensor(0.4)) != 0.0)


# ---- 4: identities ---------------------------------------------------------------------------


@pytest.mark.parametrize("S", [1, 3, 10, 25])
@pytest.mark.parametrize("init", ["normal", "marginal"])
@pytest.mark.parametrize("name, discrete", [("euler", "ddim-ve"), ("euler-ancestral", "ddpm-ve")])
def test_euler_samplers_are_the_ve_discrete_samplers(name, discrete, S, init):
    """To 1e-12 relative; atol 1e-18 for the transfer of lambda = 1e-4 at S = 3 (H = 4e-9, the
    difference of O(1) terms: the two formulas' rounding differs by 4e-20 there)."""
    ab = LINEAR_AB[np.linspace(0, 999, S).round().astype(int)]
    ours = kclosed_form(LAM, kdiffusion_sigmas(ab), name, init=init)
    theirs = closed_form(LAM, ab, sampler=discrete, init=init)
    for field in ("transfer", "variance", "mean_gain"):
        np.testing.assert_allclose(getattr(ours, field), getattr(theirs, field), rtol=1e-12,
                                   atol=1e-18, err_msg=field)


# ---- 5: the gradient in the sigmas -----------------------------------------------------------


def _w2(lam, sigmas, name, options, init, mean, backend="numpy"):
    gen = kclosed_form(lam, sigmas, name, options, init, backend=backend)
    return loss_value_and_partials("w2", lam, gen.variance, gen.mean_error(mean))[0]


GRADIENT_CASES = [(*case, "normal") for case in OPTIONS]
GRADIENT_CASES += [(name, {}, "normal") for name in KSAMPLERS if name not in K_NAMES]
GRADIENT_CASES += [(name, {}, "marginal") for name in KSAMPLERS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, given_options, init", GRADIENT_CASES,
                         ids=[f"{_id(c[:2])}-{c[2]}" for c in GRADIENT_CASES])
def test_gradient_matches_central_differences(name, given_options, init, backend):
    """Steps of 1e-4 relative: the differences' error then is ~6e-8 of the gradient, and grows
    as the step shrinks (1e-7: up to 6e-5), i.e. it is the differences' rounding, not the vjp."""
    sigmas = SCHEDULES["karras-10"]
    options = resolve_options(name, **given_options)

    def partials(gen):
        v, d_var, d_err = loss_value_and_partials("w2", LAM, gen.variance, gen.mean_error(MEAN))
        return v, d_var, d_err * MEAN  # d mean_error / d mean_gain = m

    value, _, grad = kclosed_form_vjp(LAM, sigmas, name, options, init, partials,
                                      backend=backend)
    assert value == pytest.approx(_w2(LAM, sigmas, name, options, init, MEAN), rel=1e-12)
    fd = np.zeros_like(sigmas)
    for j in range(sigmas.size - 1):  # the final 0 is not a free level
        e = 1e-4 * sigmas[j]
        up, down = sigmas.copy(), sigmas.copy()
        up[j] += e
        down[j] -= e
        fd[j] = (_w2(LAM, up, name, options, init, MEAN)
                 - _w2(LAM, down, name, options, init, MEAN)) / (2.0 * e)
    assert grad[-1] == 0.0
    assert np.max(np.abs(grad - fd)) <= 1e-6 * np.max(np.abs(fd)), (grad, fd)


# ---- 6: properties on random spectra and schedules -------------------------------------------


def deterministic_options(name):
    """The sampler's options with no noise: eta = 0 where it has one."""
    return resolve_options(name, eta=0.0 if "eta" in KSAMPLERS[name].defaults else None)


@settings(max_examples=40, deadline=None)
@given(spectra(), schedules(min_gap=1e-2), st.sampled_from(list(KSAMPLERS)))
def test_deterministic_samplers_law(spectrum, ab, name):
    """No noise: var = H^2 sigma_0^2 (normal) or H^2 (lambda + sigma_0^2) (marginal, no bias).

    H the transfer from the VE start; unipc reports it from diffusers' VP start ``x_T ~ N(0,
    1)``, ``x = x_T sqrt(1 + sigma_0^2)``: its transfer is ``H sqrt(1 + sigma_0^2)``."""
    lam, sigmas = spectrum.eigenvalues, kdiffusion_sigmas(ab)
    options = deterministic_options(name)
    normal = kclosed_form(lam, sigmas, name, options)
    marginal = kclosed_form(lam, sigmas, name, options, init="marginal")
    assert np.all(np.isfinite(normal.transfer))
    vp = KSAMPLERS[name].param == "vp"
    H = normal.transfer / np.sqrt(1.0 + sigmas[0] ** 2) if vp else normal.transfer
    # the variance runs M P M^T, the transfer M h: the same products in another order, which
    # large opposite weights on two near-equal levels round apart (~1e-10 for LMS; 1.5e-7 for
    # dpmpp-3m-sde at ab = (0.56, 0.500125, 0.5, 0.27), levels 2.5e-4 apart, growing as the gap
    # shrinks), so the levels here are at least 1% apart
    np.testing.assert_allclose(normal.variance, H**2 * KSAMPLERS[name].start_std(sigmas[0]) ** 2,
                               rtol=1e-8)
    np.testing.assert_allclose(normal.mean_gain, -H, rtol=1e-14)  # H rescaled for unipc
    np.testing.assert_array_equal(marginal.transfer, normal.transfer)
    np.testing.assert_allclose(marginal.variance, H**2 * (lam + sigmas[0] ** 2), rtol=1e-8)
    np.testing.assert_array_equal(marginal.mean_gain, 0.0)


@settings(max_examples=40, deadline=None)
@given(spectra(with_mean=False), schedules(min_steps=2), st.sampled_from(K_NAMES))
def test_deterministic_transfer_equals_k_diffusion_on_random_schedules(spectrum, ab, name):
    """min_steps = 2: k-diffusion's 2m-sde and 3m-sde fail on one step (h unbound)."""
    lam, sigmas = spectrum.eigenvalues, kdiffusion_sigmas(ab)
    options = deterministic_options(name)
    H, _, _ = k_law(name, sigmas, options, lam)
    np.testing.assert_allclose(kclosed_form(lam, sigmas, name, options).transfer, H, rtol=RTOL)


@pytest.mark.parametrize("name", ["dpmpp-2m-sde", "dpmpp-3m-sde"])
def test_k_diffusion_cannot_run_one_step_where_the_closed_form_can(name):
    """k-diffusion 0.1.1.post1 sets ``h_last = h`` (``h_1 = h``) after a step onto 0 that never
    defined ``h``: one step fails there; the closed form (the step's denoising branch) is the
    denoiser's output, ``H = g(sigma_0)``."""
    sigmas = linear_sigmas(1)
    with pytest.raises(UnboundLocalError):
        k_law(name, sigmas, resolve_options(name))
    gen = kclosed_form(LAM, sigmas, name)
    np.testing.assert_allclose(gen.transfer, LAM / (LAM + sigmas[0] ** 2), rtol=1e-14)
