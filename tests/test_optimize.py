"""The optimiser: beats every baseline, agrees with an independent method, keeps constraints."""

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.optimize import (
    AB_MAX,
    AB_MIN,
    optimize_schedule,
    project_feasible,
    warm_start,
)
from specsched.theory import evaluate_schedule


@pytest.mark.parametrize("S", [5, 10, 20, 50])
def test_cifar10_ddim_w2_optimum_is_global(cifar10_lam, S):
    slsqp = optimize_schedule(cifar10_lam, None, S, method="slsqp-logsnr", agree_rtol=None)
    lbfgs = optimize_schedule(cifar10_lam, None, S, method="lbfgs-logsnr")
    assert slsqp.success
    # beats every baseline, by a margin
    assert slsqp.fun < 0.95 * min(b["w2"] for b in slsqp.baselines.values())
    # every SLSQP start (all five run) lands on the same value, and the independent L-BFGS on
    # logSNR increments (another parametrisation and method) finds it too: the optimum is
    # global; the paper's SLSQP on ab never finds a lower one
    assert max(slsqp.starts.values()) == pytest.approx(slsqp.fun, rel=1e-6)
    assert lbfgs.fun == pytest.approx(slsqp.fun, rel=1e-6)
    # L-BFGS on the log-increments reaches it from every start, also from cosine and karras,
    # whose end levels sit on the bounds (zero increments, raised by the start floor)
    loginc = optimize_schedule(cifar10_lam, None, S, method="lbfgs-log-increments",
                               agree_rtol=None, quadrature=None)
    assert loginc.success
    assert max(loginc.starts.values()) == pytest.approx(slsqp.fun, rel=1e-8)
    # the reported loss is the loss of the returned schedule
    assert evaluate_schedule(cifar10_lam, None, slsqp.x).w2 == pytest.approx(slsqp.fun, rel=1e-12)
    paper = optimize_schedule(cifar10_lam, None, S, method="slsqp", starts=("linear",))
    assert paper.fun >= slsqp.fun * (1 - 1e-9)


def test_constraints_hold_and_kl_is_optimised(cifar10_lam):
    delta = 1e-4
    r = optimize_schedule(cifar10_lam, None, 12, loss="kl", eta=1.0, delta=delta)
    assert np.all(r.x >= AB_MIN - 1e-15) and np.all(r.x <= AB_MAX + 1e-15)
    assert np.all(-np.diff(r.x) >= delta * (1 - 1e-9))
    assert r.fun == pytest.approx(r.kl)
    assert r.kl < min(b["kl"] for b in r.baselines.values())


def test_optimum_is_a_local_minimum_under_perturbation(cifar10_lam):
    r = optimize_schedule(cifar10_lam, None, 8)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = project_feasible(r.x * np.exp(1e-3 * rng.standard_normal(r.x.size)))
        assert evaluate_schedule(cifar10_lam, None, x).w2 >= r.fun * (1 - 1e-9)


def test_mean_term_pushes_last_level_down():
    # With a large data mean, the N(0, I) start costs sqrt(ab_S) H m: the optimum puts its
    # last level lower than for centred data, and forbidding that (ab_min) costs loss.
    lam = np.array([1.0, 0.5, 0.1])
    mean = np.array([5.0, 0.0, 0.0])
    centred = optimize_schedule(lam, None, 6)
    r1 = optimize_schedule(lam, mean, 6)
    r2 = optimize_schedule(lam, mean, 6, ab_min=1e-2)
    assert r1.x[-1] < 0.1 * centred.x[-1]
    assert r2.fun > r1.fun


def test_non_convergence_is_reported_not_raised(cifar10_lam):
    r = optimize_schedule(cifar10_lam, None, 20, maxiter=2, starts=("linear",))
    assert not r.success
    assert "iteration" in r.message.lower()


def test_project_feasible():
    x = project_feasible(np.array([1.0, 0.5, 0.5, 0.0]), 0.1, 0.9, 0.01)
    np.testing.assert_allclose(x, [0.9, 0.5, 0.49, 0.1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": 0}, "steps"),
        ({"num_steps": 5, "loss": "l1"}, "loss"),
        ({"num_steps": 5, "ab_min": 0.5, "ab_max": 0.4}, "ab_max: expected a level above"),
        ({"num_steps": 5, "ab_min": float("nan")}, "ab_min: expected a level"),
        ({"num_steps": 5, "ab_max": 1.0}, "ab_max: expected a level"),
        ({"num_steps": 5, "delta": float("inf")}, "delta: expected a finite margin"),
        ({"num_steps": 100, "ab_min": 0.1, "ab_max": 0.2, "delta": 0.01}, "do not fit"),
        ({"num_steps": 5, "method": "adam"}, "method"),
        ({"num_steps": 5, "maxiter": 2**31}, "maxiter"),
        ({"num_steps": 1001}, "steps: 1001 sampling steps do not fit"),
    ],
)
def test_bad_problems_are_rejected(kwargs, match):
    with pytest.raises(InputError, match=match) as exc:
        optimize_schedule(np.ones(3), None, **kwargs)
    # the parameter at fault is named first, for the command line to swap in its flag
    assert exc.value.param is None or str(exc.value).startswith(f"{exc.value.param}: ")


def test_logsnr_methods_agree_where_slsqp_on_ab_is_poorly_scaled(cifar10_lam):
    # At S = 100 the three methods must reach the same optimum, SLSQP on logSNR and the
    # independent L-BFGS to 1e-6; the paper's SLSQP on ab may stop above it, never below.
    kw = dict(starts=("linear",))
    y = optimize_schedule(cifar10_lam, None, 100, method="slsqp-logsnr", **kw)
    u = optimize_schedule(cifar10_lam, None, 100, method="lbfgs-logsnr", **kw)
    assert y.success and u.success
    assert y.fun == pytest.approx(u.fun, rel=1e-6)
    assert optimize_schedule(cifar10_lam, None, 100, method="slsqp", **kw).fun >= y.fun * (1 - 1e-9)


@pytest.mark.parametrize("sampler", ["ddpm-large", "ddim-ve", "ddpm-ve"])
def test_every_discrete_sampler_optimises(cifar10_lam, sampler):
    for loss in ("w2", "kl-data-gen"):
        r = optimize_schedule(cifar10_lam, None, 8, sampler=sampler, loss=loss)
        best = min(b[loss.replace("-", "_")] for b in r.baselines.values())
        assert r.success and r.fun <= best


def test_quadrature_optimum_matches_exact_on_a_large_spectrum():
    # A synthetic large spectrum (power law, d = 30000): the schedule optimised on ~200
    # quadrature nodes is as good, under the exact loss, as the one optimised exactly.
    rng = np.random.default_rng(5)
    lam = np.sort(rng.pareto(1.5, 30_000) * 1e-3)[::-1]
    quad = optimize_schedule(lam, None, 12, quadrature=256, starts=("linear", "karras"))
    exact = optimize_schedule(lam, None, 12, quadrature=None, starts=("linear", "karras"))
    assert quad.quadrature["nodes"] < 600
    assert quad.fun == pytest.approx(exact.fun, rel=1e-6)
    q = quad.quadrature
    assert q["error"] <= 10 * q["error_estimate"] + 1e-12 * q["objective_exact"]
    assert exact.quadrature is None


def test_warm_start_from_a_neighbouring_step_count(cifar10_lam):
    r20 = optimize_schedule(cifar10_lam, None, 20)
    warm = optimize_schedule(cifar10_lam, None, 24, x0=warm_start(r20.x, 24), starts=())
    cold = optimize_schedule(cifar10_lam, None, 24)
    assert warm.start == "warm"
    assert warm.fun == pytest.approx(cold.fun, rel=1e-8)
    assert warm.nfev <= cold.nfev


def test_practitioner_baselines_are_reported_on_the_range_asked_for(cifar10_lam):
    """The sigma baselines (karras, exponential, kl_optimal) are in every report, on EDM's
    range by default and on the bounds' range when asked; each loss is the closed form of
    that very schedule, written out independently here."""
    from specsched.schedules import baseline_alphas_cumprod, sigma_range_from_bounds

    lo, hi = 1e-4, 0.9999
    srange = sigma_range_from_bounds(lo, hi)
    default = optimize_schedule(cifar10_lam, None, 8, ab_min=lo, ab_max=hi)
    ranged = optimize_schedule(cifar10_lam, None, 8, ab_min=lo, ab_max=hi, sigma_range=srange)
    assert {"karras", "exponential", "kl_optimal"} <= set(default.baselines)
    assert ranged.fun == pytest.approx(default.fun, rel=1e-9)  # the problem is unchanged
    for name in ("karras", "exponential", "kl_optimal"):
        for res, rng in ((default, (0.002, 80.0)), (ranged, srange)):
            ab = baseline_alphas_cumprod(name, 8, sigma_range=rng)
            ref = evaluate_schedule(cifar10_lam, None, ab)
            assert res.baselines[name]["w2"] == pytest.approx(ref.w2, rel=1e-12)
        assert ranged.baselines[name]["w2"] != pytest.approx(default.baselines[name]["w2"])
        assert ranged.fun <= ranged.baselines[name]["w2"]  # same room: the optimum wins
    assert ranged.baselines["linear/linspace"] == default.baselines["linear/linspace"]
    with pytest.raises(InputError, match="^sigma_min"):
        optimize_schedule(cifar10_lam, None, 4, sigma_range=(1.0, 0.5))


def test_staged_quadrature_reaches_the_exact_optimum():
    """Above 50 steps auto runs the starts on a 64-bin quadrature of the 3072 CIFAR-10
    directions (106 nodes) and polishes on the exact spectrum: the same optimum, to 1e-9, as
    L-BFGS on the exact spectrum throughout and as SLSQP on logSNR (slow at this S)."""
    from specsched.spectrum import load_spectrum

    spectrum = load_spectrum("cifar10")
    lam, mean = spectrum.eigenvalues, spectrum.mean
    staged = optimize_schedule(lam, mean, 120, spacings=())
    exact = optimize_schedule(lam, mean, 120, method="lbfgs-log-increments", quadrature=None,
                              spacings=(), starts=("linear",))
    slsqp = optimize_schedule(lam, mean, 120, method="slsqp-logsnr", starts=("linear",),
                              spacings=())
    assert staged.method == "newton-logsnr" and staged.success
    q = staged.quadrature
    assert q["polished"] and q["bins"] == 64 and q["nodes"] < 3072 // 10
    assert q["objective_exact"] <= q["objective_before_polish"]
    assert np.sqrt(q["objective_exact"]) == pytest.approx(staged.fun, rel=1e-12)
    assert staged.fun == pytest.approx(exact.fun, rel=1e-9)
    assert staged.fun == pytest.approx(slsqp.fun, rel=1e-9)
    assert evaluate_schedule(lam, mean, staged.x).w2 == pytest.approx(staged.fun, rel=1e-12)
    assert np.all(-np.diff(staged.x) >= 1e-7 * (1 - 1e-9))


def test_margin_map_covers_the_feasible_set_exactly():
    """Any increments give a feasible schedule (bounds and margin), and every feasible
    schedule, one with levels on both bounds and on the margin included, maps back to
    itself: L-BFGS on the increments works on the feasible set, nothing projected after."""
    from specsched.optimize.problem import _MarginMap

    rng = np.random.default_rng(3)
    S, delta = 40, 1e-4
    levels = _MarginMap(S, AB_MIN, AB_MAX, delta)
    for _ in range(20):
        ab = levels.levels(np.exp(rng.normal(0.0, 3.0, S + 1)))[0]
        assert AB_MIN <= ab[-1] and ab[0] <= AB_MAX
        assert np.all(-np.diff(ab) >= delta * (1 - 1e-9))
    x = project_feasible(np.linspace(1.0, 0.0, S) ** 3, AB_MIN, AB_MAX, delta)
    assert x[0] == AB_MAX and np.isclose(x[-1], AB_MIN, rtol=1e-9, atol=0)
    assert np.isclose(x[-2] - x[-1], delta)
    back = levels.levels(levels.increments(x))[0]
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("sampler, init, loss", [
    ("ddim", "normal", "w2"), ("ddim-ve", "normal", "w2"), ("ddim", "normal", "kl"),
])
def test_newton_reaches_the_optimum_of_the_first_order_methods(sampler, init, loss):
    """Newton's method in logSNR (exact spectrum, every start run) lands on the value SLSQP on
    logSNR and L-BFGS on the log-increments reach, with a data mean (the last level couples
    to every direction), from every start; the KL runs L-BFGS first and Newton from its end."""
    from specsched.spectrum import load_spectrum

    spectrum = load_spectrum("natural-patches")
    lam, mean = spectrum.eigenvalues, spectrum.mean
    kw = dict(sampler=sampler, init=init, loss=loss, spacings=(), quadrature=None)
    newton = optimize_schedule(lam, mean, 60, method="newton-logsnr", agree_rtol=None, **kw)
    lbfgs = optimize_schedule(lam, mean, 60, method="lbfgs-log-increments", **kw)
    slsqp = optimize_schedule(lam, mean, 60, method="slsqp-logsnr", starts=("linear",), **kw)
    assert newton.success and newton.method == "newton-logsnr"
    best = min(lbfgs.fun, slsqp.fun)
    assert newton.fun <= best * (1 + 1e-10)
    assert newton.fun == pytest.approx(best, rel=1e-8)
    assert np.all(-np.diff(newton.x) >= 1e-7 * (1 - 1e-9))
    assert ("L-BFGS" in newton.message) == (loss != "w2")
    if loss == "w2":  # every start converges to the one optimum
        assert max(newton.starts.values()) == pytest.approx(newton.fun, rel=1e-9)


def test_newton_holds_a_level_on_its_bound(cifar10_lam):
    """Within the linear training range the least noisy level of the DDIM W2 optimum sits on
    ab_max (its gradient points outside): Newton keeps it there and agrees with SLSQP."""
    from specsched.optimize import LINEAR_AB_MAX, LINEAR_AB_MIN

    kw = dict(ab_min=LINEAR_AB_MIN, ab_max=LINEAR_AB_MAX, starts=("linear", "cosine"),
              spacings=(), quadrature=None)
    newton = optimize_schedule(cifar10_lam, None, 80, method="newton-logsnr", **kw)
    slsqp = optimize_schedule(cifar10_lam, None, 80, method="slsqp-logsnr", **kw)
    assert newton.x[0] == LINEAR_AB_MAX and newton.success
    assert newton.fun == pytest.approx(slsqp.fun, rel=1e-9)


def test_auto_uses_newton_for_deterministic_samplers_only(cifar10_lam):
    assert optimize_schedule(cifar10_lam, None, 60, starts=("linear",)).method == "newton-logsnr"
    for kw in ({"sampler": "ddpm"}, {"eta": 0.5}, {"noise": "equal-snr"}):
        r = optimize_schedule(cifar10_lam, None, 60, starts=("linear",), maxiter=3, **kw)
        assert r.method == "lbfgs-log-increments"
    with pytest.raises(InputError, match="^method: newton-logsnr needs a sampler that injects "
                       "no noise.*'ddpm'") as exc:
        optimize_schedule(cifar10_lam, None, 60, sampler="ddpm", method="newton-logsnr")
    assert exc.value.param == "method"


def test_dpmpp_2m_has_distinct_local_minima(cifar10_lam):
    """Why no method can promise dpmpp-2m's optimum (docs/theory.md section 5): from the karras
    and logsnr starts at S = 10 SLSQP stops at two schedules that are both strict local minima
    (free gradient ~1e-4 of the loss, positive-definite Hessian in logSNR) with W2 0.0594 and
    0.0445, and from the linear start it finds 0.0315 with two levels almost merged."""
    from scipy.special import expit

    from specsched.schedules import logsnr_from_alphas_cumprod
    from specsched.theory import loss_and_grad

    def fg(y):
        ab = expit(y)
        v, g = loss_and_grad(cifar10_lam, None, ab, sampler="dpmpp-2m")
        return v, g * ab * (1 - ab)

    values = {}
    for start in ("karras", "logsnr"):
        r = optimize_schedule(cifar10_lam, None, 10, sampler="dpmpp-2m", starts=(start,),
                              spacings=())
        y = logsnr_from_alphas_cumprod(r.x)
        v, g = fg(y)
        free = slice(0, 9)  # the last level sits on ab_min, its gradient pointing outside
        assert y[-1] == pytest.approx(logsnr_from_alphas_cumprod(AB_MIN), abs=1e-6)
        assert g[-1] > 0
        h = 1e-5
        H = np.stack([(fg(y + h * e)[1] - fg(y - h * e)[1]) / (2 * h) for e in np.eye(10)])
        H = ((H + H.T) / 2)[free, free]
        assert np.linalg.eigvalsh(H).min() > 0.1 * v  # strictly convex there
        # a Newton step from there gains at most 1e-5 of the loss: a local minimum
        assert g[free] @ np.linalg.solve(H, g[free]) / 2 < 1e-5 * v
        values[start] = r.fun
    assert values["karras"] == pytest.approx(0.0594, abs=1e-4)
    assert values["logsnr"] == pytest.approx(0.0445, abs=1e-4)
