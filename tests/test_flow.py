"""Flow matching (docs/theory.md section 10): levels, samplers, closed forms, optimiser, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from specsched.errors import InputError
from specsched.optimize import optimal_shift, optimize_schedule
from specsched.sampling import WienerDenoiser, sample
from specsched.schedules import (
    Schedule,
    alphas_cumprod_from_fm_times,
    fm_times_from_alphas_cumprod,
    sd3_shift,
    validate_fm_times,
)
from specsched.schedules.flow import (
    FM_BASELINES,
    flux_image_seq_len,
    flux_mu,
    fm_baseline_alphas_cumprod,
    fm_baseline_times,
)
from specsched.theory import closed_form, evaluate_schedule, loss_value
from specsched.theory.curvature import loss_curvature


def _gaussian(seed=0, d=6):
    rng = np.random.default_rng(seed)
    lam = np.sort(np.exp(rng.normal(0.0, 2.0, d)))[::-1]
    return lam, rng.normal(0.0, 1.0, d)


# --- levels -------------------------------------------------------------------------------


@given(t=st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=20))
def test_times_and_levels_round_trip(t):
    # alphas_cumprod holds 1 - ab ~ t^2 to eps / t^2 relative: t >= 1e-3 (the default bounds
    # stop at t = 0.002) round-trips to 1e-9
    t = np.asarray(t)
    ab = alphas_cumprod_from_fm_times(t)
    np.testing.assert_allclose(fm_times_from_alphas_cumprod(ab), t, rtol=1e-9, atol=1e-15)
    # the VP state of an FM state: ab = (1 - t)^2 / ((1 - t)^2 + t^2), logSNR = 2 log((1-t)/t)
    inner = t < 1.0
    np.testing.assert_allclose(logit(ab[inner]), 2 * np.log((1 - t[inner]) / t[inner]),
                               rtol=1e-9, atol=1e-9)
    assert np.all(ab[~inner] == 0.0)


@given(t=st.floats(1e-2, 0.99), s=st.floats(0.05, 20.0))
def test_sd3_shift_moves_every_logsnr_by_minus_two_log_s(t, s):
    shifted = float(sd3_shift(t, s))
    assert shifted / (1 - shifted) == pytest.approx(s * t / (1 - t), rel=1e-9)
    before, after = alphas_cumprod_from_fm_times([t, shifted])
    assert logit(after) - logit(before) == pytest.approx(-2 * np.log(s), abs=1e-6)
    assert sd3_shift(1.0, s) == 1.0


def test_baselines_of_the_field():
    S = 8
    np.testing.assert_allclose(fm_baseline_times("fm-uniform", S), np.arange(1, S + 1) / S)
    np.testing.assert_allclose(fm_baseline_times("sd3-shift", S, shift=1.0),
                               fm_baseline_times("fm-uniform", S))
    # Flux: mu from 0.5 at 256 tokens to 1.15 at 4096, and the exponential time shift is SD3's
    # shift by exp(mu)
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_image_seq_len(1024) == 4096
    np.testing.assert_allclose(fm_baseline_times("flux-shift", S, tokens=4096),
                               sd3_shift(np.arange(1, S + 1) / S, np.exp(1.15)))
    # Hoogeboom's shifted cosine: the cosine logSNR -2 log tan(pi u / 2) moved by 2 log(64/d)
    for d in (32, 64, 256):
        ab = fm_baseline_alphas_cumprod("shifted-cosine", S, resolution=d)
        u = np.arange(1, S) / S
        np.testing.assert_allclose(logit(ab[:-1]),
                                   -2 * np.log(np.tan(np.pi * u / 2)) + 2 * np.log(64 / d),
                                   rtol=1e-10, atol=1e-10)
    for name in FM_BASELINES:
        t = fm_baseline_times(name, S)
        assert t[-1] == 1.0 and np.all(np.diff(t) > 0)


@pytest.mark.parametrize("times, match", [
    ([0.2, 0.5, 1.5], r"^t\[2\]: expected a flow-matching time in \(0, 1\]"),
    ([0.0, 0.5], r"^t\[0\]: expected a flow-matching time in \(0, 1\]"),
    ([0.5, 0.2, 1.0], r"^t\[1\]: expected strictly increasing times"),
    ([0.2, float("nan")], r"^t\[1\]: expected a finite number"),
])
def test_bad_times_are_refused(times, match):
    with pytest.raises(InputError, match=match):
        validate_fm_times(times)
    with pytest.raises(InputError, match=r"^shift: expected a finite number > 0, got 0"):
        sd3_shift([0.5], 0.0)


# --- samplers and closed forms -----------------------------------------------------------


@pytest.mark.parametrize("t_S", [1.0, 0.9])
def test_euler_on_the_velocity_is_ddim(t_S):
    """fm-euler (its own update, x' = x + (t' - t) v_hat) and DDIM give the same law whenever
    they start from the same one: from pure noise (t_S = 1) and from the marginal; from
    N(0, 1) at t_S < 1 the starts differ (the FM state is sqrt((1 - t)^2 + t^2) times the VP
    one), and so do the laws."""
    lam, m = _gaussian(1)
    ab = alphas_cumprod_from_fm_times(np.linspace(0.03, t_S, 9))
    for init in ("normal", "marginal"):
        fm = evaluate_schedule(lam, m, ab, sampler="fm-euler", init=init)
        vp = evaluate_schedule(lam, m, ab, sampler="ddim", init=init)
        if t_S == 1.0 or init == "marginal":
            assert fm.w2 == pytest.approx(vp.w2, rel=1e-12)
            np.testing.assert_allclose(fm.variance, vp.variance, rtol=1e-12)
        else:
            assert abs(fm.w2 - vp.w2) > 1e-3 * vp.w2


@pytest.mark.parametrize("sampler", ["fm-euler", "fm-heun", "ddim"])
def test_closed_forms_match_monte_carlo_from_pure_noise(sampler):
    """The torch-free sampler, run with the FM (or VP) Wiener denoiser from x ~ N(0, 1) at
    t = 1, against the closed form: means and variances within 4 standard errors."""
    lam, m = _gaussian(2, d=4)
    ab = fm_baseline_alphas_cumprod("sd3-shift", 6)
    n = 200_000
    for param in ("fm", "vp"):
        x = sample(WienerDenoiser(lam, m, param=param), ab, n, (4,), sampler=sampler,
                   rng=np.random.default_rng(7), progress=False, batch_size=50_000)
        gen = closed_form(lam, ab, sampler)
        mean, var = m + gen.mean_error(m), gen.variance
        assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(var / n) + 1e-12)
        assert np.all(np.abs(x.var(0) / var - 1) < 4 * np.sqrt(2 / n))


def test_heun_beats_euler_and_tends_to_the_flow():
    """Heun is second order: on fine uniform grids its transfer function approaches the exact
    flow map sqrt(lam / lam) = 1 (from pure noise the flow transports N(0, 1) to the data law)
    faster than Euler's."""
    lam, _ = _gaussian(3)
    err = {}
    for sampler in ("fm-euler", "fm-heun"):
        err[sampler] = [np.max(np.abs(closed_form(lam, alphas_cumprod_from_fm_times(
            np.arange(1, S + 1) / S), sampler).variance / lam - 1)) for S in (50, 100, 200)]
    assert err["fm-heun"][-1] < 0.1 * err["fm-euler"][-1]
    assert err["fm-euler"][0] / err["fm-euler"][1] > 1.7  # first order: ~2 per halving
    assert err["fm-heun"][0] / err["fm-heun"][1] > 3.4  # second order: ~4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), S=st.integers(2, 12),
       loss=st.sampled_from(["w2", "kl", "kl-data-gen"]), t_S=st.sampled_from([1.0, 0.95]))
def test_heun_gradient_and_hessian_match_finite_differences(seed, S, loss, t_S):
    lam, m = _gaussian(seed % 1000, d=5)
    t = np.sort(np.random.default_rng(seed).uniform(0.05, t_S, S))
    t[-1] = t_S
    if np.any(np.diff(t) < 1e-3):
        return
    y = logit(alphas_cumprod_from_fm_times(t))
    free = S - 1 if t_S == 1.0 else S  # t_S = 1 is a fixed level

    def f(yy):
        return loss_value(lam, m, expit(np.append(yy, y[free:])), loss=loss,
                          sampler="fm-heun")

    c = loss_curvature(lam, m, y, loss=loss, sampler="fm-heun")
    assert c.value == pytest.approx(f(y[:free]), rel=1e-11)
    h = 1e-5
    fd = np.array([(f(y[:free] + h * e) - f(y[:free] - h * e)) / (2 * h) for e in np.eye(free)])
    np.testing.assert_allclose(c.grad[:free], fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())

    def g(yy):
        return loss_curvature(lam, m, np.append(yy, y[free:]), loss=loss,
                              sampler="fm-heun").grad[:free]

    H = np.stack([(g(y[:free] + h * e) - g(y[:free] - h * e)) / (2 * h) for e in np.eye(free)])
    np.testing.assert_allclose(c.dense()[:free, :free], H, rtol=0,
                               atol=1e-6 * np.abs(H).max())


# --- optimiser ---------------------------------------------------------------------------


def test_zero_terminal_optimum_of_fm_euler_is_ddims():
    """The FM optimiser keeps t_S = 1 and reaches (SLSQP up to 50 steps, Newton's method above)
    the optimum that DDIM from pure noise reaches with SLSQP on logSNR from one start (the same
    law, another sampler definition and start set)."""
    from specsched.spectrum import load_spectrum

    sp = load_spectrum("natural-patches")
    for S in (8, 60):
        fm = optimize_schedule(sp.eigenvalues, sp.mean, S, sampler="fm-euler")
        vp = optimize_schedule(sp.eigenvalues, sp.mean, S, sampler="ddim", terminal="zero-snr",
                               method="slsqp-logsnr", starts=("linear",), spacings=())
        assert fm.success and fm.method == ("slsqp-logsnr" if S <= 50 else "newton-logsnr")
        assert fm.x[-1] == 0.0 and vp.x[-1] == 0.0
        assert fm.fun == pytest.approx(vp.fun, rel=1e-8)
        assert fm.fun < min(b["w2"] for b in fm.baselines.values())
        assert set(fm.baselines) == set(FM_BASELINES)


@pytest.mark.parametrize("S", [2, 3, 4, 9])
@pytest.mark.parametrize("sampler", ["fm-euler", "fm-heun", "ddim"])
def test_newton_on_a_few_levels_agrees_with_slsqp(S, sampler):
    """A few free levels (the dense Newton system, below LAPACK's tridiagonal LU) reach
    SLSQP's optimum."""
    lam, m = _gaussian(6, d=8)
    kw = dict(sampler=sampler, agree_rtol=None, quadrature=None, spacings=())
    newton = optimize_schedule(lam, m, S, method="newton-logsnr", **kw)
    slsqp = optimize_schedule(lam, m, S, method="slsqp-logsnr", **kw)
    assert newton.success and newton.fun == pytest.approx(slsqp.fun, rel=1e-9)


def test_one_step_from_pure_noise_returns_the_mean():
    lam, m = _gaussian(4)
    r = optimize_schedule(lam, m, 1, sampler="fm-heun")
    assert r.x.tolist() == [0.0] and r.success
    assert r.w2 == pytest.approx(np.sqrt(lam.sum()), rel=1e-12)  # every sample is the mean


def test_best_shift_is_a_minimum_between_the_rules_and_the_full_schedule():
    from specsched.spectrum import load_spectrum

    sp = load_spectrum("cifar10")
    lam, m = sp.eigenvalues, sp.mean
    best = optimal_shift(lam, m, 10)
    for s in (best.shift * 0.98, best.shift * 1.02, 1.0, 3.0):
        ab = fm_baseline_alphas_cumprod("sd3-shift", 10, shift=s)
        assert evaluate_schedule(lam, m, ab, sampler="fm-euler").w2 >= best.w2 * (1 - 1e-12)
    assert not best.on_bound
    full = optimize_schedule(lam, m, 10, sampler="fm-euler")
    assert full.fun < 0.9 * best.fun  # the full schedule gains >10% over one scalar
    with pytest.raises(InputError, match="^sampler: 'dpmpp-2m' runs on sigmas"):
        optimal_shift(lam, m, 10, sampler="dpmpp-2m")


# --- files and command line --------------------------------------------------------------


def test_schedule_file_with_pure_noise_round_trips(tmp_path):
    ab = fm_baseline_alphas_cumprod("sd3-shift", 5)
    path = Schedule(ab, param="fm", sampler="fm-euler").save(tmp_path / "s.json")
    d = json.loads(path.read_text())
    assert d["alphas_cumprod"][-1] == 0.0 and d["t"][-1] == 1.0
    assert d["sigmas"][-1] is None and d["logsnr"][-1] is None  # JSON has no infinity
    back = Schedule.load(path)
    np.testing.assert_array_equal(back.alphas_cumprod, ab)
    np.testing.assert_allclose(back.fm_times, d["t"], rtol=1e-15)
    d["param"] = "vp"
    (tmp_path / "vp.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"alphas_cumprod\[4\]: .*allowed with param fm"):
        Schedule.load(tmp_path / "vp.json")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "specsched.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_optimises_a_flow_matching_schedule_and_reports_the_best_shift(tmp_path):
    out = _cli("optimize", "--spectrum", "cifar10", "--param", "fm", "--steps", "6",
               "--sampler", "heun", "--out", "o", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sched = json.loads((tmp_path / "o" / "schedule_fm-heun_w2_S6.json").read_text())
    assert sched["param"] == "fm" and sched["sampler"] == "fm-heun" and sched["t"][-1] == 1.0
    best = sched["baselines"]["sd3-shift/best"]
    assert best["shift"] > 0 and sched["loss_value"] < best["w2"] <= min(
        v["w2"] for k, v in sched["baselines"].items() if k != "sd3-shift/best") + 1e-12
    assert "best SD3 shift" in out.stdout + out.stderr
    ev = _cli("evaluate", "--spectrum", "cifar10", "--schedule",
              "o/schedule_fm-heun_w2_S6.json", "--json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["w2"] == pytest.approx(sched["loss_value"], rel=1e-9)


@pytest.mark.parametrize("args, match", [
    (["evaluate", "--schedule", "s.json", "--param", "vp"], "is FM, not vp"),
    (["evaluate", "--schedule", "s.json", "--sampler", "dpmpp-2m"],
     "'dpmpp-2m' runs on sigmas and cannot start from pure noise"),
    (["evaluate", "--schedule", "s.json", "--param", "vp", "--sampler", "ddim"],
     "param: the schedule was made for 'fm'"),
    (["evaluate", "--schedule", "vp.json", "--param", "fm"],
     "param: the schedule was made for 'vp'"),
    (["evaluate", "--schedule", "sd3-shift", "--steps", "5", "--shift", "0"],
     "--shift: expected a finite number > 0, got 0"),
    (["evaluate", "--schedule", "cosine", "--steps", "5", "--shift", "2"],
     "--shift: applies to flow matching"),
    (["optimize", "--param", "fm", "--sampler", "dpmpp-2m", "--steps", "5", "--out", "x"],
     "--param: sampler 'dpmpp-2m' is VE, not a flow-matching sampler"),
])
def test_cli_refuses_a_schedule_under_the_wrong_parametrisation(tmp_path, args, match):
    Schedule(fm_baseline_alphas_cumprod("sd3-shift", 5), param="fm",
             sampler="fm-euler").save(tmp_path / "s.json")
    Schedule([0.9, 0.5, 0.1], param="vp", sampler="ddim").save(tmp_path / "vp.json")
    out = _cli(*args, "--spectrum", "cifar10", cwd=tmp_path)
    assert out.returncode == 2
    assert match in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_cli_exports_a_flow_matching_baseline(tmp_path):
    out = _cli("export", "--baseline", "sd3-shift", "--steps", "5", "--shift", "2.5", "--to",
               "t", "--out", "t.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    d = json.loads((tmp_path / "t.json").read_text())
    key = next(k for k, v in d.items() if isinstance(v, list))
    np.testing.assert_allclose(d[key], fm_baseline_times("sd3-shift", 5, shift=2.5),
                               rtol=1e-15)
    bad = _cli("export", "--baseline", "cosine", "--steps", "5", "--shift", "2", "--to", "t",
               "--out", "c.json", cwd=tmp_path)
    assert bad.returncode == 2 and "--shift: applies to a flow-matching --baseline" in bad.stderr
    assert not (tmp_path / "c.json").exists()


def test_heun_directions_sent_to_the_mean_by_rounding():
    """fm-heun's last gain is the Wiener gain formed as 1 - (1 - g): for eigenvalues ~1e-14
    (round-off of a rank-deficient covariance) it rounds to 0. Those directions add their
    H = 0 limit, lambda, to W2^2 instead of stopping the optimiser."""
    lam = np.r_[np.linspace(500, 0.1, 20), np.full(5, 1e-14)]
    with_tiny = optimize_schedule(lam, None, 10, sampler="fm-heun")
    without = optimize_schedule(lam[:20], None, 10, sampler="fm-heun")
    assert with_tiny.success
    assert with_tiny.fun**2 == pytest.approx(without.fun**2 + 5e-14, abs=1e-12)
