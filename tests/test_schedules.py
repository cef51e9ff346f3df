"""Tests of specsched.schedules: families, spacings, conversions and the schedule file.

References are written out independently here: diffusers' formulas (as in its
``set_timesteps`` / ``DDPMScheduler.__init__``), exact rational arithmetic (fractions) for the
conversions, and analytic identities of docs/theory.md section 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from fractions import Fraction

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.errors import InputError, OutputExistsError
from specsched.schedules import (
    BASELINES,
    EDM_SIGMA_RANGE,
    SCHEDULE_FORMAT,
    SCHEDULE_VERSION,
    SIGMA_BASELINES,
    SPACINGS,
    TRAINING_FAMILIES,
    Schedule,
    alphas_cumprod_from_betas,
    alphas_cumprod_from_logsnr,
    alphas_cumprod_from_sigmas,
    baseline_alphas_cumprod,
    betas_from_alphas_cumprod,
    exponential_alphas_cumprod,
    karras_alphas_cumprod,
    kl_optimal_alphas_cumprod,
    logsnr_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    nearest_training_timesteps,
    nearest_training_timesteps_with_error,
    schedule_schema,
    sigma_range_from_bounds,
    sigmas_from_alphas_cumprod,
    spacing_indices,
    training_alphas_cumprod,
    validate_alphas_cumprod,
)
from specsched.schedules.kdiffusion import load_k_diffusion_sampling

T = 1000


def assert_valid_schedule(ab, n):
    ab = np.asarray(ab)
    assert ab.dtype == np.float64 and ab.shape == (n,)
    assert np.all((ab > 0) & (ab < 1))
    assert np.all(np.diff(ab) < 0)


# --------------------------------------------------------------------------------------------
# Spacings: diffusers' set_timesteps, written out as diffusers does (descending), reversed
# --------------------------------------------------------------------------------------------


def diffusers_timesteps(spacing, S, T, steps_offset=0):
    """diffusers DDIMScheduler.set_timesteps, verbatim semantics (descending order)."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, S).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        step_ratio = T // S
        ts = (np.arange(0, S) * step_ratio).round()[::-1].copy().astype(np.int64)
        return ts + steps_offset
    step_ratio = T / S
    return np.round(np.arange(T, 0, -step_ratio)).astype(np.int64) - 1


def test_spacing_small_cases():
    assert spacing_indices("leading", 10, T).tolist() == list(range(0, 1000, 100))
    assert spacing_indices("trailing", 10, T).tolist() == list(range(99, 1000, 100))
    assert spacing_indices("linspace", 10, T).tolist() == [
        0,
        111,
        222,
        333,
        444,
        555,
        666,
        777,
        888,
        999,
    ]
    assert spacing_indices("leading", 10, T, steps_offset=1).tolist() == list(range(1, 902, 100))
    # Every training step, whatever the spacing.
    for spacing in SPACINGS:
        assert spacing_indices(spacing, T, T).tolist() == list(range(T))
    # One step: linspace and leading pick the least noisy end, trailing the noisiest.
    assert spacing_indices("linspace", 1, T).tolist() == [0]
    assert spacing_indices("leading", 1, T).tolist() == [0]
    assert spacing_indices("trailing", 1, T).tolist() == [T - 1]


@settings(max_examples=300, deadline=None)
@given(S=st.integers(1, T), spacing=st.sampled_from(SPACINGS))
def test_spacing_matches_diffusers(S, spacing):
    idx = spacing_indices(spacing, S, T)
    assert idx.dtype == np.int64 and idx.shape == (S,)
    assert np.all(np.diff(idx) > 0)  # ascending and distinct: step 1 first
    assert idx[0] >= 0 and idx[-1] <= T - 1
    ref = diffusers_timesteps(spacing, S, T)
    if spacing == "trailing" and ref.size == S + 1:
        # numpy's float arange overshoots for some S; diffusers' extra point is index -1.
        assert ref[-1] == -1
        ref = ref[:S]
    np.testing.assert_array_equal(idx, ref[::-1])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), T_=st.integers(1, 3000))
def test_spacing_close_to_exact_rational_grid(data, T_):
    """Each index is within 1 of the exact rational point of docs/theory.md section 1 (the float
    formulas may round an exact .5 either way)."""
    S = data.draw(st.integers(1, T_))
    k = range(S)
    exact = {
        "linspace": [Fraction((T_ - 1) * i, max(S - 1, 1)) for i in k],
        "trailing": [Fraction(T_ * (S - i), S) - 1 for i in reversed(k)],
    }
    for spacing, points in exact.items():
        idx = spacing_indices(spacing, S, T_)
        assert idx.shape == (S,) and np.all(np.diff(idx) > 0)
        assert all(
            abs(int(t) - p) <= Fraction(1, 2) + Fraction(1, 10**6)
            for t, p in zip(idx, points, strict=True)
        )
    lead = spacing_indices("leading", S, T_)
    assert lead.tolist() == [i * (T_ // S) for i in k]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(spacing="linspace", num_steps=0),
        dict(spacing="linspace", num_steps=T + 1),
        dict(spacing="linspace", num_steps=True),
        dict(spacing="linspace", num_steps=2.0),
        dict(spacing="uniform", num_steps=10),
        dict(spacing="leading", num_steps=T, steps_offset=1),  # index T is off the grid
        dict(spacing="leading", num_steps=10, steps_offset=-1),
    ],
)
def test_spacing_rejects_bad_input(kwargs):
    # The message names the argument at fault: steps_offset if given, else num_steps/spacing.
    field = (
        "steps_offset"
        if "steps_offset" in kwargs
        else ("spacing" if kwargs["spacing"] not in SPACINGS else "num_steps")
    )
    with pytest.raises(InputError, match=field):
        spacing_indices(num_train_timesteps=T, **kwargs)


# --------------------------------------------------------------------------------------------
# Training families
# --------------------------------------------------------------------------------------------


def test_linear_family_end_points():
    ab = training_alphas_cumprod("linear", T)
    assert ab[0] == 1 - 1e-4
    expected_last = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    assert ab[-1] == pytest.approx(expected_last, rel=1e-12)
    assert ab[-1] == pytest.approx(4.0358e-5, rel=1e-4)  # the value quoted by Ho et al.'s setup


def test_family_betas_match_written_out_formulas():
    x = np.linspace(-6, 6, T)
    expected_betas = {
        "linear": np.linspace(1e-4, 0.02, T),
        "scaled_linear": np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T) ** 2,
        "sigmoid": 1 / (1 + np.exp(-x)) * (0.02 - 1e-4) + 1e-4,
    }
    for family, betas in expected_betas.items():
        ab = training_alphas_cumprod(family, T)
        np.testing.assert_allclose(betas_from_alphas_cumprod(ab), betas, rtol=1e-9)


def test_cosine_family_is_f_ratio_and_clips_last_beta():
    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    ab = training_alphas_cumprod("cosine", T)
    # Unclipped steps telescope: ab[t] = f((t+1)/T) / f(0) (docs/theory.md section 1).
    expected = np.array([f((t + 1) / T) / f(0) for t in range(T - 1)])
    np.testing.assert_allclose(ab[:-1], expected, rtol=1e-11)
    betas = betas_from_alphas_cumprod(ab)
    assert betas[-1] == pytest.approx(0.999, rel=1e-12)  # 1 - f(1)/f(..) ~ 1, clipped
    assert np.all(betas[:-1] < 0.999)


@settings(max_examples=50, deadline=None)
@given(family=st.sampled_from(TRAINING_FAMILIES), T_=st.integers(1, 4000))
def test_training_families_strictly_decreasing(family, T_):
    assert_valid_schedule(training_alphas_cumprod(family, T_), T_)


def test_training_family_rejects_unknown():
    with pytest.raises(InputError, match="family.*linear, scaled_linear, cosine, sigmoid"):
        training_alphas_cumprod("squaredcos_cap_v2")
    with pytest.raises(InputError, match="num_train_timesteps"):
        training_alphas_cumprod("linear", 0)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(BASELINES), spacing=st.sampled_from(SPACINGS), S=st.integers(1, T))
def test_baselines_are_valid_schedules(name, spacing, S):
    ab = baseline_alphas_cumprod(name, S, spacing, T)
    assert_valid_schedule(ab, S)
    if name in TRAINING_FAMILIES:
        np.testing.assert_array_equal(
            ab, training_alphas_cumprod(name, T)[spacing_indices(spacing, S, T)]
        )


def test_baseline_rejects_unknown_name():
    with pytest.raises(InputError) as exc:
        baseline_alphas_cumprod("edm", 10)
    assert all(name in str(exc.value) for name in BASELINES)
    assert {"exponential", "kl_optimal", "karras"} <= set(BASELINES)
    with pytest.raises(InputError, match="spacing"):
        baseline_alphas_cumprod("karras", 10, spacing="uniform")


def test_logsnr_baseline_uniform_between_family_end_points():
    for family in TRAINING_FAMILIES:
        lam_train = logsnr_from_alphas_cumprod(training_alphas_cumprod(family, T))
        lam = logsnr_from_alphas_cumprod(logsnr_alphas_cumprod(20, family, T))
        assert lam[0] == pytest.approx(lam_train[0], rel=1e-12)
        assert lam[-1] == pytest.approx(lam_train[-1], rel=1e-12)
        np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / 19, rtol=1e-9)
    # One step: the noisiest end point (as karras).
    ab1 = logsnr_alphas_cumprod(1, "linear", T)
    assert ab1[0] == pytest.approx(training_alphas_cumprod("linear", T)[-1], rel=1e-12)


def test_nearest_training_timesteps():
    ab_train = training_alphas_cumprod("linear", T)
    for spacing in SPACINGS:
        idx = spacing_indices(spacing, 37, T)
        t, err = nearest_training_timesteps_with_error(ab_train[idx])
        np.testing.assert_array_equal(t, idx)
        assert err == 0.0
    # Off-grid points against a brute-force argmin.
    rng = np.random.default_rng(0)
    ab = np.sort(rng.uniform(1e-6, 1 - 1e-6, 200))[::-1]
    lam_train = logsnr_from_alphas_cumprod(ab_train)
    lam = logsnr_from_alphas_cumprod(ab)
    brute = np.argmin(np.abs(lam_train[None, :] - lam[:, None]), axis=1)
    t, err = nearest_training_timesteps_with_error(ab)
    np.testing.assert_array_equal(t, brute)
    assert t.dtype == np.int64
    assert err == pytest.approx(np.max(np.abs(lam_train[brute] - lam)))
    np.testing.assert_array_equal(
        nearest_training_timesteps(ab, "cosine", 500),
        nearest_training_timesteps_with_error(ab, "cosine", 500)[0],
    )


# --------------------------------------------------------------------------------------------
# Karras (EDM)
# --------------------------------------------------------------------------------------------


def test_karras_end_points_and_order():
    ab = karras_alphas_cumprod(18)
    assert_valid_schedule(ab, 18)
    sigma = sigmas_from_alphas_cumprod(ab)
    assert sigma[0] == pytest.approx(0.002, rel=1e-9)  # step 1: sigma_min
    assert sigma[-1] == pytest.approx(80.0, rel=1e-12)  # step S: sigma_max
    # EDM eq. (5) written out, i = 0 (sigma_max) first, reversed to step 1 first.
    i = np.arange(18)
    edm = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigma, edm[::-1], rtol=1e-9)


def test_karras_rho_one_is_linear_in_sigma():
    sigma = sigmas_from_alphas_cumprod(karras_alphas_cumprod(11, 0.5, 10.5, rho=1.0))
    np.testing.assert_allclose(sigma, np.linspace(0.5, 10.5, 11), rtol=1e-12)


def test_karras_single_step_and_errors():
    sigma = sigmas_from_alphas_cumprod(karras_alphas_cumprod(1))
    assert sigma.tolist() == pytest.approx([80.0])
    with pytest.raises(InputError, match="sigma_min"):
        karras_alphas_cumprod(10, sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(InputError, match="rho"):
        karras_alphas_cumprod(10, rho=0.0)
    with pytest.raises(InputError, match="num_steps"):
        karras_alphas_cumprod(0)


# --------------------------------------------------------------------------------------------
# Practitioners' sigma baselines against k-diffusion itself, and kl_optimal's arctan rule
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k_sampling():
    """k-diffusion 0.1.1.post1's ``sampling.py`` (skips where torch or k-diffusion is absent)."""
    pytest.importorskip("torch")
    try:
        return load_k_diffusion_sampling()
    except InputError as exc:
        pytest.skip(str(exc))


def _k_sigmas(fn, *args):
    """A k-diffusion ``get_sigmas_*`` evaluated with float64 tensors (its ``linspace`` takes
    torch's default dtype), as a NumPy array."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = fn(*args)
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float64
    return out.numpy()


SIGMA_CASES = [(1, 0.002, 80.0), (2, 0.002, 80.0), (10, 0.002, 80.0), (37, 0.0292, 14.61),
               (250, 0.03, 157.4), (10, *sigma_range_from_bounds(2.43e-9, 0.999996))]


@pytest.mark.parametrize(("S", "smin", "smax"), SIGMA_CASES)
@pytest.mark.parametrize("name", ["karras", "exponential"])
def test_sigma_baselines_match_k_diffusion(k_sampling, name, S, smin, smax):
    fn = {"karras": k_sampling.get_sigmas_karras,
          "exponential": k_sampling.get_sigmas_exponential}[name]
    ref = _k_sigmas(fn, S, smin, smax)  # (S + 1,), sigma_max first, final 0
    assert ref[-1] == 0.0 and ref.size == S + 1
    ab = baseline_alphas_cumprod(name, S, sigma_range=(smin, smax))
    assert_valid_schedule(ab, S)
    # alphas_cumprod, the schedule itself: 1e-12 relative (it is 1e-15 in practice).
    np.testing.assert_allclose(ab, 1.0 / (1.0 + ref[:-1][::-1] ** 2), rtol=1e-12, atol=0)
    # sigma = sqrt((1 - ab)/ab) read back from ab = 1 - sigma^2 + ...: ab's rounding (1.1e-16)
    # is relative 1.1e-16 / sigma^2 in sigma^2; 1e-12 relative above sigma = 0.1.
    sigma = sigmas_from_alphas_cumprod(ab)
    tol = np.maximum(1e-12, 2e-16 / sigma**2)
    assert np.all(np.abs(sigma / ref[:-1][::-1] - 1) <= tol)


def test_kl_optimal_is_uniform_in_atan_sigma():
    """The arctan rule of Align Your Steps (ComfyUI's kl_optimal) evaluated independently in
    50-digit arithmetic: sigma_i = tan(t_i atan(smin) + (1 - t_i) atan(smax))."""
    import mpmath

    mpmath.mp.dps = 50
    for S, smin, smax in SIGMA_CASES:
        ab = kl_optimal_alphas_cumprod(S, smin, smax)
        i = range(S)
        ref = [mpmath.tan(mpmath.mpf(k) / max(S - 1, 1) * mpmath.atan(smin)
                          + (1 - mpmath.mpf(k) / max(S - 1, 1)) * mpmath.atan(smax)) for k in i]
        ref_ab = np.array([float(1 / (1 + r**2)) for r in ref])[::-1]  # step 1 first
        np.testing.assert_allclose(ab, ref_ab, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(
            baseline_alphas_cumprod("kl_optimal", S, sigma_range=(smin, smax)), ab)
        if S > 2:  # atan(sigma) uniform: equal steps (step 1 = sigma_min first)
            theta = np.arctan(sigmas_from_alphas_cumprod(ab))
            np.testing.assert_allclose(np.diff(theta), (theta[-1] - theta[0]) / (S - 1),
                                       rtol=1e-9)
    sigma = sigmas_from_alphas_cumprod(kl_optimal_alphas_cumprod(18))
    assert sigma[0] == pytest.approx(0.002, rel=1e-9)  # step 1: sigma_min
    assert sigma[-1] == pytest.approx(80.0, rel=1e-12)  # step S: sigma_max
    assert sigmas_from_alphas_cumprod(kl_optimal_alphas_cumprod(1)) == pytest.approx([80.0])


def test_exponential_is_uniform_in_logsnr():
    lam = logsnr_from_alphas_cumprod(exponential_alphas_cumprod(21, 0.01, 100.0))
    np.testing.assert_allclose(lam, np.linspace(2 * math.log(100), -2 * math.log(100), 21),
                               rtol=1e-11, atol=1e-12)


def test_sigma_baselines_default_to_edm_and_take_the_bounds_range():
    for name in SIGMA_BASELINES:
        default = baseline_alphas_cumprod(name, 12)
        np.testing.assert_array_equal(default,
                                      baseline_alphas_cumprod(name, 12, sigma_range=(0.002, 80)))
        assert EDM_SIGMA_RANGE == (0.002, 80.0)
        np.testing.assert_allclose(sigmas_from_alphas_cumprod(default[[0, -1]]), [0.002, 80],
                                   rtol=1e-9)
    smin, smax = sigma_range_from_bounds(1e-4, 0.99)
    assert smin == pytest.approx(math.sqrt(0.01 / 0.99), rel=1e-14)
    assert smax == pytest.approx(math.sqrt(0.9999 / 1e-4), rel=1e-14)
    ab = baseline_alphas_cumprod("karras", 7, sigma_range=(smin, smax))
    np.testing.assert_allclose(ab[[0, -1]], [0.99, 1e-4], rtol=1e-13)


def test_sigma_range_errors_name_the_argument():
    with pytest.raises(InputError, match="^sigma_min: expected sigma_min < sigma_max"):
        baseline_alphas_cumprod("exponential", 5, sigma_range=(80.0, 0.002))
    with pytest.raises(InputError, match="^sigma_min"):
        baseline_alphas_cumprod("kl_optimal", 5, sigma_range=(0.0, 1.0))
    with pytest.raises(InputError, match="^sigma_max"):
        kl_optimal_alphas_cumprod(5, 0.1, float("inf"))
    with pytest.raises(InputError, match="^sigma_range: expected two numbers"):
        baseline_alphas_cumprod("karras", 5, sigma_range=(1.0,))
    with pytest.raises(InputError, match="^sigma_range: applies to karras, exponential, "
                                         "kl_optimal; the baseline 'cosine'"):
        baseline_alphas_cumprod("cosine", 5, sigma_range=(0.1, 1.0))
    with pytest.raises(InputError, match="^ab_min: expected ab_min < ab_max"):
        sigma_range_from_bounds(0.5, 0.1)
    with pytest.raises(InputError, match="^ab_max"):
        sigma_range_from_bounds(0.5, 1.0)


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------

# ab spread over both ends: [1e-12, 1 - 1e-12], dense near 0 and near 1.
ab_values = st.one_of(
    st.floats(1e-12, 1 - 1e-12),
    st.floats(-27.6, -0.7).map(math.exp),  # 1e-12 .. 0.5
    st.floats(-27.6, -0.7).map(lambda x: 1 - math.exp(x)),  # 0.5 .. 1 - 1e-12
)


@settings(max_examples=300, deadline=None)
@given(ab=st.lists(ab_values, min_size=1, max_size=20))
def test_elementwise_round_trips(ab):
    ab = np.array(ab)
    np.testing.assert_allclose(
        alphas_cumprod_from_sigmas(sigmas_from_alphas_cumprod(ab)), ab, rtol=1e-13, atol=0
    )
    np.testing.assert_allclose(
        alphas_cumprod_from_logsnr(logsnr_from_alphas_cumprod(ab)), ab, rtol=1e-13, atol=0
    )
    # logsnr = -2 log sigma (docs/theory.md section 1)
    lam = logsnr_from_alphas_cumprod(ab)
    np.testing.assert_allclose(
        lam, -2 * np.log(sigmas_from_alphas_cumprod(ab)), rtol=1e-12, atol=1e-12
    )


@settings(max_examples=200, deadline=None)
@given(ab=st.lists(ab_values, min_size=1, max_size=12))
def test_conversions_against_exact_rationals(ab):
    """sigma^2, logsnr and 1 - ab from the float ab computed exactly (fractions)."""
    ab = np.array(ab)
    for a, sigma, lam in zip(
        ab, sigmas_from_alphas_cumprod(ab), logsnr_from_alphas_cumprod(ab), strict=True
    ):
        a_exact = Fraction(float(a))
        sigma2 = (1 - a_exact) / a_exact
        assert float(sigma) ** 2 == pytest.approx(float(sigma2), rel=1e-14)
        assert lam == pytest.approx(-math.log(sigma2), rel=1e-13, abs=1e-13)


@settings(max_examples=200, deadline=None)
@given(ab=st.lists(ab_values, min_size=1, max_size=30, unique=True))
def test_betas_against_exact_rationals_and_round_trip(ab):
    ab = np.sort(np.array(ab))[::-1]
    betas = betas_from_alphas_cumprod(ab)
    prev = [Fraction(1)] + [Fraction(float(a)) for a in ab[:-1]]
    for b, p, a in zip(betas, prev, ab, strict=True):
        exact = 1 - Fraction(float(a)) / p
        assert b == pytest.approx(float(exact), rel=1e-15)
    assert np.all((betas > 0) & (betas < 1))
    # Storing beta near 1 keeps only ~eps/(1 - beta) relative precision of 1 - beta, so the
    # round trip error bound grows with sum 1/(1 - beta) (inherent in the betas view).
    rtol = 1e-15 * (ab.size + np.sum(1 / (1 - betas)))
    np.testing.assert_allclose(alphas_cumprod_from_betas(betas), ab, rtol=rtol)


@settings(max_examples=200, deadline=None)
@given(betas=st.lists(st.floats(1e-4, 0.999), min_size=1, max_size=50))
def test_alphas_cumprod_from_betas_round_trip(betas):
    betas = np.array(betas)
    ab = alphas_cumprod_from_betas(betas)
    np.testing.assert_allclose(ab, np.cumprod(1 - betas), rtol=1e-15)
    if np.all(np.diff(ab) < 0) and ab[-1] > 0:
        np.testing.assert_allclose(betas_from_alphas_cumprod(ab), betas, rtol=1e-11)


def test_betas_keep_relative_accuracy_near_one():
    ab = np.array([1 - 1e-12, 1 - 3e-12])
    betas = betas_from_alphas_cumprod(ab)
    exact = [1 - Fraction(ab[0]), 1 - Fraction(ab[1]) / Fraction(ab[0])]
    np.testing.assert_allclose(betas, [float(e) for e in exact], rtol=1e-15)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5, np.nan, np.inf])
def test_conversions_reject_out_of_range(bad):
    for fn in (sigmas_from_alphas_cumprod, logsnr_from_alphas_cumprod, betas_from_alphas_cumprod):
        with pytest.raises(InputError, match="alphas_cumprod"):
            fn([0.9, bad] if fn is not betas_from_alphas_cumprod else [bad])
    with pytest.raises(InputError, match="betas"):
        alphas_cumprod_from_betas([0.1, bad])


def test_conversions_reject_bad_sigmas_and_logsnr():
    with pytest.raises(InputError, match="sigmas"):
        alphas_cumprod_from_sigmas([1.0, 0.0])
    with pytest.raises(InputError, match="logsnr"):
        alphas_cumprod_from_logsnr([np.nan])
    with pytest.raises(InputError, match="alphas_cumprod"):
        sigmas_from_alphas_cumprod(["a"])


def test_validate_alphas_cumprod_names_field_and_index():
    with pytest.raises(InputError, match=r"^ab\[2\]: expected strictly decreasing .*, got 0\.6 "
                       r">= ab\[1\] = 0\.5$"):
        validate_alphas_cumprod([0.9, 0.5, 0.6], name="ab")
    with pytest.raises(InputError, match=r"^alphas_cumprod\[1\]: expected a value in the open "
                       r"interval \(0, 1\), got 1\.0$"):
        validate_alphas_cumprod([0.9, 1.0])
    with pytest.raises(InputError, match=r"^alphas_cumprod\[1\]: expected a finite number"):
        validate_alphas_cumprod([0.9, np.nan])
    with pytest.raises(InputError, match="1-D"):
        validate_alphas_cumprod([[0.9, 0.5]])
    with pytest.raises(InputError, match="empty"):
        validate_alphas_cumprod([])
    out = validate_alphas_cumprod([0.9, 0.5])
    assert out.dtype == np.float64


# --------------------------------------------------------------------------------------------
# Schedule and its file
# --------------------------------------------------------------------------------------------


def make_schedule(**overrides):
    kwargs = dict(
        alphas_cumprod=baseline_alphas_cumprod("cosine", 10, "trailing"),
        name="optimized-w2",
        sampler="ddim",
        eta=0.0,
        loss="w2",
        loss_value=np.float64(1.2345678901234567),
        baselines={"linear/linspace": {"w2": 5.5886, "kl": None}},
        spectrum={
            "source": "cifar10",
            "method": "full",
            "n_samples": np.int64(50000),
            "dimension": 3072,
            "sha256": "0" * 64,
        },
        optimizer={
            "method": "SLSQP",
            "success": np.bool_(True),
            "message": "ok",
            "nit": 12,
            "x0": np.array([0.5, 0.25]),
        },
        created="2025-01-02T03:04:05+00:00",
    )
    kwargs.update(overrides)
    return Schedule(**kwargs)


def test_schema_is_valid_and_to_dict_conforms():
    jsonschema.Draft202012Validator.check_schema(schedule_schema())
    d = make_schedule().to_dict()
    jsonschema.Draft202012Validator(schedule_schema()).validate(d)
    assert d["format"] == SCHEDULE_FORMAT and d["version"] == SCHEDULE_VERSION
    assert d["steps"] == 10
    json.dumps(d, allow_nan=False)  # plain JSON types only


def test_schedule_views():
    idx = spacing_indices("linspace", 25, T)
    s = Schedule(training_alphas_cumprod("linear", T)[idx])
    assert s.steps == 25
    np.testing.assert_array_equal(s.timesteps, idx)
    np.testing.assert_allclose(s.logsnr, -2 * np.log(s.sigmas), rtol=1e-12)
    np.testing.assert_allclose(alphas_cumprod_from_betas(s.betas), s.alphas_cumprod, rtol=1e-13)


def test_schedule_is_immutable_and_copies_input():
    ab = np.array([0.9, 0.5, 0.1])
    s = Schedule(ab)
    ab[0] = 0.2
    assert s.alphas_cumprod[0] == 0.9
    with pytest.raises(ValueError):
        s.alphas_cumprod[0] = 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "x"


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(alphas_cumprod=[0.5, 0.9]), "alphas_cumprod"),
        (dict(eta=-1.0), "eta"),
        (dict(loss_value=float("nan")), "loss_value"),
        (dict(baselines={"x": {"w2": float("inf")}}), "baselines"),
        (dict(optimizer={"fun": float("nan")}), "optimizer"),
        (dict(sampler=3), "sampler"),
    ],
)
def test_schedule_rejects_bad_fields(overrides, field):
    with pytest.raises(InputError, match=field):
        make_schedule(**overrides)


def test_save_load_round_trip_bit_identical(tmp_path):
    # Awkward floats: ab near 1 and near 0 and values without short decimal forms.
    ab = np.array([1 - 1e-12, 1 / 3, math.pi / 10, 0.1 + 0.2, 1e-12, 5e-324 * 3])
    for s in (make_schedule(), make_schedule(alphas_cumprod=ab)):
        path = tmp_path / f"{s.steps}.json"
        s.save(path)
        loaded = Schedule.load(path)
        assert loaded.alphas_cumprod.tobytes() == s.alphas_cumprod.tobytes()
        assert loaded == s
        d = json.loads(path.read_text())
        np.testing.assert_array_equal(d["sigmas"], s.sigmas)
        np.testing.assert_array_equal(d["timesteps"]["values"], s.timesteps)


def test_save_fills_created_in_utc(tmp_path):
    s = make_schedule(created=None)
    s.save(tmp_path / "s.json")
    loaded = Schedule.load(tmp_path / "s.json")
    assert s.created is None
    created = datetime.datetime.fromisoformat(loaded.created)
    assert created.utcoffset() == datetime.timedelta(0)
    assert dataclasses.replace(loaded, created=None) == s


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "s.json"
    make_schedule().save(path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        make_schedule(name="other").save(path)
    assert path.read_bytes() == before
    make_schedule(name="other").save(path, force=True)
    assert Schedule.load(path).name == "other"


def write_json(path, d):
    path.write_text(json.dumps(d))
    return path


def test_load_rejects_truncated_json(tmp_path):
    path = tmp_path / "s.json"
    make_schedule().save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"s\.json: invalid JSON at line \d+, column \d+"):
        Schedule.load(path)


def test_load_rejects_missing_file_and_non_finite_literals(tmp_path):
    with pytest.raises(InputError, match="nope.json"):
        Schedule.load(tmp_path / "nope.json")
    path = tmp_path / "nan.json"
    path.write_text('{"format": "specsched.schedule", "version": 1, "alphas_cumprod": [NaN]}')
    with pytest.raises(InputError, match="NaN"):
        Schedule.load(path)


def base_dict():
    return make_schedule().to_dict()


@pytest.mark.parametrize(
    "edit, pattern",
    [
        # non-monotone: names the field and the first offending index
        (lambda d: d.update(alphas_cumprod=[0.9, 0.5, 0.7, 0.1]), r"alphas_cumprod.*\[2\]"),
        (lambda d: d.update(alphas_cumprod=[0.9, 0.9]), r"alphas_cumprod.*\[1\]"),
        (lambda d: d.update(alphas_cumprod=[0.9, 1.5]),
         r": alphas_cumprod\[1\]: expected a number >= 0 and < 1, got 1\.5$"),
        (lambda d: d.update(alphas_cumprod=[0.9, 0.5, 0.0]),
         r": alphas_cumprod\[2\]: .* got 0\.0: pure noise .* allowed with param fm"),
        (lambda d: d.update(alphas_cumprod=[0.9, 0.0, 0.1], param="fm"),
         r": alphas_cumprod\[1\]: expected a value in the open interval \(0, 1\), got 0\.0$"),
        (lambda d: d.update(alphas_cumprod=[1.0]),
         r": alphas_cumprod\[0\]: expected a number >= 0 and < 1"),
        (lambda d: d.update(alphas_cumprod=[0.5, 0.0]), r": alphas_cumprod\[1\]: .*got 0\.0: pure"),
        (lambda d: d.update(alphas_cumprod=[]),
         r": alphas_cumprod: expected at least 1 value\(s\), got 0$"),
        (lambda d: d.update(alphas_cumprod="0.5"),
         r": alphas_cumprod: expected an array, got a string \"0\.5\"$"),
        (lambda d: d.update(alphas_cumprod=[0.9, "x"]),
         r": alphas_cumprod\[1\]: expected a number, got a string \"x\"$"),
        (lambda d: d.update(version=2), r": version: .*supported: 1"),
        (lambda d: d.update(version="1"), r": version: expected an integer, got a string"),
        (lambda d: d.update(format="diffusers"),
         r": format: expected \"specsched\.schedule\", got \"diffusers\"$"),
        (lambda d: d.pop("alphas_cumprod"), r": alphas_cumprod: required field is missing"),
        (lambda d: d.pop("format"), r": format: required field is missing"),
        (lambda d: d.pop("version"), r": version: required field is missing"),
        (lambda d: d.update(eta=-0.5), r": eta: expected a number >= 0, got -0\.5$"),
        (lambda d: d.update(param="xx"),
         r": param: expected one of \"vp\", \"ve\", \"fm\"; got \"xx\""),
        (lambda d: d["timesteps"].update(num_train_timesteps=0),
         r": timesteps\.num_train_timesteps: expected an integer >= 1 and <= 1e\+06, got 0"),
        (lambda d: d.update(steps=11), r"steps"),
        (lambda d: d["sigmas"].__setitem__(3, d["sigmas"][3] * (1 + 1e-6)), r"sigmas\[3\]"),
        (lambda d: d["betas"].pop(), r"betas"),
        (lambda d: d["timesteps"]["values"].__setitem__(0, 5), r"timesteps"),
        (lambda d: d["spectrum"].update(sha256="xyz"),
         r": spectrum\.sha256: expected a string matching"),
    ],
)
def test_load_rejects_bad_files(tmp_path, edit, pattern):
    d = base_dict()
    edit(d)
    path = write_json(tmp_path / "bad.json", d)
    with pytest.raises(InputError, match=pattern) as exc:
        Schedule.load(path)
    assert str(exc.value).startswith(str(path))


def test_load_rejects_non_object(tmp_path):
    with pytest.raises(InputError, match=r"list\.json: expected a JSON object \(a schedule file\), "
                       r"got an array$"):
        Schedule.load(write_json(tmp_path / "list.json", [0.9, 0.5]))
    with pytest.raises(InputError, match=r"<dict>: top level: expected a JSON object"):
        Schedule.from_dict([0.9, 0.5])


GOOD_TEXT = '{"format": "specsched.schedule", "version": 1, "alphas_cumprod": [0.9, 0.5]}'


@pytest.mark.parametrize("text, needle", [
    ("[" * 100000 + "]" * 100000, "nested too deeply to read"),
    (GOOD_TEXT[:-1] + ', "optimizer": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
     "nested too deeply to read"),
    (GOOD_TEXT[:-1] + ', "optimizer": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
     "JSON nested 41 levels deep; a schedule file is at most 32"),
    (GOOD_TEXT.replace("0.5", "1e999"), "the number 1e999 is beyond the float64 range"),
    (GOOD_TEXT.replace("0.5", "-Infinity"), "-Infinity is not a finite number"),
    (GOOD_TEXT.replace('"version": 1', '"version": ' + "9" * 5000),
     "has 5000 digits; a schedule file holds none with more than 20"),
    (GOOD_TEXT[:-1] + ', "alphas_cumprod": [0.5, 0.9]}',
     "the key 'alphas_cumprod' appears twice in one object"),
    ('"a string"', "expected a JSON object (a schedule file), got a string"),
    ("null", "expected a JSON object (a schedule file), got null"),
    ("", "invalid JSON at line 1, column 1"),
])
def test_pathological_json_gives_one_line(tmp_path, text, needle):
    path = tmp_path / "s.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        Schedule.load(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and needle in message and "\n" not in message
    assert len(message) < 300


def test_load_accepts_a_byte_order_mark_and_refuses_other_bytes(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_TEXT.encode())
    assert Schedule.load(path) == Schedule([0.9, 0.5])
    path.write_bytes(b"\xff\xfe" + GOOD_TEXT.encode())
    with pytest.raises(InputError, match=r"bom\.json: cannot read schedule file: not UTF-8"):
        Schedule.load(path)
    with pytest.raises(InputError, match="is a folder, not a schedule file"):
        Schedule.load(tmp_path)


def test_pathological_json_on_the_command_line(tmp_path, capsys):
    from specsched.cli import main

    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    for argv in (["export", path, "--to", "ab", "--out", tmp_path / "ab.npy"],
                 ["evaluate", "--spectrum", "cifar10", "--schedule", path],
                 ["sample", "--schedule", path, "--spectrum", "cifar10", "--n", "2",
                  "--out", tmp_path / "x.npy"]):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1 and "deep.json" in err
    assert not (tmp_path / "ab.npy").exists() and not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("fields, needle", [
    ({"sampler": "ddpm", "eta": 0.5}, "s.json: sampler 'ddpm', eta 0.5 (from the file): eta:"),
    ({"sampler": "ddpm-large", "eta": 0.3}, "sampler 'ddpm-large', eta 0.3 (from the file)"),
    ({"sampler": "nope"}, "s.json: sampler 'nope' (from the file): expected one of ddim, ddpm"),
])
def test_evaluate_blames_the_file_for_its_sampler_fields(tmp_path, capsys, fields, needle):
    """A file's sampler and eta, used when --sampler is not given, are named as the file's."""
    from specsched.cli import main

    path = write_json(tmp_path / "s.json", {**json.loads(GOOD_TEXT), **fields})
    assert main(["evaluate", "--spectrum", "cifar10", "--schedule", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "pass --sampler" in err
    assert main(["evaluate", "--spectrum", "cifar10", "--schedule", str(path),
                 "--sampler", "ddim"]) == 0


def test_from_dict_minimal_and_tolerant_views():
    s = Schedule.from_dict(
        {"format": "specsched.schedule", "version": 1, "alphas_cumprod": [0.9, 0.5]}
    )
    assert s == Schedule([0.9, 0.5])
    d = base_dict()
    d["sigmas"] = [x * (1 + 1e-12) for x in d["sigmas"]]  # within the 1e-9 tolerance
    d["specsched_version"] = "99.0"  # informative only
    assert Schedule.from_dict(d) == make_schedule()
