"""GITS (specsched.sampling.gits): its dynamic programme against brute force and known
answers, and its cost matrix on the exact Wiener denoiser."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.sampling.gits import gits_cost_matrix, gits_dp, gits_sigmas
from specsched.sampling.ksamplers import WienerModel

LAM = np.geomspace(1e-3, 5.0, 12)


def brute_force(cost, num_levels, coeff):
    N = cost.shape[0]
    best, arg = np.inf, None
    for inner in itertools.combinations(range(1, N - 1), num_levels - 2):
        path = (0, *inner, N - 1)
        total = sum(coeff**k * cost[a, b] for k, (a, b) in enumerate(itertools.pairwise(path)))
        if total < best:
            best, arg = total, path
    return np.array(arg)


@pytest.mark.parametrize("coeff", [1.0, 1.15, 0.8])
@pytest.mark.parametrize("num_levels", [2, 3, 4, 6])
def test_dp_equals_brute_force(num_levels, coeff):
    rng = np.random.default_rng(num_levels)
    cost = np.triu(rng.uniform(0.1, 2.0, (9, 9)), 1)
    np.testing.assert_array_equal(gits_dp(cost, num_levels, coeff),
                                  brute_force(cost, num_levels, coeff))


def test_a_convex_cost_is_split_evenly_and_coeff_shortens_the_later_jumps():
    t = np.arange(13.0)
    cost = np.triu((t[None, :] - t[:, None]) ** 2, 1)
    np.testing.assert_array_equal(gits_dp(cost, 5, 1.0), [0, 3, 6, 9, 12])
    jumps = np.diff(gits_dp(cost, 5, 1.5))
    assert np.all(np.diff(jumps) <= 0) and jumps[0] > jumps[-1]


def test_an_euler_teacher_makes_its_own_one_level_jumps_free():
    grid = np.geomspace(80.0, 0.01, 15)
    starts = 80.0 * np.random.default_rng(0).standard_normal((32, LAM.size))
    euler = gits_cost_matrix(WienerModel(LAM), grid, starts, teacher="euler")
    assert np.all(np.diag(euler, 1) <= 1e-12 * euler.max())
    heun = gits_cost_matrix(WienerModel(LAM), grid, starts, teacher="heun")
    assert np.all(np.diag(heun, 1) > 0)  # Heun's trajectory is not Euler's
    assert np.all(np.triu(heun, 2)[np.triu_indices(15, 2)] > 0)
    np.testing.assert_array_equal(np.tril(heun), 0.0)


def test_gits_sigmas_runs_from_sigma_max_to_sigma_min():
    s = gits_sigmas(WienerModel(LAM), LAM.size, 8, n_warmup=16, n_teacher=30,
                    rng=np.random.default_rng(1))
    assert s.shape == (8,)
    assert s[0] == pytest.approx(80.0) and s[-1] == pytest.approx(0.002)
    assert np.all(np.diff(s) < 0)


@pytest.mark.parametrize("call, needle", [
    (lambda: gits_dp(np.zeros((3, 4)), 2), "cost: expected a square"),
    (lambda: gits_dp(np.zeros((4, 4)), 5), "num_levels: expected an integer in"),
    (lambda: gits_dp(np.zeros((4, 4)), 3, coeff=0.0), "coeff"),
    (lambda: gits_dp(np.triu(np.full((4, 4), np.nan), 1), 3), "must be finite"),
    (lambda: gits_cost_matrix(WienerModel(LAM), [1.0, 2.0], np.zeros((2, LAM.size))), "grid"),
    (lambda: gits_cost_matrix(WienerModel(LAM), [2.0, 1.0], np.zeros((2, LAM.size)),
                              teacher="euler-ancestral"), "teacher: expected a deterministic"),
    (lambda: gits_sigmas(WienerModel(LAM), LAM.size, 5, n_warmup=0), "n_warmup"),
    (lambda: gits_sigmas(WienerModel(LAM), LAM.size, 5, sigma_min=3.0, sigma_max=1.0),
     "sigma_min"),
])
def test_bad_input_names_the_argument(call, needle):
    with pytest.raises(InputError, match=needle):
        call()
