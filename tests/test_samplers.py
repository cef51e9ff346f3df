"""Every sampler's closed form (docs/theory.md section 3) vs Monte Carlo, limits and identities.

The Monte Carlo runs below simulate each sampler's update exactly as docs/theory.md section 3
writes it, on
samples, with the Wiener denoiser (or the exact score) evaluated on those samples; they share
no code with specsched.theory beyond the formulas' source.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.errors import InputError
from specsched.testing import eigenvalue_arrays, etas, samplers, schedules, spectra
from specsched.theory import closed_form, evaluate_schedule, loss_and_grad
from specsched.theory.losses import kl_data_gen_terms, kl_terms, w2_terms
from specsched.theory.sde import SDE_SOLVERS, sde_closed_form

LAM = np.array([4.0, 1.5, 0.6, 0.2, 0.05, 0.01])
MEAN = np.array([0.7, -1.2, 0.3, 0.0, 2.0, -0.4])
AB = np.array([0.995, 0.9, 0.6, 0.25, 0.05])


def _x0_hat_vp(x, a):
    g = np.sqrt(a) * LAM / (a * LAM + 1 - a)
    return MEAN + g * (x - np.sqrt(a) * MEAN)


def _x0_hat_ve(x, sig2):
    return MEAN + LAM / (LAM + sig2) * (x - MEAN)


def simulate_discrete(sampler, ab, init, n, rng, eta=None):
    """Run ``sampler`` on n samples in the eigenbasis, as docs/theory.md section 3 writes it."""
    S = ab.size
    a_S = ab[-1]
    if sampler.endswith("-ve"):
        sig2_S = (1 - a_S) / a_S
        if init == "normal":
            x = np.sqrt(sig2_S) * rng.standard_normal((n, LAM.size))
        else:
            x = MEAN + np.sqrt(LAM + sig2_S) * rng.standard_normal((n, LAM.size))
    elif init == "normal":
        x = rng.standard_normal((n, LAM.size))
    else:
        x = np.sqrt(a_S) * MEAN + np.sqrt(a_S * LAM + 1 - a_S) * rng.standard_normal((n, LAM.size))
    for s in range(S - 1, -1, -1):
        a, ap = ab[s], (ab[s - 1] if s > 0 else 1.0)
        z = rng.standard_normal(x.shape)
        if sampler in ("ddim", "ddpm"):
            e = (0.0 if sampler == "ddim" else 1.0) if eta is None else eta
            x0 = _x0_hat_vp(x, a)
            eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
            sig2 = e**2 * (1 - ap) / (1 - a) * (1 - a / ap)
            x = np.sqrt(ap) * x0 + np.sqrt(max(1 - ap - sig2, 0)) * eps + np.sqrt(sig2) * z
        elif sampler == "ddpm-large":
            beta = 1 - a / ap
            x0 = _x0_hat_vp(x, a)
            x = (np.sqrt(ap) * beta / (1 - a) * x0 + np.sqrt(a / ap) * (1 - ap) / (1 - a) * x
                 + (np.sqrt(beta) * z if s > 0 else 0.0))
        else:
            sig2, sig2_p = (1 - a) / a, (1 - ap) / ap
            x0 = _x0_hat_ve(x, sig2)
            if sampler == "ddim-ve":
                x = x0 + np.sqrt(sig2_p / sig2) * (x - x0)
            else:
                x = x0 + sig2_p / sig2 * (x - x0) + np.sqrt(sig2_p * (sig2 - sig2_p) / sig2) * z
    return x


def simulate_sde(solver, K, init, n, rng, bmin=0.05, bmax=10.0, eps=0.0):
    """Run a continuous-time solver with the exact score on n samples (docs/theory.md section 3)."""
    def B(t):
        return bmin * t + 0.5 * (bmax - bmin) * t * t

    def beta(t):
        return bmin + t * (bmax - bmin)

    def score(x, t):
        e = np.exp(-B(t))
        return -(x - e * MEAN) / (e * e * LAM + 1 - e * e)

    e1 = np.exp(-B(1.0))
    if init == "normal":
        x = rng.standard_normal((n, LAM.size))
    else:
        x = e1 * MEAN + np.sqrt(e1**2 * LAM + 1 - e1**2) * rng.standard_normal((n, LAM.size))
    dt = (1.0 - eps) / K
    for k in range(K):
        t = 1.0 - k * dt
        tp = t - dt
        z = rng.standard_normal(x.shape)
        if solver == "pg-euler":
            x = x + dt * beta(t) * (x + score(x, t))
        elif solver == "pg-heun":
            d1 = beta(t) * (x + score(x, t))
            xp = x + dt * d1
            x = x + 0.5 * dt * (d1 + beta(tp) * (xp + score(xp, tp)))
        elif solver == "pg-em":
            x = x + dt * beta(t) * (x + 2 * score(x, t)) + np.sqrt(2 * dt * beta(t)) * z
        elif solver == "pg-ei":
            g1 = np.exp(B(t) - B(tp)) - 1
            g2 = (np.exp(2 * (B(t) - B(tp))) - 1) / 2
            x = (1 + g1) * x + 2 * g1 * score(x, t) + np.sqrt(2 * g2) * z
        elif solver == "pg-ddpm":
            bd = 2 * dt * beta(t)
            x = (x + bd * score(x, t)) / np.sqrt(1 - bd) + np.sqrt(bd) * z
    return x


def _assert_moments_match(x, gen, tol_se=4.5):
    n = x.shape[0]
    mean_gen = MEAN + gen.mean_error(MEAN)
    se_mean = np.sqrt(gen.variance / n)
    se_var = gen.variance * np.sqrt(2 / (n - 1))
    assert np.all(np.abs(x.mean(axis=0) - mean_gen) < tol_se * se_mean + 1e-12)
    assert np.all(np.abs(x.var(axis=0, ddof=1) - gen.variance) < tol_se * se_var + 1e-12)


DISCRETE = [("ddim", None), ("ddpm", None), ("ddim", 0.5), ("ddpm-large", None),
            ("ddim-ve", None), ("ddpm-ve", None)]


@pytest.mark.parametrize("sampler, eta", DISCRETE)
@pytest.mark.parametrize("init", ["normal", "marginal"])
def test_discrete_closed_form_matches_monte_carlo(sampler, eta, init):
    rng = np.random.default_rng(2024)
    x = simulate_discrete(sampler, AB, init, 200_000, rng, eta=eta)
    _assert_moments_match(x, closed_form(LAM, AB, sampler=sampler, eta=eta, init=init))


@pytest.mark.parametrize("solver", SDE_SOLVERS)
@pytest.mark.parametrize("init", ["normal", "marginal"])
def test_sde_closed_form_matches_monte_carlo(solver, init):
    rng = np.random.default_rng(99)
    K = 40  # pg-ddpm needs 2 dt beta < 1
    x = simulate_sde(solver, K, init, 100_000, rng)
    traj = sde_closed_form(LAM, MEAN, K, solver, init=init)
    _assert_moments_match(x, traj.generated)
    assert traj.w2[-1] == pytest.approx(traj.report.w2, rel=1e-12)  # eps = 0: marginal = data
    assert traj.times[0] == 1.0 and traj.times[-1] == 0.0 and traj.w2.size == K + 1


# --- identities and limits ------------------------------------------------------------------

@given(spectrum=spectra(), ab=schedules())
def test_vp_and_ve_ddim_agree_from_the_marginal(spectrum, ab):
    # y = x / sqrt(ab) maps VP DDIM onto VE DDIM with sigma = sqrt((1 - ab)/ab), and the VP
    # marginal start onto the VE one: the generated laws coincide (docs/theory.md section 3).
    vp = closed_form(spectrum.eigenvalues, ab, sampler="ddim", init="marginal")
    ve = closed_form(spectrum.eigenvalues, ab, sampler="ddim-ve", init="marginal")
    np.testing.assert_allclose(vp.variance, ve.variance, rtol=1e-8)
    np.testing.assert_allclose(vp.transfer * np.sqrt(ab[-1]), ve.transfer, rtol=1e-8)


@given(lam=eigenvalue_arrays(), ab=schedules(), eta=st.floats(0, 1))
def test_ddim_eta_is_continuous_and_matches_its_ends(lam, ab, eta):
    h = 1e-7
    lo = closed_form(lam, ab, eta=max(eta - h, 0.0)).variance
    hi = closed_form(lam, ab, eta=min(eta + h, 1.0)).variance
    np.testing.assert_allclose(lo, hi, rtol=1e-4, atol=1e-12)
    np.testing.assert_array_equal(closed_form(lam, ab, eta=0.0).variance,
                                  closed_form(lam, ab, sampler="ddim").variance)
    np.testing.assert_array_equal(closed_form(lam, ab, eta=1.0).variance,
                                  closed_form(lam, ab, sampler="ddpm").variance)


@given(lam=eigenvalue_arrays(), v=eigenvalue_arrays(), e=st.floats(-3, 3))
def test_losses_vanish_exactly_at_the_data(lam, v, e):
    n = min(lam.size, v.size)
    lam, v = lam[:n], v[:n]
    zero = np.zeros(n)
    assert np.sum(w2_terms(lam, lam, zero)) == 0.0
    assert np.sum(kl_terms(lam, lam, zero)) == 0.0
    assert np.sum(kl_data_gen_terms(lam, lam, zero)) == 0.0
    err = np.full(n, e)
    if not (np.allclose(v, lam, rtol=1e-6) and abs(e) < 1e-6):
        assert np.sum(w2_terms(lam, v, err)) > 0
        assert np.sum(kl_terms(lam, v, err)) > 0
        assert np.sum(kl_data_gen_terms(lam, v, err)) > 0


def test_kl_matches_dense_gaussian_formula():
    # Independent implementation: KL between full-covariance Gaussians with numpy.linalg,
    # in a random rotation of the eigenbasis.
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    gen = closed_form(LAM, AB, sampler="ddpm-large")
    err = gen.mean_error(MEAN)
    S1, S0 = Q @ np.diag(gen.variance) @ Q.T, Q @ np.diag(LAM) @ Q.T
    mu1, mu0 = Q @ (MEAN + err), Q @ MEAN

    def kl(m_a, C_a, m_b, C_b):
        Cb_inv = np.linalg.inv(C_b)
        d = m_b - m_a
        return 0.5 * (np.trace(Cb_inv @ C_a) - 6 + d @ Cb_inv @ d
                      + np.linalg.slogdet(C_b)[1] - np.linalg.slogdet(C_a)[1])

    r = evaluate_schedule(LAM, MEAN, AB, sampler="ddpm-large")
    assert r.kl == pytest.approx(kl(mu1, S1, mu0, S0), rel=1e-10)
    assert r.kl_data_gen == pytest.approx(kl(mu0, S0, mu1, S1), rel=1e-10)


def _refined(S, hi=14.0, lo=-5.0):
    return 1 / (1 + np.exp(-np.linspace(hi, lo, S)))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve"])
def test_discrete_samplers_converge_at_first_order(sampler):
    # From the true marginal the continuous-time limit reproduces the data exactly, so the
    # error in variance is the discretisation error: halving the step halves it.
    lam = np.logspace(-2, 1, 20)
    err = [np.max(np.abs(closed_form(lam, _refined(S), sampler=sampler,
                                     init="marginal").variance / lam - 1))
           for S in (1000, 2000, 4000)]
    assert 1.6 < err[0] / err[1] < 2.5 and 1.6 < err[1] / err[2] < 2.5


@pytest.mark.parametrize("solver, order", [("pg-euler", 1), ("pg-heun", 2), ("pg-em", 1),
                                           ("pg-ei", 1), ("pg-ddpm", 1)])
def test_sde_solvers_converge_at_their_order(solver, order):
    lam = np.logspace(-2, 1, 20)
    err = [np.max(np.abs(sde_closed_form(lam, None, K, solver, init="marginal")
                         .report.variance / lam - 1)) for K in (800, 1600, 3200)]
    for r in (err[0] / err[1], err[1] / err[2]):
        assert 2**order * 0.8 < r < 2**order * 1.25


def test_sde_closed_form_refuses_former_solver_names():
    with pytest.raises(InputError, match="^sampler: the continuous-time solver 'em' is now called "
                       "'pg-em'$"):
        sde_closed_form(LAM, MEAN, 10, "em")
    with pytest.raises(InputError, match="'ei' is now called 'pg-ei'"):
        sde_closed_form(LAM, MEAN, 10, "ei")
    for name in ("euler", "heun"):  # k-diffusion's names now: unknown here, not an alias
        with pytest.raises(InputError, match=f"^sampler: expected one of .*got {name!r}"):
            sde_closed_form(LAM, MEAN, 10, name)


def test_ddim_from_noise_tends_to_the_probability_flow_map():
    lam = np.logspace(-2, 1, 20)
    e = np.exp(-(0.05 + 0.5 * 9.95))
    exact_pf = np.sqrt(lam / (e * e * lam + 1 - e * e))
    H = sde_closed_form(lam, None, 4000, "pg-heun").generated.transfer
    np.testing.assert_allclose(H, exact_pf, rtol=1e-5)


# --- analytic gradients for every discrete sampler and loss ----------------------------------

@settings(max_examples=40, deadline=None)
@given(spectrum=spectra(max_size=5), ab=schedules(max_steps=8), sampler=samplers(),
       init=st.sampled_from(["normal", "marginal"]),
       loss=st.sampled_from(["w2", "kl", "kl-data-gen"]), eta=etas())
def test_gradients_match_finite_differences(spectrum, ab, sampler, init, loss, eta):
    eta = eta if sampler == "ddim" else None
    lam, m = spectrum.eigenvalues, spectrum.mean
    kw = dict(loss=loss, sampler=sampler, eta=eta, init=init)
    f, g = loss_and_grad(lam, m, ab, **kw)
    fd, roundoff = np.empty_like(ab), np.empty_like(ab)
    for i in range(ab.size):
        gaps = np.abs(np.diff(ab)) if ab.size > 1 else np.array([1.0])
        h = 1e-6 * min(ab[i], 1 - ab[i], gaps.min())
        up, dn = ab.copy(), ab.copy()
        up[i] += h
        dn[i] -= h
        fd[i] = (loss_and_grad(lam, m, up, **kw)[0] - loss_and_grad(lam, m, dn, **kw)[0]) / (2 * h)
        # the central difference's own rounding error: a few ulps of the loss over 2h (a true
        # gradient of 0 comes out as +-1e-10 from rounding alone)
        roundoff[i] = 64 * np.finfo(float).eps * abs(f) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=3e-5,
                               atol=3e-5 * (np.max(np.abs(fd)) + 1e-8) + roundoff.max())
