"""Conversions between the views of one noise schedule (docs/theory.md section 1).

Notation (variance preserving, ``x_s = sqrt(ab_s) x_0 + sqrt(1 - ab_s) eps``):

- ``ab``     alphas_cumprod, ``(ab_1, ..., ab_S)``, ``1 > ab_1 > ... > ab_S > 0``; step 1 is the
  least noisy and comes first; ``ab_0 = 1`` is implicit (the last reverse step lands on data).
- ``beta``   ``beta_s = 1 - ab_s / ab_{s-1}``          (per-step variance, diffusers' ``betas``)
- ``sigma``  ``sigma_s = sqrt((1 - ab_s) / ab_s)``     (VE / EDM / k-diffusion noise level)
- ``logsnr`` ``logsnr_s = log(ab_s / (1 - ab_s)) = -2 log sigma_s``
- ``t``      flow-matching time, ``x_t = (1 - t) x_0 + t eps`` (docs/theory.md section 10):
  ``t / (1 - t) = sigma``, so ``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``; ``t_1 < ... < t_S``,
  and ``t_S = 1`` (pure noise) is ``ab_S = 0``, zero terminal SNR

Every function takes an array-like and returns a new float64 ndarray. The maps are written to
keep full relative accuracy at both ends (``ab`` near 0 and near 1): differences of nearby
alphas_cumprod are formed exactly before dividing, and the sigmoid / logit pair
(:func:`scipy.special.expit`, :func:`scipy.special.logit`) replaces ``1 / (1 + sigma**2)``,
which overflows for large sigma.

This module also holds :func:`validate_alphas_cumprod` (re-exported by
:mod:`specsched.schedules.schedule`), the one check every schedule passes at the boundary.
Validation happens once, where user data enters (a public function called with an array,
:class:`~specsched.schedules.Schedule` construction or loading); the private ``_sigmas``,
``_logsnr`` and ``_betas`` trust their input and are what code holding an already validated
schedule calls. :func:`as_alphas_cumprod` returns a Schedule's array without checking it again.
Error messages name the field and the index at fault: ``alphas_cumprod[3]: expected a value in
the open interval (0, 1), got 1.5``.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit, logit

from specsched.errors import InputError

__all__ = [
    "as_alphas_cumprod",
    "check_int",
    "validate_alphas_cumprod",
    "betas_from_alphas_cumprod",
    "alphas_cumprod_from_betas",
    "sigmas_from_alphas_cumprod",
    "alphas_cumprod_from_sigmas",
    "logsnr_from_alphas_cumprod",
    "alphas_cumprod_from_logsnr",
    "fm_times_from_alphas_cumprod",
    "alphas_cumprod_from_fm_times",
    "validate_fm_times",
    "sd3_shift",
]


# --------------------------------------------------------------------------------------------
# Boundary checks (shared by the whole subpackage)
# --------------------------------------------------------------------------------------------


def _as_float64(values, name: str, *, one_d: bool = False) -> np.ndarray:
    """Return ``values`` as a new float64 ndarray, or raise InputError naming ``name``."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{name}: expected an array of real numbers ({exc})") from None
    if one_d and arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name}: expected at least one value, got an empty array")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = np.unravel_index(bad[0], arr.shape)
        raise InputError(f"{_at(name, i, arr.ndim)}: expected a finite number, got "
                         f"{float(arr[i])!r}")
    return arr


def _at(name: str, i, ndim: int) -> str:
    """``name[3]`` (or ``name[1, 2]``) for a numpy index tuple; ``name`` for a 0-d array."""
    if ndim == 0:
        return name
    return f"{name}[{', '.join(str(int(k)) for k in i)}]"


def _check_open_interval(arr: np.ndarray, name: str, low: float, high: float) -> None:
    """Raise InputError unless every value lies in the open interval (low, high)."""
    bad = np.flatnonzero(~((arr > low) & (arr < high)))
    if bad.size:
        i = np.unravel_index(bad[0], arr.shape)
        raise InputError(
            f"{_at(name, i, arr.ndim)}: expected a value in the open interval "
            f"({low:g}, {high:g}), got {float(arr[i])!r}"
        )


def check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int in [minimum, maximum], or raise InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise InputError(f"{name}: expected an integer >= {minimum}{upper}, got {value}")
    return value


def validate_alphas_cumprod(alphas_cumprod, name: str = "alphas_cumprod", *,
                            zero_terminal: bool = False) -> np.ndarray:
    """Check a sampling schedule and return it as a new float64 array.

    Parameters
    ----------
    alphas_cumprod : array-like of shape (n_steps,)
        ``ab_1, ..., ab_S``, step 1 (least noisy) first (docs/theory.md section 1, VP).
    name : str
        Field or argument name used in error messages.
    zero_terminal : bool
        Also accept ``ab_S = 0`` (pure noise, zero terminal SNR: a flow-matching schedule
        ending at ``t = 1``, docs/theory.md section 10); never a 0 before the last step.

    Returns
    -------
    ndarray of shape (n_steps,), float64
        A fresh copy of the input.

    Raises
    ------
    InputError
        Unless the input is 1-D, non-empty, finite, inside the open interval (0, 1) and
        strictly decreasing (``1 > ab_1 > ... > ab_S > 0``); the message names ``name`` and
        the first offending index and value.
    """
    ab = _as_float64(alphas_cumprod, name, one_d=True)
    if ab[-1] == 0.0 and ab.size > 1 and np.all((ab[:-1] > 0.0) & (ab[:-1] < 1.0)) \
            and not zero_terminal:
        raise InputError(f"{name}[{ab.size - 1}]: expected a value in the open interval (0, 1), "
                         "got 0.0: pure noise (zero terminal SNR, t_S = 1) is a flow-matching "
                         "schedule's last level, allowed with param fm (--param fm)")
    if zero_terminal and ab[-1] == 0.0:
        if ab.size > 1:
            _check_open_interval(ab[:-1], name, 0.0, 1.0)
    else:
        _check_open_interval(ab, name, 0.0, 1.0)
    bad = np.flatnonzero(np.diff(ab) >= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise InputError(
            f"{name}[{i}]: expected strictly decreasing values (step 1, the least noisy, "
            f"first), got {float(ab[i])!r} >= {name}[{i - 1}] = {float(ab[i - 1])!r}"
        )
    return ab


# --------------------------------------------------------------------------------------------
# ab <-> beta  (a whole schedule: betas depend on consecutive steps)
# --------------------------------------------------------------------------------------------


def as_alphas_cumprod(schedule, *, zero_terminal: bool = False) -> np.ndarray:
    """The ``alphas_cumprod`` of a :class:`~specsched.schedules.Schedule` or an array.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        Step 1 (least noisy) first, strictly decreasing in (0, 1); ``ab_0 = 1`` implied.
    zero_terminal : bool
        Accept an array ending with ``ab_S = 0`` (:func:`validate_alphas_cumprod`).

    Returns
    -------
    ndarray of shape (n_steps,), float64
        A Schedule's own read-only array, which was validated when the Schedule was built
        (any class with a true ``VALIDATED_ON_CONSTRUCTION`` attribute is trusted that way);
        for anything else a new array that passed :func:`validate_alphas_cumprod`.

    Raises
    ------
    InputError
        If the array is not a valid schedule (message names ``alphas_cumprod``).
    """
    if getattr(type(schedule), "VALIDATED_ON_CONSTRUCTION", False):
        return schedule.alphas_cumprod
    ab = getattr(schedule, "alphas_cumprod", schedule)
    return validate_alphas_cumprod(ab, "alphas_cumprod", zero_terminal=zero_terminal)


# Trusting forms of the views below, for arrays validated at the boundary (docs/theory.md
# section 1). ``ab`` is a float64 ndarray: (S,) strictly decreasing for ``_betas``, any shape
# in (0, 1) for the others.


def _betas(ab: np.ndarray) -> np.ndarray:
    prev = np.concatenate(([1.0], ab[:-1]))
    return (prev - ab) / prev


def _sigmas(ab: np.ndarray) -> np.ndarray:
    # 1 - ab is exact for ab >= 1/2 (Sterbenz) and well conditioned below; the square roots
    # are taken before dividing so that tiny (even subnormal) ab does not overflow.
    return np.sqrt(1.0 - ab) / np.sqrt(ab)


def _logsnr(ab: np.ndarray) -> np.ndarray:
    return logit(ab)


def betas_from_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    """Per-step betas of a schedule: ``beta_s = 1 - ab_s / ab_{s-1}``, ``ab_0 = 1``.

    Computed as ``(ab_{s-1} - ab_s) / ab_{s-1}``: the difference of two nearby floats is exact
    (Sterbenz), so small betas keep their relative accuracy.

    Parameters
    ----------
    alphas_cumprod : array-like of shape (n_steps,)
        Strictly decreasing, in (0, 1), step 1 first (docs/theory.md section 1).

    Returns
    -------
    ndarray of shape (n_steps,), float64
        ``beta_1, ..., beta_S`` in (0, 1), step 1 first (``beta_1 = 1 - ab_1``).

    Raises
    ------
    InputError
        If ``alphas_cumprod`` fails :func:`validate_alphas_cumprod`.
    """
    return _betas(validate_alphas_cumprod(alphas_cumprod))


def alphas_cumprod_from_betas(betas) -> np.ndarray:
    """alphas_cumprod of per-step betas: ``ab_s = prod_{j<=s} (1 - beta_j)``.

    Same product as diffusers' ``torch.cumprod(1 - betas)``, in float64.

    Parameters
    ----------
    betas : array-like of shape (n_steps,)
        ``beta_1, ..., beta_S``, each in the open interval (0, 1), step 1 first.

    Returns
    -------
    ndarray of shape (n_steps,), float64
        ``ab_1, ..., ab_S``, step 1 first. Strictly decreasing in exact arithmetic; a beta
        below ~1e-16 leaves ``ab`` unchanged in float64.

    Raises
    ------
    InputError
        If ``betas`` is not 1-D, empty, non-finite or has a value outside (0, 1).
    """
    beta = _as_float64(betas, "betas", one_d=True)
    _check_open_interval(beta, "betas", 0.0, 1.0)
    return np.cumprod(1.0 - beta)


# --------------------------------------------------------------------------------------------
# ab <-> sigma <-> logsnr  (elementwise, any shape)
# --------------------------------------------------------------------------------------------


def sigmas_from_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    """VE noise levels of VP points: ``sigma = sqrt((1 - ab) / ab)`` (docs/theory.md section 1).

    Parameters
    ----------
    alphas_cumprod : array-like, any shape
        Values in the open interval (0, 1). Not required to be monotone (elementwise map).

    Returns
    -------
    ndarray, same shape, float64
        ``sigma > 0``; increasing when ``ab`` decreases (step 1 first stays first).

    Raises
    ------
    InputError
        If a value is non-finite or outside (0, 1).
    """
    ab = _as_float64(alphas_cumprod, "alphas_cumprod")
    _check_open_interval(ab, "alphas_cumprod", 0.0, 1.0)
    return _sigmas(ab)


def alphas_cumprod_from_sigmas(sigmas) -> np.ndarray:
    """VP alphas_cumprod of VE noise levels: ``ab = 1 / (1 + sigma^2)`` (docs/theory.md section 1).

    Evaluated as ``expit(-2 log sigma)``, which neither overflows for large sigma nor loses
    relative accuracy; the result rounds to 1.0 for ``sigma < ~1e-8`` and underflows to 0 only
    beyond ``sigma ~ 1e154`` (float64 limits, not errors).

    Parameters
    ----------
    sigmas : array-like, any shape
        Values in (0, inf), the EDM / k-diffusion ``sigma``.

    Returns
    -------
    ndarray, same shape, float64
        ``ab`` in (0, 1].

    Raises
    ------
    InputError
        If a value is non-finite or not positive.
    """
    sigma = _as_float64(sigmas, "sigmas")
    _check_open_interval(sigma, "sigmas", 0.0, np.inf)
    return expit(-2.0 * np.log(sigma))


def logsnr_from_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    """Log signal-to-noise ratio ``logsnr = log(ab / (1 - ab)) = -2 log sigma``.

    Source: docs/theory.md section 1.

    Parameters
    ----------
    alphas_cumprod : array-like, any shape
        Values in the open interval (0, 1).

    Returns
    -------
    ndarray, same shape, float64
        ``logit(ab)``; decreasing along a schedule (step 1 has the largest logSNR).

    Raises
    ------
    InputError
        If a value is non-finite or outside (0, 1).
    """
    ab = _as_float64(alphas_cumprod, "alphas_cumprod")
    _check_open_interval(ab, "alphas_cumprod", 0.0, 1.0)
    return _logsnr(ab)


def alphas_cumprod_from_logsnr(logsnr) -> np.ndarray:
    """alphas_cumprod of log-SNRs: ``ab = expit(logsnr) = 1 / (1 + exp(-logsnr))``.

    Parameters
    ----------
    logsnr : array-like, any shape
        Finite log signal-to-noise ratios (natural log, docs/theory.md section 1).

    Returns
    -------
    ndarray, same shape, float64
        ``ab`` in [0, 1]; rounds to exactly 1.0 for ``logsnr > ~36.7`` and to 0 below ~-745
        (float64 limits, not errors).

    Raises
    ------
    InputError
        If a value is non-finite.
    """
    return expit(_as_float64(logsnr, "logsnr"))


# --------------------------------------------------------------------------------------------
# ab <-> flow-matching time t  (elementwise; t = 1 is ab = 0, zero terminal SNR)
# --------------------------------------------------------------------------------------------


def _fm_times(ab):
    """``t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab))``: trusting, complex-safe, ab in [0, 1]."""
    u, v = np.sqrt(ab), np.sqrt(1.0 - ab)
    return v / (u + v)


def _fm_alphas_cumprod(t):
    """``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``: trusting, complex-safe, t in [0, 1]."""
    u = 1.0 - t
    return u * u / (u * u + t * t)


def validate_fm_times(times, name: str = "t") -> np.ndarray:
    """Check a flow-matching schedule ``t_1 < ... < t_S`` in (0, 1] and return it (float64).

    Parameters
    ----------
    times : array-like of shape (n_steps,)
        Flow-matching times, step 1 (least noisy) first; ``t_S = 1`` (pure noise) allowed.
    name : str
        Field or argument name used in error messages.

    Raises
    ------
    InputError
        Unless 1-D, non-empty, finite, in (0, 1] and strictly increasing; the message names
        ``name``, the first offending index and value, and the range allowed.
    """
    t = _as_float64(times, name, one_d=True)
    bad = np.flatnonzero(~((t > 0.0) & (t <= 1.0)))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{name}[{i}]: expected a flow-matching time in (0, 1] (1 is pure "
                         f"noise), got {float(t[i])!r}")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise InputError(f"{name}[{i}]: expected strictly increasing times (step 1, the least "
                         f"noisy, first; noise grows with t), got {float(t[i])!r} <= "
                         f"{name}[{i - 1}] = {float(t[i - 1])!r}")
    return t


def fm_times_from_alphas_cumprod(alphas_cumprod) -> np.ndarray:
    """Flow-matching times of VP levels: ``t = sigma / (1 + sigma)`` (docs/theory.md section 10).

    ``x_t = (1 - t) x_0 + t eps`` divided by ``sqrt((1 - t)^2 + t^2)`` is the VP state of
    ``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``; evaluated as ``sqrt(1 - ab) / (sqrt(ab) +
    sqrt(1 - ab))``, exact at both ends.

    Parameters
    ----------
    alphas_cumprod : array-like, any shape
        Values in [0, 1) (0 is pure noise, ``t = 1``).

    Returns
    -------
    ndarray, same shape, float64
        ``t`` in (0, 1]; increasing when ``ab`` decreases.

    Raises
    ------
    InputError
        A value non-finite or outside [0, 1).
    """
    ab = _as_float64(alphas_cumprod, "alphas_cumprod")
    bad = np.flatnonzero(~((ab >= 0.0) & (ab < 1.0)))
    if bad.size:
        i = np.unravel_index(bad[0], ab.shape)
        raise InputError(f"{_at('alphas_cumprod', i, ab.ndim)}: expected a value in [0, 1) "
                         f"(0 is pure noise), got {float(ab[i])!r}")
    return _fm_times(ab)


def alphas_cumprod_from_fm_times(times) -> np.ndarray:
    """VP levels of flow-matching times: ``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``.

    Source: docs/theory.md section 10 (``logsnr = 2 log((1 - t) / t)``).

    Parameters
    ----------
    times : array-like, any shape
        Values in (0, 1]; ``t = 1`` gives ``ab = 0`` (zero terminal SNR).

    Returns
    -------
    ndarray, same shape, float64
        ``ab`` in [0, 1).

    Raises
    ------
    InputError
        A value non-finite or outside (0, 1].
    """
    t = _as_float64(times, "t")
    bad = np.flatnonzero(~((t > 0.0) & (t <= 1.0)))
    if bad.size:
        i = np.unravel_index(bad[0], t.shape)
        raise InputError(f"{_at('t', i, t.ndim)}: expected a flow-matching time in (0, 1] "
                         f"(1 is pure noise), got {float(t[i])!r}")
    return _fm_alphas_cumprod(t)


def sd3_shift(times, shift: float) -> np.ndarray:
    """Stable Diffusion 3's timestep shift ``t' = s t / (1 + (s - 1) t)`` (Esser et al. 2024).

    It multiplies the odds ``t / (1 - t)`` (the VE sigma) by ``s``, i.e. moves every logSNR by
    ``-2 log s`` (docs/theory.md section 10); ``t = 1`` stays 1. diffusers'
    ``FlowMatchEulerDiscreteScheduler(shift=s)`` applies exactly this to its sigmas, and its
    exponential ``time_shift(mu, 1, t)`` is this with ``s = exp(mu)``.

    Parameters
    ----------
    times : array-like, any shape
        Flow-matching times in [0, 1].
    shift : float
        ``s > 0`` (1 is no shift; > 1 moves the steps towards the noisy end).

    Returns
    -------
    ndarray, same shape, float64

    Raises
    ------
    InputError
        ``shift`` not a finite number > 0 (named ``shift``), or a time outside [0, 1].
    """
    try:
        s = float(shift)
    except (TypeError, ValueError):
        raise InputError(f"shift: expected a number > 0, got {shift!r}", param="shift") from None
    if not (np.isfinite(s) and s > 0.0):
        raise InputError(f"shift: expected a finite number > 0, got {shift!r}", param="shift")
    t = _as_float64(times, "t")
    bad = np.flatnonzero(~((t >= 0.0) & (t <= 1.0)))
    if bad.size:
        i = np.unravel_index(bad[0], t.shape)
        raise InputError(f"{_at('t', i, t.ndim)}: expected a flow-matching time in [0, 1], "
                         f"got {float(t[i])!r}")
    st = s * t
    return st / (st + (1.0 - t))  # = s t / (1 + (s - 1) t), exactly 1 at t = 1
