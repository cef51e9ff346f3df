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
decreasing in (0, 1) (docs/theory.md section 1); eigenvalues are data variances.
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

    ``param`` = "vp", "ve" or "fm" restricts to one parametrisation.
    """
    names = [n for n, s in SAMPLERS.items() if param is None or s.param == param]
    return st.sampled_from(names)


def etas():
    """Strategy for DDIM-eta stochasticities in [0, 1], with both ends favoured."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


# ---- malformed inputs: every loader and the CLI must refuse them with an InputError --------
#
# Each strategy draws ``(value, what)``: a bad input and a short description of its fault
# (handy in assertion messages). None of the values is acceptable: a loader must raise
# :class:`specsched.errors.InputError` naming the file, field or argument, and the CLI must
# exit with code 2 and a one-line message, never a traceback or a silent result.

#: A minimal valid schedule file (as a dict), the base the malformed ones are mutated from.
VALID_SCHEDULE = {"format": "specsched.schedule", "version": 1,
                  "alphas_cumprod": [0.99, 0.9, 0.5, 0.1, 0.01]}


def noise_spectra(eigenvalues, time_varying=None):
    """Strategy for forward noise spectra of a data spectrum (docs/theory.md section 9).

    Draws ``white``, ``equal-snr``, ``power:GAMMA`` (GAMMA in [0, 2]), ``fans:GAMMA`` or a
    free positive spectrum (entries log-uniform in [1e-2, 1e2]), as
    :class:`specsched.theory.noise.NoiseSpectrum` values for ``eigenvalues`` (shape (d,),
    largest first). ``time_varying`` True draws FANS only, False only constant spectra, None
    both. FANS' closed form covers ddim and ddpm only; constant spectra every sampler.
    """
    from specsched.theory.noise import NoiseSpectrum, noise_spectrum

    lam = np.asarray(eigenvalues, dtype=np.float64)
    gammas = st.floats(0.0, 2.0)
    free = st.lists(st.floats(np.log(1e-2), np.log(1e2)), min_size=lam.size,
                    max_size=lam.size).map(
        lambda xs: NoiseSpectrum("free", np.exp(np.asarray(xs, dtype=np.float64))))
    constant = st.one_of(st.just(noise_spectrum("white", lam)),
                         st.just(noise_spectrum("equal-snr", lam)),
                         gammas.map(lambda g: noise_spectrum(f"power:{g!r}", lam)), free)
    varying = gammas.map(lambda g: noise_spectrum(f"fans:{g!r}", lam))
    if time_varying is None:
        return st.one_of(constant, varying)
    return varying if time_varying else constant


def _finite_floats(lo=-1e3, hi=1e3):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def malformed_sample_arrays(draw):
    """Strategy for arrays that are not a valid data set of samples ``(N, ...)``, N >= 2.

    Faults: a NaN or +-Inf entry; no samples (N = 0); a single sample (a covariance needs
    N >= 2); a complex dtype; a 0-d array; a string dtype.
    """
    kind = draw(st.sampled_from(["nonfinite", "empty", "single", "complex", "scalar",
                                 "strings"]))
    d = draw(st.integers(1, 6))
    n = draw(st.integers(2, 8))
    if kind == "nonfinite":
        x = np.asarray(draw(st.lists(_finite_floats(), min_size=n * d, max_size=n * d)),
                       dtype=np.float64).reshape(n, d)
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))
        x[i, j] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        return x.astype(dtype), f"non-finite value at sample {i}"
    if kind == "empty":
        return np.zeros((0, d)), "no samples"
    if kind == "single":
        return np.ones((1, d)), "a single sample"
    if kind == "complex":
        return np.ones((n, d)) + 1j, "complex dtype"
    if kind == "scalar":
        return np.array(draw(_finite_floats())), "0-d array"
    return np.full((n, d), "a"), "string dtype"


@st.composite
def malformed_eigenvalue_arrays(draw):
    """Strategy for eigenvalue arrays a :class:`~specsched.spectrum.Spectrum` must refuse.

    Faults: a NaN or +-Inf entry; a negative eigenvalue far beyond round-off (below
    ``-1e-3 x`` the largest); all zeros; an empty array; complex values; a 2-D array.
    """
    kind = draw(st.sampled_from(["nonfinite", "negative", "zeros", "empty", "complex",
                                 "two_d"]))
    lam = draw(eigenvalue_arrays(min_size=1, max_size=8))
    if kind == "nonfinite":
        lam[draw(st.integers(0, lam.size - 1))] = draw(st.sampled_from([np.nan, np.inf,
                                                                        -np.inf]))
        return lam, "non-finite eigenvalue"
    if kind == "negative":
        lam[draw(st.integers(0, lam.size - 1))] = -draw(st.floats(1e-3, 1.0)) * lam.max()
        return lam, "large negative eigenvalue"
    if kind == "zeros":
        return np.zeros(lam.size), "all zeros"
    if kind == "empty":
        return np.zeros(0), "empty"
    if kind == "complex":
        return lam + 1j, "complex eigenvalues"
    return np.stack([lam, lam]), "2-D array"


@st.composite
def malformed_schedule_dicts(draw):
    """Strategy for parsed schedule files (dicts) that :meth:`Schedule.from_dict` must refuse.

    Faults: ``alphas_cumprod`` non-monotone, with a value <= 0 or >= 1, empty, nested,
    holding a string, or missing; another ``version`` or ``format``; ``steps`` that does
    not match; a derived view (``sigmas``) that disagrees; a top level that is not an object.
    """
    d = dict(VALID_SCHEDULE)
    ab = list(d["alphas_cumprod"])
    kind = draw(st.sampled_from(["nonmonotone", "low", "high", "empty_ab", "nested",
                                 "string", "missing", "version", "format", "steps", "sigmas",
                                 "not_object"]))
    if kind == "nonmonotone":
        i = draw(st.integers(0, len(ab) - 2))
        ab[i], ab[i + 1] = ab[i + 1], ab[i]
    elif kind == "low":
        ab[draw(st.integers(0, len(ab) - 1))] = draw(st.floats(-10.0, 0.0))
    elif kind == "high":
        ab[draw(st.integers(0, len(ab) - 1))] = draw(st.floats(1.0, 10.0))
    elif kind == "empty_ab":
        ab = []
    elif kind == "nested":
        ab = [[v] for v in ab]
    elif kind == "string":
        ab[draw(st.integers(0, len(ab) - 1))] = draw(st.text(max_size=5))
    elif kind == "missing":
        del d["alphas_cumprod"]
        return d, "alphas_cumprod missing"
    elif kind == "version":
        d["version"] = draw(st.one_of(st.integers(2, 10**6), st.integers(-10**6, 0),
                                      st.text(max_size=3), st.floats(1.5, 9.5)))
    elif kind == "format":
        d["format"] = draw(st.text(max_size=20).filter(lambda s: s != VALID_SCHEDULE["format"]))
    elif kind == "steps":
        d["steps"] = draw(st.integers(1, 100).filter(lambda s: s != len(ab)))
    elif kind == "sigmas":
        d["sigmas"] = [v + 1.0 for v in sigmas_of(ab)]
    else:
        return draw(st.sampled_from([[], [1, 2], "schedule", 3, None])), "not a JSON object"
    d["alphas_cumprod"] = ab
    return d, kind


def sigmas_of(alphas_cumprod):
    """``sqrt((1 - ab) / ab)`` as a list (docs/theory.md section 1), for building schedule files."""
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - ab) / ab).tolist()


@st.composite
def malformed_schedule_texts(draw):
    """Strategy for schedule file contents (str) that :meth:`Schedule.load` must refuse.

    Faults: a valid file truncated at any point; NaN / Infinity literals; random text that
    is not JSON; the JSON of a :func:`malformed_schedule_dicts` value.
    """
    import json

    kind = draw(st.sampled_from(["truncated", "constant", "garbage", "dict"]))
    text = json.dumps(VALID_SCHEDULE)
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 1))], "truncated"
    if kind == "constant":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return text.replace("0.5", literal), f"{literal} literal"
    if kind == "garbage":
        junk = draw(st.text(min_size=1, max_size=40).filter(lambda s: not _is_json_object(s)))
        return junk, "not JSON"
    d, what = draw(malformed_schedule_dicts())
    return json.dumps(d), what


def _is_json_object(text: str) -> bool:
    import json

    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
