"""The structured Hessian of deterministic samplers against the reference gradient.

Value and gradient of :func:`loss_curvature` (built from log-gains) must equal the reverse-mode
reference :func:`loss_and_grad` (built from the recursion), and its Hessian the central
differences of that gradient.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from specsched.errors import InputError
from specsched.theory import loss_and_grad
from specsched.theory.curvature import is_deterministic, loss_curvature


def _problem(seed, n=24, S=9):
    rng = np.random.default_rng(seed)
    lam = np.concatenate([[0.0], np.exp(rng.normal(0.0, 2.0, n - 1))])  # one exact zero
    mean = rng.normal(0.0, 1.0, n)
    weights = rng.uniform(0.5, 2.0, n)
    y = np.sort(rng.uniform(-12.0, 12.0, S))[::-1]
    return lam, mean, weights, y


def _reference(lam, mean, y, **kw):
    """Value and gradient in logSNR from the reference (NumPy reverse-mode) implementation."""
    ab = expit(y)
    v, g = loss_and_grad(lam, mean, ab, backend="numpy", **kw)
    return v, g * ab * (1.0 - ab)


CASES = [(s, i, loss, centred) for s in ("ddim", "ddim-ve") for i in ("normal", "marginal")
         for loss in ("w2", "kl", "kl-data-gen") for centred in (True, False)]


@pytest.mark.parametrize("sampler, init, loss, centred", CASES)
def test_value_gradient_and_hessian_match_the_reference(sampler, init, loss, centred):
    lam, mean, weights, y = _problem(1)
    mean = None if centred else mean
    kw = dict(loss=loss, sampler=sampler, init=init, weights=weights)
    c = loss_curvature(lam, mean, y, **kw)
    v, g = _reference(lam, mean, y, **kw)
    assert c.value == pytest.approx(v, rel=1e-13)
    np.testing.assert_allclose(c.grad, g, rtol=1e-11, atol=1e-12 * np.abs(g).max())
    h = 1e-5
    fd = np.stack([(_reference(lam, mean, y + h * e, **kw)[1]
                    - _reference(lam, mean, y - h * e, **kw)[1]) / (2 * h)
                   for e in np.eye(y.size)], axis=1)
    H = c.dense()
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * np.abs(H).max())
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
    # the mean couples the last level to every z_k: b != 0 exactly when it enters
    assert np.any(c.b != 0) == (init == "normal" and not centred and loss != "kl-data-gen")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 30),
       loss=st.sampled_from(["w2", "kl", "kl-data-gen"]))
def test_gradient_matches_the_reference_on_random_problems(seed, S, loss):
    lam, mean, weights, y = _problem(seed, n=12, S=S)
    kw = dict(loss=loss, sampler="ddim", weights=weights)
    c = loss_curvature(lam, mean, y, **kw)
    v, g = _reference(lam, mean, y, **kw)
    assert c.value == pytest.approx(v, rel=1e-12)
    np.testing.assert_allclose(c.grad, g, rtol=1e-9, atol=1e-11 * max(np.abs(g).max(), 1e-300))
    # matvec and the dense Hessian are one matrix
    e = np.random.default_rng(seed).normal(size=S)
    np.testing.assert_allclose(c.matvec(e), c.dense() @ e, rtol=1e-12,
                               atol=1e-12 * np.abs(c.dense()).max())


def test_which_samplers_are_deterministic():
    ab = np.array([0.99, 0.6, 0.1])
    assert is_deterministic("ddim", ab) and is_deterministic("ddim-ve", ab)
    assert not is_deterministic("ddim", ab, eta=0.3)
    for name in ("ddpm", "ddpm-large", "ddpm-ve", "dpmpp-2m", "euler"):
        assert not is_deterministic(name, ab)


def test_a_sampler_with_noise_is_refused():
    lam, mean, weights, y = _problem(2)
    with pytest.raises(InputError, match="^sampler: 'ddpm' injects noise"):
        loss_curvature(lam, mean, y, sampler="ddpm")
    with pytest.raises(InputError, match="^loss"):
        loss_curvature(lam, mean, y, loss="w1")
