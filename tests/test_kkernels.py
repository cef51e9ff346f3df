"""The compiled corner recursion of k-diffusion's samplers against the NumPy reference.

:mod:`specsched.theory.kkernels` runs each sampler's recursion from its step traced on the
corners of its denoiser gains (:func:`specsched.theory.kclosed.corner_system`); the NumPy
reference traces the step over every direction. Both are proven against k-diffusion and
diffusers themselves in tests/test_ksamplers.py and tests/test_diffusers_solvers.py; here
they must agree with each other on harder inputs than those tests use (eigenvalues from 0 to
1e4, every option, S = 1 to 40, both starts, every loss, quadrature weights), and the
interpolation itself is checked where it is exact by construction (a gain of 0 or 1).
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.theory import loss_and_grad, loss_value
from specsched.theory.kclosed import (
    _batch_maps,
    _batches,
    corner_system,
    kclosed_form,
    kdiffusion_sigmas,
)
from specsched.theory.ksolvers import KSAMPLERS, resolve_options

RNG = np.random.default_rng(7)
LAM = np.concatenate([[0.0, 1e-9], np.geomspace(1e-6, 1e4, 37), RNG.gamma(0.4, size=24)])
MEAN = RNG.normal(size=LAM.size)
CASES = [(name, {}) for name in KSAMPLERS] + [
    ("euler-ancestral", {"eta": 0.4, "s_noise": 0.9}),
    ("dpm-2-ancestral", {"eta": 0.0}),
    ("dpmpp-sde", {"r": 0.3, "eta": 0.7}),
    ("dpmpp-2m-sde", {"solver_type": "heun"}),
    ("dpmpp-3m-sde", {"s_noise": 1.3}),
    ("lms", {"order": 2}),
]


def _id(case):
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


def ab_grid(S):
    """S levels of Ho et al.'s linear T = 1000 grid, step 1 (least noisy) first."""
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[
        np.linspace(0, 999, S).round().astype(int)]


@pytest.mark.parametrize("S", [1, 2, 3, 4, 7, 40])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_generated_law_equals_the_reference(case, S):
    name, given = case
    options = resolve_options(name, **given)
    sigmas = kdiffusion_sigmas(ab_grid(S))
    for init in ("normal", "marginal"):
        ref = kclosed_form(LAM, sigmas, name, options, init)
        fast = kclosed_form(LAM, sigmas, name, options, init, backend="numba")
        # entries far below the largest are rounding in both (a zero eigenvalue's law)
        scale = np.max(ref.variance)
        np.testing.assert_allclose(fast.variance, ref.variance, rtol=1e-9, atol=1e-13 * scale)
        np.testing.assert_allclose(fast.transfer, ref.transfer, rtol=1e-9,
                                   atol=1e-13 * np.max(np.abs(ref.transfer)))


@pytest.mark.parametrize("loss", ["w2", "kl", "kl-data-gen"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_loss_and_gradient_equal_the_reference(case, loss):
    name, given = case
    ab = ab_grid(12)
    weights = RNG.uniform(0.5, 2.0, LAM.size)  # as quadrature nodes carry
    kw = dict(loss=loss, sampler=name, eta=given.get("eta"), weights=weights,
              options={k: v for k, v in given.items() if k != "eta"})
    for init in ("normal", "marginal"):
        v_ref, g_ref = loss_and_grad(LAM, MEAN, ab, init=init, backend="numpy", **kw)
        v, g = loss_and_grad(LAM, MEAN, ab, init=init, backend="numba", **kw)
        assert v == pytest.approx(v_ref, rel=1e-11)
        assert loss_value(LAM, MEAN, ab, init=init, backend="numba", **kw) == \
            pytest.approx(v_ref, rel=1e-11)
        np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10 * np.max(np.abs(g_ref)))


def test_auto_backend_is_the_compiled_one_and_unknown_backends_are_refused():
    ab = ab_grid(5)
    assert loss_value(LAM, None, ab, sampler="heun") == \
        loss_value(LAM, None, ab, sampler="heun", backend="numba")
    with pytest.raises(InputError, match="backend"):
        kclosed_form(LAM, kdiffusion_sigmas(ab), "heun", backend="cupy")


@pytest.mark.parametrize("name", list(KSAMPLERS))
def test_corners_are_the_maps_at_gains_0_and_1(name):
    """A zero eigenvalue has gain 0 at every call, a huge one gain 1 (to rounding): the
    reference trace over those two directions must give the first and the last corner."""
    spec = KSAMPLERS[name]
    sigmas = kdiffusion_sigmas(ab_grid(9))
    options = resolve_options(name)
    cs = corner_system(spec, sigmas, options)
    lam = np.array([0.0, 1e300])
    L = 1
    for members in _batches(sigmas.size - 1, spec.warmup):
        M, N, *_ = _batch_maps(spec, sigmas, options, lam, members, L)
        a, b, k = M.shape[1], M.shape[2], N.shape[2]
        for col, q in ((0, 0), (1, -1)):
            np.testing.assert_allclose(cs.M[members, q, :a, :b], M[..., col], rtol=1e-12,
                                       atol=1e-12)
            np.testing.assert_allclose(cs.N[members, q, :a, :k], N[..., col], rtol=1e-12,
                                       atol=1e-12)
        L = a


def test_derivative_pass_has_the_values_of_the_plain_pass():
    spec = KSAMPLERS["dpmpp-3m-sde"]
    sigmas = kdiffusion_sigmas(ab_grid(8))
    plain = corner_system(spec, sigmas, resolve_options("dpmpp-3m-sde"))
    both = corner_system(spec, sigmas, resolve_options("dpmpp-3m-sde"), derivatives=True)
    for a, b in ((plain.M, both.M), (plain.N, both.N), (plain.R, both.R),
                 (plain.call_sigmas, both.call_sigmas)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-300)
    assert both.dM.shape == (8, len(spec.stencil)) + plain.M.shape[1:]
    assert np.any(both.dR != 0.0)  # the Brownian covariance depends on the levels


def test_kernels_are_tied_to_the_source_of_their_compiled_callees():
    # numba caches corner_vjp keyed on kkernels.py's contents only; it compiles the loss terms
    # of kernels._term. The recorded hash makes an edit of _term an edit of kkernels.py.
    from specsched.theory import kernels, kkernels

    digest = hashlib.sha256(inspect.getsource(kernels._term.py_func).encode()).hexdigest()[:16]
    assert kkernels.COMPILED_CALLEES_SHA256 == digest, (
        f"kernels._term changed: set COMPILED_CALLEES_SHA256 = {digest!r} in "
        "specsched/theory/kkernels.py")
