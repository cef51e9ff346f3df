"""The compiled kernels against the NumPy reference, finite differences and duplicated data.

What the NumPy comparison can and cannot catch. The kernels and the reference share, by
design, the definition of each sampler: the per-step scalars
(:func:`specsched.theory.samplers.step_scalars` and their complex-step derivatives), the start
of the recursion, and the two one-line functions that evaluate and differentiate the gain
``A_s`` (``mobius``, ``mobius_derivative``, compiled with numba for the kernels). Everything
else is written twice, independently: the forward recursion over blocks of directions, the
reverse-mode sweep (adjoints, prefix/suffix products, the assembly of the ``ab_{s-1}``
partials), the flush-to-zero of tiny values, the parallel reduction, the weights and the KL
mask, and the loss terms (``kernels._term`` against :mod:`specsched.theory.losses`). A bug in
any of those makes ``test_numba_matches_numpy_reference`` fail; this was tried by breaking the
adjoint update (``w *= A`` instead of ``A^2``) and the W2 mean partial (``e`` for ``2 e``):
hypothesis found a failing case for each. A bug in the shared part is caught elsewhere: the
gradient against finite differences (here and in test_theory.py, tried by flipping a sign in
``mobius_derivative``), and the per-step scalars against Monte Carlo runs written from the
papers without specsched's code (test_samplers.py) and the gain identities (test_theory.py).
"""

import hashlib
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsched.testing import etas, samplers, schedules, spectra
from specsched.theory import loss_and_grad, loss_value

LOSS = st.sampled_from(["w2", "kl", "kl-data-gen"])


def test_kernels_are_tied_to_the_source_of_their_compiled_callees():
    # numba caches the kernels keyed on kernels.py's contents only; mobius and
    # mobius_derivative live in samplers.py. The recorded hash makes any edit of them an edit
    # of kernels.py, so the cache cannot serve kernels compiled from the old functions.
    from specsched.theory import kernels
    from specsched.theory.samplers import mobius, mobius_derivative

    src = inspect.getsource(mobius) + inspect.getsource(mobius_derivative)
    digest = hashlib.sha256(src.encode()).hexdigest()[:16]
    assert kernels.COMPILED_CALLEES_SHA256 == digest, (
        f"samplers.mobius / mobius_derivative changed: set COMPILED_CALLEES_SHA256 = "
        f"{digest!r} in specsched/theory/kernels.py")
INIT = st.sampled_from(["normal", "marginal"])


@settings(max_examples=60, deadline=None)
@given(spectrum=spectra(max_size=150), ab=schedules(max_steps=20), sampler=samplers(),
       loss=LOSS, init=INIT, eta=etas())
def test_numba_matches_numpy_reference(spectrum, ab, sampler, loss, init, eta):
    eta = eta if sampler == "ddim" else None
    kw = dict(loss=loss, sampler=sampler, eta=eta, init=init)
    lam, m = spectrum.eigenvalues, spectrum.mean
    v_ref, g_ref = loss_and_grad(lam, m, ab, backend="numpy", **kw)
    v, g = loss_and_grad(lam, m, ab, backend="numba", **kw)
    assert v == pytest.approx(v_ref, rel=1e-10, abs=1e-300)
    assert loss_value(lam, m, ab, backend="numba", **kw) == pytest.approx(v_ref, rel=1e-10)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10 * (np.abs(g_ref).max() + 1e-300))


@settings(max_examples=30, deadline=None)
@given(spectrum=spectra(max_size=10), ab=schedules(max_steps=10), sampler=samplers(),
       loss=LOSS, counts=st.lists(st.integers(1, 4), min_size=10, max_size=10))
def test_weights_equal_repeated_directions(spectrum, ab, sampler, loss, counts):
    # A direction of weight w must count exactly as w copies of it: the quadrature relies on it.
    lam, m = spectrum.eigenvalues, spectrum.mean
    w = np.asarray(counts[: lam.size], dtype=float)
    rep = np.repeat(np.arange(lam.size), w.astype(int))
    kw = dict(loss=loss, sampler=sampler)
    v, g = loss_and_grad(lam, m, ab, weights=w, backend="numba", **kw)
    v2, g2 = loss_and_grad(lam[rep], m[rep], ab, backend="numpy", **kw)
    assert v == pytest.approx(v2, rel=1e-10)
    # A gradient that cancels to ~0 carries rounding at the scale of the loss, not of itself.
    np.testing.assert_allclose(g, g2, rtol=1e-8, atol=1e-12 * (np.abs(g2).max() + abs(v2) + 1e-300))


def test_numba_gradient_against_finite_differences(cifar10_lam, linear_training_ab):
    ab = linear_training_ab[np.round(np.linspace(0, 999, 300)).astype(int)]
    for loss in ("w2", "kl"):
        _, g = loss_and_grad(cifar10_lam, None, ab, loss=loss, backend="numba")
        gaps = np.abs(np.diff(ab))
        for i in (0, 150, 299):
            h = 1e-5 * min(ab[i], 1 - ab[i], gaps[max(i - 1, 0)], gaps[min(i, 298)])
            up, dn = ab.copy(), ab.copy()
            up[i] += h
            dn[i] -= h
            fd = (loss_value(cifar10_lam, None, up, loss=loss, backend="numba")
                  - loss_value(cifar10_lam, None, dn, loss=loss, backend="numba")) / (2 * h)
            # the loss is ~1e3 where some partials are ~1e-2: compare on the gradient's scale
            assert abs(g[i] - fd) < 1e-6 * np.abs(g).max()


def test_quadrature_converges_and_estimates_its_error():
    from specsched.theory.quadrature import compress_spectrum, error_estimate

    rng = np.random.default_rng(1)
    lam = np.concatenate([np.zeros(500), rng.lognormal(-6, 3, 20_000)])
    mean = rng.normal(size=lam.size) * 0.1
    ab = 1 / (1 + np.exp(-np.linspace(9, -10, 30)))
    for loss in ("w2", "kl", "kl-data-gen"):
        exact = loss_value(lam, mean, ab, loss=loss)
        errs = []
        for bins in (32, 128, 512):
            q = compress_spectrum(lam, mean, bins)
            assert q.weights.sum() == lam.size
            est = error_estimate(lam, mean, ab, bins, loss=loss)
            errs.append(abs(est["value"] - exact) / exact)
            assert abs(est["value"] - exact) <= 10 * est["error_estimate"] + 1e-12 * exact
        assert errs[2] < errs[0] and errs[2] < 1e-5
