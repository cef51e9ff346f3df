"""Hypothesis strategies for property-testing samplers and schedules against the closed forms.

Shipped for users (``pip install "specsched[test]"`` brings hypothesis), and used by
specsched's own tests::

    from hypothesis import given
    from specsched.testing import eigenvalue_arrays, schedules, samplers
    from specsched.theory import closed_form

    @given(eigenvalue_arrays(), schedules(), samplers())
    def test_variance_is_positive(lam, ab, sampler):
        assert (closed_form(lam, ab, sampler=sampler).variance > 0).all()

Conventions: schedules are ``alphas_cumprod`` arrays, step 1 (least noisy) first, strictly
decreasing in (0, 1) (THEORY.md section 1); eigenvalues are data variances.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from specsched.spectrum import Spectrum
from specsched.theory.samplers import SAMPLERS


def eigenvalue_arrays(min_size=1, max_size=8, min_value=1e-3, max_value=1e2):
    """Strategy for eigenvalue arrays: float64 of shape (n,), entries in [min_value, max_value].

    Drawn log-uniformly, as real spectra span decades.
    """
    lo, hi = np.log(min_value), np.log(max_value)
    return st.lists(st.floats(lo, hi), min_size=min_size, max_size=max_size).map(
        lambda xs: np.exp(np.asarray(xs, dtype=np.float64))
    )


@st.composite
def spectra(draw, min_size=1, max_size=8, with_mean=True):
    """Strategy for :class:`~specsched.spectrum.Spectrum` values (eigenvalues only).

    ``with_mean`` draws a data mean in the eigenbasis with entries in [-2, 2].
    """
    lam = draw(eigenvalue_arrays(min_size, max_size))
    mean = None
    if with_mean:
        mean = np.asarray(draw(st.lists(st.floats(-2, 2), min_size=lam.size,
                                        max_size=lam.size)), dtype=np.float64)
    order = np.argsort(lam)[::-1]
    return Spectrum.from_eigenvalues(lam[order], mean=None if mean is None else mean[order],
                                     source="hypothesis")


@st.composite
def schedules(draw, min_steps=1, max_steps=12, min_logsnr=-9.0, max_logsnr=9.0,
              min_gap=1e-4):
    """Strategy for monotone schedules: ``alphas_cumprod`` of shape (S,), float64.

    Levels are drawn as logSNR values in [min_logsnr, max_logsnr], sorted so that step 1 is
    the least noisy; consecutive levels differ by at least ``min_gap`` relative, so finite
    differences and recursions stay well conditioned.
    """
    S = draw(st.integers(min_steps, max_steps))
    logsnr = draw(st.lists(st.floats(min_logsnr, max_logsnr), min_size=S, max_size=S,
                           unique=True))
    logsnr = np.sort(np.asarray(logsnr, dtype=np.float64))[::-1]
    ab = 1.0 / (1.0 + np.exp(-logsnr))
    assume(np.all(np.diff(ab) < -min_gap * ab[:-1]))
    return ab


def samplers(param=None):
    """Strategy for discrete sampler names of :data:`specsched.theory.SAMPLERS`.

    ``param`` = "vp" or "ve" restricts to one parametrisation.
    """
    names = [n for n, s in SAMPLERS.items() if param is None or s.param == param]
    return st.sampled_from(names)


def etas():
    """Strategy for DDIM-eta stochasticities in [0, 1], with both ends favoured."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
