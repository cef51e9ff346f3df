"""Closed-form theory (docs/theory.md sections 2-5) vs Monte Carlo, identities and references."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.errors import InputError
from specsched.testing import eigenvalue_arrays, samplers, schedules
from specsched.theory import (
    SAMPLERS,
    closed_form,
    evaluate_schedule,
    loss_and_grad,
    resolve_eta,
    step_coefficients,
    wiener_denoise,
)


def linspace_schedule(training_ab, S):
    return training_ab[np.round(np.linspace(0, 999, S)).astype(int)]


eigs = eigenvalue_arrays(max_size=6)


# --- docs/theory.md section 5 reference values -------------------------------------------------

@pytest.mark.parametrize(
    "S, eta, expected", [(10, 0.0, 5.5886), (10, 1.0, 8.0117), (50, 0.0, 1.3042)]
)
def test_reference_values_cifar10(cifar10_lam, linear_training_ab, S, eta, expected):
    r = evaluate_schedule(cifar10_lam, None, linspace_schedule(linear_training_ab, S), eta=eta)
    assert r.w2 == pytest.approx(expected, abs=1e-4)
    assert np.sqrt(r.w2_terms.sum()) == pytest.approx(r.w2, rel=1e-12)


# --- identities of docs/theory.md section 3 ----------------------------------------------------

@given(lam=eigs, ab=schedules(min_steps=2))
def test_ddim_gain_identity(lam, ab):
    sig = np.sqrt((1 - ab) / ab)
    for s in range(1, ab.size):  # step s+1 -> s in 1-based terms: a = ab[s], ap = ab[s-1]
        A, _, sig2 = step_coefficients(lam, ab[s], ab[s - 1], 0.0)
        expected = np.sqrt(ab[s - 1] / ab[s]) * (lam + sig[s - 1] * sig[s]) / (lam + sig[s] ** 2)
        np.testing.assert_allclose(A, expected, rtol=1e-7, atol=1e-12)
        assert np.all(sig2 == 0.0)


@given(lam=eigs, ab=schedules(min_steps=2))
def test_ddpm_gain_identity(lam, ab):
    sig = np.sqrt((1 - ab) / ab)
    for s in range(1, ab.size):
        A, _, _ = step_coefficients(lam, ab[s], ab[s - 1], 1.0)
        expected = np.sqrt(ab[s - 1] / ab[s]) * (lam + sig[s - 1] ** 2) / (lam + sig[s] ** 2)
        np.testing.assert_allclose(A, expected, rtol=1e-7, atol=1e-12)


@given(lam=eigs, ab=schedules(min_steps=2), sampler=samplers())
def test_every_step_maps_the_exact_mean_to_the_exact_mean(lam, ab, sampler):
    # The Wiener denoiser is unbiased, so a step started at the true mean c_s m of its level
    # lands on the true mean c_{s-1} m of the next: A_s c_s + B_s = c_{s-1}, with
    # c = sqrt(ab) (VP), 1 (VE) or 1 - t (FM, t = sigma / (1 + sigma)). This checks B_s, which
    # the chained closed form never uses.
    param = SAMPLERS[sampler].param

    def scale(level):
        t = np.sqrt(1 - level) / (np.sqrt(level) + np.sqrt(1 - level))
        return {"vp": np.sqrt(level), "ve": 1.0, "fm": 1.0 - t}[param]

    for s in range(ab.size):
        a, ap = ab[s], (ab[s - 1] if s > 0 else 1.0)
        A, B, _ = step_coefficients(lam, a, ap, sampler=sampler)
        c, cp = scale(a), scale(ap)
        np.testing.assert_allclose(A * c + B, cp, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(lam=eigenvalue_arrays(min_value=1e-3, max_value=1e2))
def test_ddim_tends_to_probability_flow_map(lam):
    # DDIM is a first-order solver of the probability-flow ODE: on logSNR-uniform grids from
    # nearly clean data (logSNR 18) to ab_S its transfer function converges to the exact map
    # sqrt(lam / (ab_S lam + 1 - ab_S)) at rate O(1/S).
    ab_S = 1e-3
    exact = np.sqrt(lam / (ab_S * lam + 1 - ab_S))
    errors = []
    for S in (100, 1000, 10000):
        ab = 1 / (1 + np.exp(-np.linspace(18.0, np.log(ab_S / (1 - ab_S)), S)))
        errors.append(np.max(np.abs(closed_form(lam, ab).transfer / exact - 1)))
    assert errors[0] / errors[1] > 7 and errors[1] / errors[2] > 7
    assert errors[2] < 1e-3


@given(lam=eigs, ab=schedules(max_steps=1), eta=st.floats(0, 1))
def test_one_step_from_the_marginal_outputs_the_posterior_mean(lam, ab, eta):
    # The last step (ab_0 = 1) injects no noise for any eta and returns x0_hat, whose
    # variance from the marginal start is ab lam^2 / (ab lam + 1 - ab) (Wiener filter).
    gen = closed_form(lam, ab, eta=eta, init="marginal")
    a = ab[0]
    np.testing.assert_allclose(gen.variance, a * lam**2 / (a * lam + 1 - a), rtol=1e-12)
    assert np.all(gen.mean_gain == 0)


def test_ddim_from_the_marginal_converges_to_the_data():
    # Refining the grid, DDIM started from the true marginal reproduces the data variance.
    lam = np.logspace(-2, 2, 30)
    errors = []
    for S in (30, 300, 3000):
        ab = 1 / (1 + np.exp(-np.linspace(16.0, -6.0, S)))
        errors.append(np.max(np.abs(closed_form(lam, ab, init="marginal").variance / lam - 1)))
    assert errors[0] / errors[1] > 5 and errors[1] / errors[2] > 5 and errors[2] < 5e-3


@given(lam=eigs, ab=schedules(), eta=st.floats(0, 1))
def test_losses_nonnegative_and_zero_only_at_match(lam, ab, eta):
    r = evaluate_schedule(lam, None, ab, eta=eta)
    assert r.w2 >= 0 and r.kl >= -1e-12
    assert np.all(r.transfer > 0)


# --- analytic gradient against finite differences -----------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    lam=eigs,
    mean=st.lists(st.floats(-2, 2), min_size=6, max_size=6).map(np.asarray),
    ab=schedules(),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    init=st.sampled_from(["normal", "marginal"]),
    loss=st.sampled_from(["w2", "kl"]),
)
def test_gradient_matches_finite_differences(lam, mean, ab, eta, init, loss):
    m = mean[: lam.size]
    value, g = loss_and_grad(lam, m, ab, loss=loss, eta=eta, init=init)
    fd = np.empty_like(ab)
    noise = np.empty_like(ab)  # rounding of the difference quotient: a few ulps of the value / h
    for i in range(ab.size):
        # relative step keeps the perturbed schedule inside (0, 1) and monotone
        h = 1e-6 * min(ab[i], 1 - ab[i], *(np.abs(np.diff(ab)) if ab.size > 1 else [1.0]))
        noise[i] = 8 * np.finfo(float).eps * abs(value) / h
        up, dn = ab.copy(), ab.copy()
        up[i] += h
        dn[i] -= h
        fd[i] = (loss_and_grad(lam, m, up, loss=loss, eta=eta, init=init)[0]
                 - loss_and_grad(lam, m, dn, loss=loss, eta=eta, init=init)[0]) / (2 * h)
    scale = np.max(np.abs(fd)) + 1e-8
    # (a zero gradient, lam = [1], ab = [0.5], KL: the quotient is 1 ulp / 2h = 5.6e-11)
    np.testing.assert_allclose(g, fd, atol=2e-5 * scale + noise.max(), rtol=2e-5)


def test_gradient_cifar10_finite_differences(cifar10_lam, linear_training_ab):
    ab = linspace_schedule(linear_training_ab, 20)
    for loss in ("w2", "kl"):
        _, g = loss_and_grad(cifar10_lam, None, ab, loss=loss, eta=0.0)
        for i in (0, 7, 19):
            h = 1e-7 * ab[i]
            up, dn = ab.copy(), ab.copy()
            up[i] += h
            dn[i] -= h
            # differences of the NumPy reference's value: the numba kernel's (fastmath)
            # rounding differs from point to point by ~1e-16 relative, which h = 1e-7
            # turns into 1e-5 noise on the KL difference quotient
            fd = (loss_and_grad(cifar10_lam, None, up, loss=loss, backend="numpy")[0]
                  - loss_and_grad(cifar10_lam, None, dn, loss=loss, backend="numpy")[0]) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=1e-5)


# --- closed form against a Monte Carlo run of the actual sampler ---------------------------

def _random_gaussian(rng, d):
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.array([4.0, 1.5, 0.6, 0.2, 0.05, 0.01])[:d]
    return Q, lam, rng.normal(size=d)


def _run_pixel_space_ddim(rng, Sigma, mu, ab, eta, n):
    """DDIM-eta as docs/theory.md section 3 writes it, with the pixel-space Wiener filter."""
    d = mu.size
    x = rng.standard_normal((n, d))
    eye = np.eye(d)
    for s in range(ab.size - 1, -1, -1):
        a = ab[s]
        ap = ab[s - 1] if s > 0 else 1.0
        G = np.sqrt(a) * Sigma @ np.linalg.inv(a * Sigma + (1 - a) * eye)  # Wiener gain
        x0_hat = mu + (x - np.sqrt(a) * mu) @ G.T
        eps_hat = (x - np.sqrt(a) * x0_hat) / np.sqrt(1 - a)
        sig2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        x = (np.sqrt(ap) * x0_hat + np.sqrt(max(1 - ap - sig2, 0)) * eps_hat
             + np.sqrt(sig2) * rng.standard_normal((n, d)))
    return x


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_closed_form_matches_monte_carlo(eta):
    rng = np.random.default_rng(1234)
    U, lam, mu = _random_gaussian(rng, 6)
    Sigma = U @ np.diag(lam) @ U.T
    ab = np.array([0.995, 0.9, 0.6, 0.25, 0.05])
    n = 400_000
    x = _run_pixel_space_ddim(rng, Sigma, mu, ab, eta, n)
    v = x @ U  # eigenbasis coordinates
    emp_mean, emp_var = v.mean(axis=0), v.var(axis=0, ddof=1)
    m = U.T @ mu
    gen = closed_form(lam, ab, eta=eta)
    mean_gen = m + gen.mean_error(m)
    se_mean = np.sqrt(gen.variance / n)
    se_var = gen.variance * np.sqrt(2 / (n - 1))
    assert np.all(np.abs(emp_mean - mean_gen) < 5 * se_mean)
    assert np.all(np.abs(emp_var - gen.variance) < 5 * se_var)
    # and the off-diagonal covariance in the eigenbasis vanishes (shared eigenbasis)
    C = np.cov(v, rowvar=False)
    off = C - np.diag(np.diag(C))
    assert np.max(np.abs(off)) < 5 * np.sqrt(np.outer(gen.variance, gen.variance).max() / n)
    # the closed-form W2 against the W2 of the Gaussian fitted to the samples
    w2_mc = np.sqrt(np.sum((emp_mean - m) ** 2 + (np.sqrt(emp_var) - np.sqrt(lam)) ** 2))
    assert evaluate_schedule(lam, m, ab, eta=eta).w2 == pytest.approx(w2_mc, rel=1e-2)


def test_wiener_denoiser_is_the_posterior_mean():
    rng = np.random.default_rng(7)
    lam, m, ab = np.array([2.0, 0.3]), np.array([1.0, -0.5]), 0.4
    x0 = m + np.sqrt(lam) * rng.standard_normal((500_000, 2))
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * rng.standard_normal(x0.shape)
    residual = x0 - wiener_denoise(xt, lam, m, ab)
    # orthogonality principle: the error is uncorrelated with the observation
    corr = np.mean(residual * (xt - xt.mean(axis=0)), axis=0)
    assert np.all(np.abs(corr) < 5 * np.sqrt(lam) / np.sqrt(len(x0)))
    np.testing.assert_allclose(residual.var(axis=0),
                               lam * (1 - ab) / (ab * lam + 1 - ab), rtol=1e-2)


def test_resolve_eta():
    assert resolve_eta("ddim") == 0.0 and resolve_eta("ddpm") == 1.0
    assert resolve_eta("ddim", 0.3) == 0.3
    with pytest.raises(InputError, match="eta"):
        resolve_eta("ddpm", 0.5)
    with pytest.raises(InputError, match="sampler"):
        resolve_eta("euler-maruyama")
    # k-diffusion's: their function's eta (1) where it has one, none otherwise
    assert resolve_eta("euler") is None and resolve_eta("euler-ancestral") == 1.0
    assert resolve_eta("dpmpp-2m-sde", 0.5) == 0.5
    with pytest.raises(InputError, match="sample_dpmpp_2m\\) has no eta"):
        resolve_eta("dpmpp-2m", 0.5)


def test_import_compiles_nothing():
    # numba loads (and compiles, or reads its cache) on the first large objective only.
    code = ("import sys, specsched, specsched.theory, specsched.sampling, specsched.optimize; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
