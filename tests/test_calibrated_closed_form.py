"""The network-calibrated closed form: k-diffusion's samplers with a measured linear denoiser.

``kclosed_form(..., calibration=cal)`` replaces the Wiener filter by ``D(x) - m = a (x - m) +
b + sqrt(r) w`` per direction (specsched.sampling.calibration). It must give

- the Wiener closed form when ``cal`` is the Wiener filter measured on the levels the
  sampler reads (interpolation is then exact);
- the law of the same sampler run by Monte Carlo with that denoiser (gain, bias and
  independent residual noise), within 4 standard errors, for a deterministic sampler, an
  ancestral one (independent draws) and a Brownian one (correlated draws, plus the
  residuals' independent ones); and refuse levels outside the calibrated range.
"""

from __future__ import annotations

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.sampling.calibration import LinearCalibration, calibrate_denoiser
from specsched.sampling.ksamplers import WienerModel, sample_k
from specsched.theory.kclosed import kclosed_form, kdiffusion_sigmas
from specsched.theory.ksolvers import resolve_options

LAM = np.array([3.0, 1.0, 0.4, 0.1, 0.02])
MEAN = np.array([0.5, -1.0, 0.2, 0.0, 1.5])
SIGMAS = kdiffusion_sigmas(np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[
    np.linspace(0, 999, 8).round().astype(int)])


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp-2m", "dpmpp-2m-sde", "lms"])
def test_the_measured_wiener_filter_gives_the_wiener_closed_form(name):
    levels = np.sort(SIGMAS[:-1])  # every level these samplers call the denoiser at
    x0 = MEAN + np.random.default_rng(0).standard_normal((64, LAM.size)) * np.sqrt(LAM)
    cal = calibrate_denoiser(WienerModel(LAM, MEAN), x0, levels, mean=MEAN,
                             rng=np.random.default_rng(1))
    for init in ("normal", "marginal"):
        ref = kclosed_form(LAM, SIGMAS, name, init=init)
        got = kclosed_form(LAM, SIGMAS, name, init=init, calibration=cal)
        np.testing.assert_allclose(got.variance, ref.variance, rtol=1e-8)
        np.testing.assert_allclose(got.mean_error(MEAN), ref.mean_error(MEAN), rtol=1e-8,
                                   atol=1e-12)


def planted(levels):
    """A denoiser unlike the Wiener filter: shrunk gains, a bias, residual noise."""
    g = LAM / (LAM + levels[:, None] ** 2)
    return LinearCalibration(levels, 0.8 * g, 0.05 * np.log1p(levels)[:, None] * MEAN / 2,
                             0.01 * g * (1 - g) + 1e-4, n_samples=1)


class PlantedModel:
    def __init__(self, cal, rng):
        self.cal, self.rng = cal, rng

    def __call__(self, x, sigma):
        a, b, r = self.cal.at(sigma)
        return MEAN + a * (x - MEAN) + b + np.sqrt(r) * self.rng.standard_normal(x.shape)


@pytest.mark.parametrize("name", ["dpmpp-2m", "euler-ancestral", "dpmpp-sde"])
def test_monte_carlo_with_the_calibrated_denoiser_matches(name):
    cal = planted(np.geomspace(0.005, 200.0, 40))
    n = 40_000
    rng = np.random.default_rng(5)
    x = sample_k(PlantedModel(cal, rng), SIGMAS, name, n, LAM.size, rng=rng,
                 options=resolve_options(name))
    gen = kclosed_form(LAM, SIGMAS, name, calibration=cal)
    z_mean = (x.mean(0) - MEAN - gen.mean_error(MEAN)) / np.sqrt(gen.variance / n)
    z_var = (x.var(0, ddof=1) - gen.variance) / (gen.variance * np.sqrt(2.0 / (n - 1)))
    assert np.all(np.abs(z_mean) < 4.0), z_mean
    assert np.all(np.abs(z_var) < 4.0), z_var
    # the test has power: the Wiener closed form is rejected
    wiener = kclosed_form(LAM, SIGMAS, name)
    z_w = (x.var(0, ddof=1) - wiener.variance) / (wiener.variance * np.sqrt(2.0 / (n - 1)))
    assert np.max(np.abs(z_w)) > 10.0


def test_levels_outside_the_calibration_are_refused():
    cal = planted(np.geomspace(0.1, 10.0, 5))  # SIGMAS run from 0.01 to 157
    with pytest.raises(InputError, match="calibration: levels from .* outside the calibrated"):
        kclosed_form(LAM, SIGMAS, "euler", calibration=cal)
    with pytest.raises(InputError, match="calibration: has 3 directions"):
        kclosed_form(LAM, SIGMAS, "euler",
                     calibration=LinearCalibration(cal.sigmas, cal.gain[:, :3],
                                                   cal.bias[:, :3],
                                                   cal.residual_variance[:, :3], 1))
    with pytest.raises(InputError, match="backend"):
        kclosed_form(LAM, SIGMAS, "euler", backend="numba", calibration=cal)


@pytest.mark.parametrize("name", ["euler", "dpmpp-2m", "dpmpp-sde", "heun"])
def test_gradient_in_the_sigmas_matches_central_differences(name):
    from specsched.theory.kclosed import kclosed_form_vjp
    from specsched.theory.losses import loss_value_and_partials

    cal = planted(np.geomspace(0.005, 200.0, 40))

    def w2(sig):
        gen = kclosed_form(LAM, sig, name, calibration=cal)
        return loss_value_and_partials("w2", LAM, gen.variance, gen.mean_error(MEAN))[0]

    def partials(gen):
        v, d_var, d_err = loss_value_and_partials("w2", LAM, gen.variance, gen.mean_error(MEAN))
        return v, d_var, d_err * MEAN, d_err

    value, _, grad = kclosed_form_vjp(LAM, SIGMAS, name, None, "normal", partials,
                                      calibration=cal)
    assert value == pytest.approx(w2(SIGMAS), rel=1e-12)
    fd = np.zeros_like(SIGMAS)
    for j in range(SIGMAS.size - 1):
        e = 1e-5 * SIGMAS[j]
        up, down = SIGMAS.copy(), SIGMAS.copy()
        up[j] += e
        down[j] -= e
        fd[j] = (w2(up) - w2(down)) / (2 * e)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.max(np.abs(fd)))
    with pytest.raises(InputError, match="loss_partials"):
        kclosed_form_vjp(LAM, SIGMAS, name, None, "normal", lambda g: partials(g)[:3],
                         calibration=cal)


def test_optimising_for_the_calibrated_denoiser_beats_the_wiener_optimum_under_it():
    from specsched.optimize import optimize_schedule
    from specsched.theory import evaluate_schedule

    cal = planted(np.geomspace(1e-3, 3e4, 200))
    kw = dict(sampler="dpmpp-2m", starts=("linear", "karras"))
    wiener = optimize_schedule(LAM, MEAN, 6, **kw)
    ours = optimize_schedule(LAM, MEAN, 6, calibration=cal, **kw)
    under_cal = evaluate_schedule(LAM, MEAN, wiener.x, sampler="dpmpp-2m", calibration=cal)
    assert ours.w2 < under_cal.w2 * 0.99  # it optimises the calibrated objective
    assert ours.w2 == pytest.approx(
        evaluate_schedule(LAM, MEAN, ours.x, sampler="dpmpp-2m", calibration=cal).w2,
        rel=1e-12)
    assert ours.quadrature is None  # the calibration is per direction: no compression


def test_calibration_is_refused_for_the_discrete_samplers():
    from specsched.theory import evaluate_schedule

    cal = planted(np.geomspace(1e-3, 3e4, 20))
    with pytest.raises(InputError, match="calibration: applies to the samplers of k-diff"):
        evaluate_schedule(LAM, MEAN, np.linspace(0.99, 0.1, 5), sampler="ddim",
                          calibration=cal)


def test_baselines_outside_the_calibrated_range_are_reported_not_raised():
    """A narrow calibration (a network trained on [0.01, 12]) cannot judge linear's sigma up
    to 157: its losses are NaN with a note, while a baseline inside is the closed form."""
    from specsched.optimize.problem import baseline_losses
    from specsched.schedules import baseline_alphas_cumprod
    from specsched.theory import evaluate_schedule

    cal = planted(np.geomspace(0.01, 12.0, 40))
    out = baseline_losses(LAM, MEAN, 6, sampler="euler", sigma_range=(0.01, 12.0),
                          calibration=cal)
    assert np.isnan(out["linear/linspace"]["w2"])
    assert "outside the calibrated range [0.01, 12]" in out["linear/linspace"]["note"]
    ab = baseline_alphas_cumprod("karras", 6, sigma_range=(0.01, 12.0))
    assert out["karras"]["w2"] == pytest.approx(
        evaluate_schedule(LAM, MEAN, ab, sampler="euler", calibration=cal).w2, rel=1e-12)
    assert "note" not in out["karras"]
