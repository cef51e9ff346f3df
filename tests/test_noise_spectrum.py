"""Coloured forward noise (docs/theory.md section 9): the spectra, the reduction, FANS' levels.

The closed forms under a noise spectrum are checked against an independent per-direction
recursion written here from Song et al.'s DDIM-eta step in (signal scale, noise std) form,
with no rescaling at all; the constant-colour reduction against the per-direction route of
specsched.theory.varying; gradients against finite differences.
"""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.errors import InputError
from specsched.theory import evaluate_schedule, loss_and_grad, loss_value
from specsched.theory.noise import WHITE, NoiseSpectrum, fans_bands, noise_spectrum
from specsched.theory.varying import effective_levels, varying_loss


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    lam = np.sort(rng.lognormal(0.0, 2.0, 24))[::-1]
    lam[-2:] = 0.0  # exact zeros, as an empirical covariance has
    m = rng.normal(size=24)
    ab = np.sort(rng.uniform(0.005, 0.995, 7))[::-1]
    return lam, m, ab


def direct_ddim_eta(lam, m, ab, c_of_ab, eta, init="normal"):
    """W2^2 and KL of DDIM-eta under forward noise c(ab), by moments in x, per direction.

    Song, Meng, Ermon (2021) eq. 12 with per-direction alpha = sqrt(ab), sigma =
    sqrt((1 - ab) c(ab)): x' = alpha' x0_hat + sqrt(sigma'^2 - s^2) (x - alpha x0_hat) / sigma
    + s z, s^2 = eta^2 sigma'^2 (1 - (alpha sigma' / (alpha' sigma))^2); Wiener x0_hat.
    """
    levels = np.concatenate([[1.0], ab])
    a_S = np.sqrt(ab[-1])
    s_S = np.sqrt((1 - ab[-1]) * c_of_ab(ab[-1]))
    if init == "normal":
        mean, var = np.zeros_like(lam), c_of_ab(ab[-1]).copy()
    else:
        mean, var = a_S * m, a_S**2 * lam + s_S**2
    for s in range(ab.size, 0, -1):
        al, alp = np.sqrt(levels[s]), np.sqrt(levels[s - 1])
        sg = np.sqrt((1 - levels[s]) * c_of_ab(levels[s]))
        sgp = np.sqrt((1 - levels[s - 1]) * c_of_ab(levels[s - 1]))
        g = al * lam / (al**2 * lam + sg**2)
        ss2 = eta**2 * sgp**2 * (1 - (al * sgp / (alp * sg)) ** 2)
        rho = np.sqrt(np.maximum(sgp**2 - ss2, 0.0)) / sg
        A = (alp - rho * al) * g + rho
        B = (alp - rho * al) * (1 - g * al)
        mean, var = A * mean + B * m, A * A * var + ss2
    e = mean - m
    w2 = np.sum(e**2 + (np.sqrt(var) - np.sqrt(lam)) ** 2)
    keep = lam > 1e-12 * lam.max()
    r = var[keep] / lam[keep]
    kl = 0.5 * np.sum(r - 1 - np.log(r) + e[keep] ** 2 / lam[keep])
    return w2, kl


# --- the spectra -------------------------------------------------------------------------------

def test_named_spectra(problem):
    lam = problem[0]
    assert noise_spectrum(None, lam) is WHITE and noise_spectrum("white", lam) is WHITE
    assert noise_spectrum("power:0", lam) is WHITE
    eq = noise_spectrum("equal-snr", lam)
    assert eq.label == "equal-snr" and not eq.time_varying
    assert eq.variances.mean() == pytest.approx(1.0, rel=1e-14)
    floor = 1e-12 * lam.max()
    np.testing.assert_allclose(eq.variances / eq.variances[0],
                               np.maximum(lam, floor) / lam[0], rtol=1e-13)
    assert noise_spectrum("power:1", lam).label == "equal-snr"
    p = noise_spectrum("power:0.5", lam)
    assert p.label == "power:0.5"
    np.testing.assert_allclose(p.variances / p.variances[0],
                               np.sqrt(np.maximum(lam, floor) / lam[0]), rtol=1e-13)
    f = noise_spectrum("fans", lam)
    assert f.label == "fans:1.0" and f.time_varying
    assert f.variances.mean() == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose(f.at(np.array([0.0, 0.3, 1.0])).mean(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(f.at(1.0), np.ones(lam.size))


def test_fans_bands_are_rings_of_equal_width():
    # 64 x 64 frequencies in 8 bands: band b holds ranks [d (b/8)^2, d ((b+1)/8)^2)
    bands = fans_bands(4096)
    counts = np.bincount(bands)
    np.testing.assert_array_equal(counts, [64 * (2 * b + 1) for b in range(8)])
    assert np.all(np.diff(bands) >= 0)


def test_fans_shape_is_the_band_mean(problem):
    lam = problem[0]
    f = noise_spectrum("fans:0.5", lam)
    bands = fans_bands(lam.size)
    first = bands[0]  # with d < 64 the innermost rings hold no rank
    for b in np.unique(bands):
        band = np.maximum(lam[bands == b], 1e-12 * lam.max())
        np.testing.assert_allclose(f.variances[bands == b],
                                   f.variances[bands == b][0], rtol=1e-14)
        ratio = f.variances[bands == b][0] / f.variances[0]
        assert ratio == pytest.approx((band.mean() / lam[bands == first].mean()) ** 0.5, rel=1e-12)


def test_file_spectrum(tmp_path, problem):
    lam = problem[0]
    c = np.linspace(0.5, 2.0, lam.size)
    path = tmp_path / "c.npy"
    np.save(path, c)
    ns = noise_spectrum(str(path), lam)
    assert ns.label == "file:sha256:" + hashlib.sha256(c.tobytes()).hexdigest()
    np.testing.assert_array_equal(ns.variances, c)  # used as given, not normalised


@pytest.mark.parametrize("spec, match", [
    ("power:2.5", r"GAMMA must be a number in \[0, 2\]"),
    ("power:-0.1", "GAMMA must be"),
    ("power:nan", "GAMMA must be"),
    ("power:abc", "GAMMA must be"),
    ("fans:3", "GAMMA must be"),
    ("pink", "expected one of white, equal-snr"),
])
def test_bad_names(problem, spec, match):
    with pytest.raises(InputError, match=match) as err:
        noise_spectrum(spec, problem[0])
    assert err.value.param == "noise_spectrum"


@pytest.mark.parametrize("values, match", [
    (lambda d: np.ones(d - 1), r"expected 24 noise variances .* got shape \(23,\)"),
    (lambda d: np.ones((d, 1)), "expected 24 noise variances"),
    (lambda d: np.r_[np.ones(d - 1), -1.0], "finite and > 0; entry 23 is -1.0"),
    (lambda d: np.r_[np.nan, np.ones(d - 1)], "entry 0 is nan"),
    (lambda d: np.r_[0.0, np.ones(d - 1)], "entry 0 is 0.0"),
    (lambda d: np.array(["a"] * d), "expected a real numeric"),
])
def test_bad_files(tmp_path, problem, values, match):
    path = tmp_path / "c.npy"
    np.save(path, values(problem[0].size))
    with pytest.raises(InputError, match=match) as err:
        noise_spectrum(str(path), problem[0])
    assert str(path) in str(err.value)


def test_missing_file(problem):
    with pytest.raises(InputError, match="no such noise-spectrum file"):
        noise_spectrum("/nonexistent/c.npy", problem[0])


# --- the closed forms against the direct recursion ---------------------------------------------

@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5", "power:1.7", "fans", "fans:0.4"])
@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddpm", 1.0), ("ddim", 0.5)])
@pytest.mark.parametrize("init", ["normal", "marginal"])
def test_closed_form_matches_direct_recursion(problem, spec, sampler, eta, init):
    lam, m, ab = problem
    ns = noise_spectrum(spec, lam)
    w2, kl = direct_ddim_eta(lam, m, ab, ns.at, eta, init)
    r = evaluate_schedule(lam, m, ab, sampler=sampler, eta=eta, init=init, noise=ns)
    assert r.w2**2 == pytest.approx(w2, rel=1e-11)
    assert r.kl == pytest.approx(kl, rel=1e-10)
    for loss, want in (("w2", w2), ("kl", kl)):
        for backend in ("numpy", "numba"):
            v = loss_value(lam, m, ab, loss=loss, sampler=sampler, eta=eta, init=init,
                           noise=ns, backend=backend)
            assert v == pytest.approx(want, rel=1e-10)


class _Constant(NoiseSpectrum):
    """A constant spectrum sent through the per-direction (level-dependent) route."""

    def at(self, alphas_cumprod):
        ab = np.asarray(alphas_cumprod)
        return self.variances + 0.0 * ab[..., None]


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("loss", ["w2", "kl", "kl-data-gen"])
def test_reduction_equals_per_direction_levels(problem, sampler, loss):
    # y = x / sqrt(c) and per-direction levels ab / (ab + (1 - ab) c) are two derivations
    lam, m, ab = problem
    c = np.random.default_rng(1).uniform(0.1, 5.0, lam.size)
    reduced = loss_value(lam, m, ab, loss=loss, sampler=sampler, noise=NoiseSpectrum("c", c))
    direct = varying_loss(lam, m, ab, _Constant("c", c, time_varying=True), loss=loss,
                          sampler=sampler, gradient=False)
    assert reduced == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp-2m", "heun", "ddim-ve", "ddpm-large",
                                     "euler-ancestral", "unipc"])
def test_uniform_colour_is_scaled_white_noise(problem, sampler):
    # c = c0 everywhere is white noise of std sqrt(c0): y = x / sqrt(c0) is the white problem
    # with data lam / c0, so W2 scales by sqrt(c0) and KL is unchanged
    lam, m, ab = problem
    c0 = 2.5
    r = evaluate_schedule(lam, m, ab, sampler=sampler, noise=NoiseSpectrum("c", np.full(24, c0)))
    w = evaluate_schedule(lam / c0, m / np.sqrt(c0), ab, sampler=sampler)
    assert r.w2 == pytest.approx(np.sqrt(c0) * w.w2, rel=1e-12)
    assert r.kl == pytest.approx(w.kl, rel=1e-12)
    np.testing.assert_allclose(r.variance, c0 * w.variance, rtol=1e-12)


def test_white_is_bit_for_bit(problem):
    lam, m, ab = problem
    for sampler in ("ddim", "ddpm", "euler", "dpmpp-2m"):
        a = evaluate_schedule(lam, m, ab, sampler=sampler)
        b = evaluate_schedule(lam, m, ab, sampler=sampler, noise="white")
        assert (a.w2, a.kl, a.kl_data_gen) == (b.w2, b.kl, b.kl_data_gen)
        ga = loss_and_grad(lam, m, ab, sampler=sampler)
        gb = loss_and_grad(lam, m, ab, sampler=sampler, noise=WHITE)
        assert ga[0] == gb[0] and np.array_equal(ga[1], gb[1])


# --- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, sampler, loss", [
    ("fans", "ddim", "w2"), ("fans", "ddpm", "kl"), ("fans:0.3", "ddim", "kl-data-gen"),
    ("equal-snr", "ddpm", "w2"), ("power:0.5", "ddim", "kl"), ("power:0.5", "dpmpp-2m", "w2"),
    ("power:1.5", "euler-ancestral", "kl"),
])
@pytest.mark.parametrize("init", ["normal", "marginal"])
def test_gradient_matches_finite_differences(problem, spec, sampler, loss, init):
    lam, m, ab = problem
    kw = dict(loss=loss, sampler=sampler, init=init, noise=noise_spectrum(spec, lam))
    _, grad = loss_and_grad(lam, m, ab, backend="numpy", **kw)
    h = 1e-6 * ab
    fd = np.array([(loss_value(lam, m, ab + h[i] * e, backend="numpy", **kw)
                    - loss_value(lam, m, ab - h[i] * e, backend="numpy", **kw)) / (2 * h[i])
                   for i, e in enumerate(np.eye(ab.size))])
    np.testing.assert_allclose(grad, fd, rtol=2e-5, atol=1e-7 * np.abs(fd).max())


# --- FANS' levels ------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=6))
def test_fans_levels_increase_with_ab(chat):
    # (1 - ab) chat + ab keeps every direction's SNR monotone: DDPM is defined on any schedule
    ns = NoiseSpectrum("fans:1.0", np.array(chat), time_varying=True)
    ab = np.linspace(1e-6, 1 - 1e-6, 4001)
    a, _ = effective_levels(ns, ab)
    assert np.all(np.diff(a, axis=0) > 0)


# --- refusals ----------------------------------------------------------------------------------

def test_fans_refuses_samplers_without_a_closed_form(problem):
    lam, m, ab = problem
    with pytest.raises(InputError, match=r"covers \['ddim', 'ddpm'\].*not 'euler'") as err:
        evaluate_schedule(lam, m, ab, sampler="euler", noise="fans")
    assert err.value.param == "sampler"


def test_dimension_mismatch(problem):
    lam, m, ab = problem
    with pytest.raises(InputError, match="has 3 variances, the data spectrum 24"):
        loss_value(lam, m, ab, noise=NoiseSpectrum("c", np.ones(3)))


# --- what the optimiser finds ------------------------------------------------------------------

def test_equal_snr_makes_one_problem_of_every_direction(problem):
    # every direction of y has the same variance mean(lambda) (or 0), so one schedule fits all:
    # the W2 optimum is 0 once the schedule can reach that variance (here mean(lambda) = 0.2,
    # as for image data in [-1, 1]), while white noise cannot get close
    from specsched.optimize import optimize_schedule

    lam = problem[0] / problem[0].mean() * 0.2
    white = optimize_schedule(lam, None, 4, starts=("linear",), spacings=())
    eq = optimize_schedule(lam, None, 4, starts=("linear",), spacings=(), noise="equal-snr")
    assert white.w2 > 1e-2
    assert eq.w2 < 1e-6 * white.w2


# --- the shipped strategy: properties under any noise spectrum ---------------------------------

@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_noise_spectrum_gives_a_law_and_scales(data):
    from specsched.testing import eigenvalue_arrays, noise_spectra, schedules

    lam = np.sort(data.draw(eigenvalue_arrays(min_size=2, max_size=6)))[::-1]
    ab = data.draw(schedules(max_steps=6))
    ns = data.draw(noise_spectra(lam))
    sampler = "ddpm" if ns.time_varying else data.draw(st.sampled_from(["ddpm", "euler",
                                                                         "dpmpp-2m"]))
    r = evaluate_schedule(lam, None, ab, sampler=sampler, noise=ns)
    assert np.all(r.variance > 0) and np.isfinite(r.w2) and r.kl >= 0
    if not ns.time_varying and not ns.is_white:
        # data and noise both scaled by k: the same problem in y, W2 scales by sqrt(k)
        k = data.draw(st.floats(0.1, 10.0))
        scaled = evaluate_schedule(k * lam, None, ab, sampler=sampler,
                                   noise=NoiseSpectrum("k c", k * ns.variances))
        assert scaled.w2 == pytest.approx(np.sqrt(k) * r.w2, rel=1e-9)
        assert scaled.kl == pytest.approx(r.kl, rel=1e-9, abs=1e-12)
