"""Baseline noise schedules: training grids, timestep spacings, EDM and logSNR schedules.

Notation (docs/theory.md section 1): a model is trained on T discrete steps with
``alphas_cumprod[t]``, t = 0..T-1 (0-indexed, diffusers' convention, t = 0 least noisy). A
sampling schedule with S steps is ``ab = (ab_1, ..., ab_S)``, step 1 (least noisy) first,
``1 > ab_1 > ... > ab_S > 0``, variance preserving (VP). Every function here returns step 1
first, i.e. training indices in ascending order and alphas_cumprod in decreasing order;
diffusers' ``scheduler.timesteps`` is the same sequence reversed.

Sources:

- training betas: diffusers ``DDPMScheduler.__init__`` (``beta_schedule`` = "linear",
  "scaled_linear", "squaredcos_cap_v2", "sigmoid") and ``betas_for_alpha_bar``
  (``alpha_transform_type="cosine"``), reproduced from diffusers' ``scheduling_ddpm.py`` and
  checked against copies of it; computed here in float64 where diffusers uses float32.
- spacings: diffusers ``DDIMScheduler.set_timesteps`` (``timestep_spacing``); see
  Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", table 2.
- karras: Karras et al. 2022 (EDM), eq. (5); k-diffusion ``get_sigmas_karras``.
- exponential: k-diffusion ``get_sigmas_exponential`` (uniform in log sigma).
- kl_optimal: Sabour, Fidler, Kreis 2024 ("Align Your Steps"), the closed-form optimum of its
  Gaussian-data theorem, as ComfyUI's ``kl_optimal`` scheduler implements it (atan(sigma)
  uniform in the step index).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.special import expit

from specsched.errors import InputError
from specsched.schedules.conversions import (
    _as_float64,
    _check_open_interval,
    _logsnr,
    _sigmas,
    alphas_cumprod_from_logsnr,
    alphas_cumprod_from_sigmas,
    check_int,
    logsnr_from_alphas_cumprod,
)

__all__ = [
    "DIFFUSERS_SCHEDULER_ARGS",
    "TRAINING_FAMILIES",
    "BASELINES",
    "SPACINGS",
    "training_alphas_cumprod",
    "spacing_indices",
    "EDM_SIGMA_RANGE",
    "SIGMA_BASELINES",
    "karras_alphas_cumprod",
    "exponential_alphas_cumprod",
    "kl_optimal_alphas_cumprod",
    "logsnr_alphas_cumprod",
    "sigma_range_from_bounds",
    "baseline_alphas_cumprod",
    "nearest_training_timesteps",
    "nearest_training_timesteps_with_error",
]

#: Training beta schedules (diffusers ``beta_schedule``; "cosine" is "squaredcos_cap_v2").
TRAINING_FAMILIES = ("linear", "scaled_linear", "cosine", "sigmoid")
#: The diffusers scheduler arguments that build each training family (``scaled_linear`` is
#: Stable Diffusion's: diffusers' own defaults, 1e-4 and 0.02, give another grid).
DIFFUSERS_SCHEDULER_ARGS = {
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                      "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "sigmoid": {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.02},
}
#: Names accepted by :func:`baseline_alphas_cumprod`.
BASELINES = ("linear", "scaled_linear", "cosine", "sigmoid", "karras", "exponential",
             "kl_optimal", "logsnr")
#: The practitioners' baselines defined on a sigma range (no training grid, no spacing).
SIGMA_BASELINES = ("karras", "exponential", "kl_optimal")
#: Their default ``(sigma_min, sigma_max)``: EDM's (Karras et al. 2022, table 1).
EDM_SIGMA_RANGE = (0.002, 80.0)
#: diffusers' ``timestep_spacing`` values.
SPACINGS = ("linspace", "leading", "trailing")


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(choices)}; got {value!r}")
    return value


def _positive_float(value, name: str) -> float:
    arr = _as_float64(value, name)
    if arr.ndim != 0:
        raise InputError(f"{name}: expected a number, got shape {arr.shape}")
    _check_open_interval(arr.reshape(1), name, 0.0, np.inf)
    return float(arr)


def training_alphas_cumprod(family: str = "linear", num_train_timesteps: int = 1000) -> np.ndarray:
    """alphas_cumprod of a training grid, as diffusers' ``DDPMScheduler`` builds it.

    ``ab[t] = prod_{i<=t} (1 - beta_i)``, t = 0..T-1, with the betas of ``family``
    (docs/theory.md section 1, "Baseline families"):

    - ``linear`` (Ho et al. 2020): ``betas = linspace(1e-4, 0.02, T)``
    - ``scaled_linear`` (Stable Diffusion): ``betas = linspace(sqrt(8.5e-4), sqrt(0.012), T)**2``
    - ``cosine`` (Nichol & Dhariwal 2021; diffusers "squaredcos_cap_v2" =
      ``betas_for_alpha_bar``): ``beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999)``,
      ``f(t) = cos((t + 0.008) / 1.008 * pi/2)**2``. The clip binds on the last step, where
      ``f(1)`` is ~0.
    - ``sigmoid`` (GeoDiff; diffusers "sigmoid"):
      ``betas = expit(linspace(-6, 6, T)) * (0.02 - 1e-4) + 1e-4``

    The betas' end points are diffusers' defaults for each family.

    Parameters
    ----------
    family : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Training beta schedule.
    num_train_timesteps : int
        T >= 1.

    Returns
    -------
    ndarray of shape (num_train_timesteps,), float64
        ``alphas_cumprod[t]``, t = 0 (least noisy) first; strictly decreasing in (0, 1).

    Raises
    ------
    InputError
        Unknown ``family`` (the message lists TRAINING_FAMILIES) or T not an integer >= 1.
    """
    _check_choice(family, "family", TRAINING_FAMILIES)
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    if family == "linear":
        betas = np.linspace(1e-4, 0.02, T)
    elif family == "scaled_linear":
        betas = np.linspace(0.00085**0.5, 0.012**0.5, T) ** 2
    elif family == "cosine":

        def f(t):
            return np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        i = np.arange(T, dtype=np.float64)
        betas = np.minimum(1.0 - f((i + 1) / T) / f(i / T), 0.999)
    else:  # sigmoid
        betas = expit(np.linspace(-6.0, 6.0, T)) * (0.02 - 1e-4) + 1e-4
    # diffusers: alphas_cumprod = cumprod(1 - betas); so ab[0] = 1 - betas[0] exactly.
    return np.cumprod(1.0 - betas)


def diffusers_timesteps(spacing, num_steps, num_train_timesteps=1000, steps_offset=0):
    """The ``timesteps`` diffusers' ``DDIMScheduler.set_timesteps`` produces, as it does.

    Descending (noisiest first), int64: ``linspace`` ``round(linspace(0, T-1, S))``,
    ``leading`` ``arange(S) * (T // S) + steps_offset``, ``trailing``
    ``round(arange(T, 0, -T/S)) - 1`` with numpy's float arange, which for some S (e.g.
    T = 1000, S = 61) has S + 1 points, the last -1; that extra point is kept here, as
    diffusers keeps it (:func:`spacing_indices` drops it).

    Parameters
    ----------
    spacing : {"linspace", "leading", "trailing"}
    num_steps, num_train_timesteps, steps_offset : int
        S (checked by the caller), T, and the offset of ``leading``.

    Returns
    -------
    ndarray of shape (S,) or (S + 1,), int64

    Raises
    ------
    InputError
        If ``steps_offset`` puts a ``leading`` timestep beyond T - 1.
    """
    S, T, offset = int(num_steps), int(num_train_timesteps), int(steps_offset)
    if spacing == "linspace":
        return np.linspace(0, T - 1, S).round()[::-1].astype(np.int64)
    if spacing == "leading":
        ts = (np.arange(0, S, dtype=np.int64) * (T // S) + offset)[::-1]
        if ts[0] > T - 1:
            raise InputError(
                f"steps_offset: {offset} puts the last 'leading' index at {ts[0]}, beyond "
                f"the training grid 0..{T - 1} (num_steps={S})"
            )
        return ts.copy()
    return np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1


def spacing_indices(
    spacing: str, num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 0
) -> np.ndarray:
    """Training-grid indices of an S-step sampler, diffusers' ``timestep_spacing``.

    With T = ``num_train_timesteps`` and S = ``num_steps`` (docs/theory.md section 1):

    - ``linspace``: ``round(linspace(0, T-1, S))``
    - ``leading``:  ``arange(0, S) * (T // S) + steps_offset``
    - ``trailing``: ``round(arange(T, 0, -T/S)) - 1``

    ``round`` is numpy's (half to even), as in diffusers. For ``trailing``, numpy's float
    ``arange`` returns S + 1 points for some S (e.g. T = 1000, S = 61), the last one rounding to
    index -1; diffusers passes that extra timestep on, here only the first S points are kept.

    Parameters
    ----------
    spacing : {"linspace", "leading", "trailing"}
    num_steps : int
        S, 1 <= S <= T.
    num_train_timesteps : int
        T >= 1.
    steps_offset : int
        Added to the ``leading`` indices only (diffusers' ``steps_offset``; Stable Diffusion
        uses 1). Ignored by the other spacings, as in diffusers.

    Returns
    -------
    ndarray of shape (num_steps,), int64
        Distinct indices in [0, T-1], ascending: step 1 (least noisy) first, the reverse of
        diffusers' ``scheduler.timesteps``.

    Raises
    ------
    InputError
        Unknown ``spacing``; S < 1 or S > T; ``steps_offset`` < 0 or pushing a ``leading``
        index past T - 1.
    """
    _check_choice(spacing, "spacing", SPACINGS)
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    if isinstance(num_steps, numbers.Integral) and not isinstance(num_steps, bool) \
            and num_steps > T:
        raise InputError(
            f"num_steps (--steps): {num_steps} sampling steps do not fit on a training grid "
            f"of T = {T} timesteps; expected an integer in [1, {T}]"
        )
    S = check_int(num_steps, "num_steps", 1, T)
    offset = check_int(steps_offset, "steps_offset", 0)
    idx = diffusers_timesteps(spacing, S, T, offset)[:S][::-1]  # drop trailing's extra point
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    # Guaranteed for 1 <= S <= T (consecutive points are >= 1 apart); kept as a cheap guard.
    if idx.shape != (S,) or np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] > T - 1:
        raise InputError(
            f"spacing: {spacing!r} gave {idx.size} indices, not {S} distinct ones in 0..{T - 1}"
        )
    return idx


def karras_alphas_cumprod(
    num_steps: int, sigma_min: float = EDM_SIGMA_RANGE[0], sigma_max: float = EDM_SIGMA_RANGE[1],
    rho: float = 7.0,
) -> np.ndarray:
    """EDM (Karras et al. 2022, eq. 5) schedule mapped to VP: ``ab = 1 / (1 + sigma^2)``.

    ``sigma_i = (smax^(1/rho) + i/(S-1) (smin^(1/rho) - smax^(1/rho)))^rho``, i = 0..S-1, as in
    k-diffusion's ``get_sigmas_karras`` (which lists i = 0, sigma_max, first and appends 0).
    Here the order is reversed to step 1 first: ``sigma_1 = sigma_min``, ``sigma_S = sigma_max``.
    With S = 1 the single step is ``sigma_max`` (k-diffusion's ramp ``linspace(0, 1, 1) = [0]``):
    a one-step sampler must start from the noisiest level.

    Parameters
    ----------
    num_steps : int
        S >= 1.
    sigma_min, sigma_max : float
        VE noise levels of the least and the most noisy steps, 0 < sigma_min < sigma_max.
    rho : float
        Curvature, > 0; rho = 1 spaces sigma linearly, large rho approaches log-uniform.

    Returns
    -------
    ndarray of shape (num_steps,), float64
        alphas_cumprod, step 1 (``sigma_min``) first, strictly decreasing in (0, 1).

    Raises
    ------
    InputError
        S < 1, non-positive or non-finite sigmas or rho, or ``sigma_min >= sigma_max``.
    """
    S = check_int(num_steps, "num_steps", 1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    r = _positive_float(rho, "rho")
    return _sigma_ramp(S, smin, smax, lambda x: x ** (1.0 / r), lambda y: y**r)


def _sigma_ramp(S: int, smin: float, smax: float, g, g_inv) -> np.ndarray:
    """alphas_cumprod of levels uniform in ``g(sigma)`` from ``smax`` (i = 0) to ``smin``
    (i = S - 1), as the samplers' libraries list them, reversed to step 1 first:
    ``sigma_i = g_inv(g(smax) + i/(S-1) (g(smin) - g(smax)))`` (S = 1: ``smax``)."""
    t = np.linspace(0.0, 1.0, S)  # i / (S - 1); [0] when S = 1
    gmin, gmax = g(np.float64(smin)), g(np.float64(smax))
    return alphas_cumprod_from_sigmas(g_inv(gmax + t * (gmin - gmax))[::-1])


def _check_sigma_range(sigma_min, sigma_max) -> tuple[float, float]:
    smin = _positive_float(sigma_min, "sigma_min")
    smax = _positive_float(sigma_max, "sigma_max")
    if smin >= smax:
        raise InputError(f"sigma_min: expected sigma_min < sigma_max, got {smin} >= {smax}")
    return smin, smax


def sigma_range_from_bounds(ab_min: float, ab_max: float) -> tuple[float, float]:
    """The sigma range of alphas_cumprod bounds: ``(sigma(ab_max), sigma(ab_min))``.

    ``sigma = sqrt((1 - ab) / ab)`` (docs/theory.md section 1), so the least noisy bound
    ``ab_max`` gives ``sigma_min`` and ``ab_min`` gives ``sigma_max``.

    Parameters
    ----------
    ab_min, ab_max : float
        Bounds on alphas_cumprod, ``0 < ab_min < ab_max < 1`` (the optimiser's
        ``--ab-min``/``--ab-max``).

    Returns
    -------
    (sigma_min, sigma_max) : tuple of two floats, ``0 < sigma_min < sigma_max``

    Raises
    ------
    InputError
        A bound outside (0, 1) (the message names ``ab_min`` or ``ab_max``) or
        ``ab_min >= ab_max``.
    """
    lo = _as_float64(ab_min, "ab_min").reshape(-1)
    hi = _as_float64(ab_max, "ab_max").reshape(-1)
    if lo.size != 1 or hi.size != 1:
        raise InputError("ab_min: expected two numbers, ab_min and ab_max")
    _check_open_interval(lo, "ab_min", 0.0, 1.0)
    _check_open_interval(hi, "ab_max", 0.0, 1.0)
    if not lo[0] < hi[0]:
        raise InputError(f"ab_min: expected ab_min < ab_max, got {lo[0]} >= {hi[0]}")
    return float(_sigmas(hi)[0]), float(_sigmas(lo)[0])


def exponential_alphas_cumprod(
    num_steps: int, sigma_min: float = EDM_SIGMA_RANGE[0], sigma_max: float = EDM_SIGMA_RANGE[1]
) -> np.ndarray:
    """Noise levels uniform in log sigma, mapped to VP: ``ab = 1 / (1 + sigma^2)``.

    ``sigma_i = exp(log smax + i/(S-1) (log smin - log smax))``, i = 0..S-1, as k-diffusion's
    ``get_sigmas_exponential(S, sigma_min, sigma_max)`` (which lists sigma_max first and
    appends 0); equivalently logSNR ``-2 log sigma`` uniform between the end points. Here the
    order is reversed to step 1 (``sigma_min``) first. With S = 1 the single step is
    ``sigma_max`` (k-diffusion's ``linspace`` of one point), as :func:`karras_alphas_cumprod`.

    Parameters
    ----------
    num_steps : int
        S >= 1.
    sigma_min, sigma_max : float
        VE noise levels of the least and the most noisy steps, 0 < sigma_min < sigma_max;
        EDM's 0.002 and 80 by default (:data:`EDM_SIGMA_RANGE`).

    Returns
    -------
    ndarray of shape (num_steps,), float64
        alphas_cumprod, step 1 first, strictly decreasing in (0, 1).

    Raises
    ------
    InputError
        S < 1, non-positive or non-finite sigmas, or ``sigma_min >= sigma_max``.
    """
    S = check_int(num_steps, "num_steps", 1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    return _sigma_ramp(S, smin, smax, np.log, np.exp)


def kl_optimal_alphas_cumprod(
    num_steps: int, sigma_min: float = EDM_SIGMA_RANGE[0], sigma_max: float = EDM_SIGMA_RANGE[1]
) -> np.ndarray:
    """Align Your Steps' KL-optimal schedule for Gaussian data, mapped to VP.

    ``sigma_i = tan(t_i atan(smin) + (1 - t_i) atan(smax))``, ``t_i = i/(S-1)``, i = 0..S-1:
    ``atan(sigma)`` uniform in the step index, the closed-form optimum of Sabour, Fidler,
    Kreis 2024 ("Align Your Steps", the theorem of its Gaussian-data analysis), as ComfyUI's
    ``kl_optimal`` scheduler computes it (there in float32, here in float64; ComfyUI lists
    sigma_max first and appends 0). Here the order is reversed to step 1 (``sigma_min``)
    first. With S = 1 the single step is ``sigma_max`` (ComfyUI divides by S - 1 = 0 and
    gives NaN), as :func:`karras_alphas_cumprod`.

    Parameters
    ----------
    num_steps : int
        S >= 1.
    sigma_min, sigma_max : float
        VE noise levels of the least and the most noisy steps, 0 < sigma_min < sigma_max;
        EDM's 0.002 and 80 by default (:data:`EDM_SIGMA_RANGE`).

    Returns
    -------
    ndarray of shape (num_steps,), float64
        alphas_cumprod, step 1 first, strictly decreasing in (0, 1).

    Raises
    ------
    InputError
        S < 1, non-positive or non-finite sigmas, or ``sigma_min >= sigma_max``.
    """
    S = check_int(num_steps, "num_steps", 1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    return _sigma_ramp(S, smin, smax, np.arctan, np.tan)


def logsnr_alphas_cumprod(
    num_steps: int, family: str = "linear", num_train_timesteps: int = 1000
) -> np.ndarray:
    """Schedule uniform in logSNR between the end points of a training family.

    ``logsnr_s`` is ``linspace(logsnr(ab[0]), logsnr(ab[T-1]), S)`` with
    ``ab = training_alphas_cumprod(family, T)``, and ``ab_s = expit(logsnr_s)``
    (docs/theory.md section 1, "logsnr"). With S = 1 the single step is the noisiest end point
    ``ab[T-1]`` (a one-step sampler starts from noise; same choice as
    :func:`karras_alphas_cumprod`).

    Parameters
    ----------
    num_steps : int
        S >= 1.
    family : {"linear", "scaled_linear", "cosine", "sigmoid"}
    num_train_timesteps : int
        T >= 2.

    Returns
    -------
    ndarray of shape (num_steps,), float64
        alphas_cumprod, step 1 first; ``ab_1 = ab[0]`` and ``ab_S = ab[T-1]`` up to rounding.

    Raises
    ------
    InputError
        S < 1, T < 2 or an unknown family.
    """
    S = check_int(num_steps, "num_steps", 1)
    T = check_int(num_train_timesteps, "num_train_timesteps", 2)
    lam = logsnr_from_alphas_cumprod(training_alphas_cumprod(family, T))
    grid = np.array([lam[-1]]) if S == 1 else np.linspace(lam[0], lam[-1], S)
    return alphas_cumprod_from_logsnr(grid)


def baseline_alphas_cumprod(
    name: str, num_steps: int, spacing: str = "linspace", num_train_timesteps: int = 1000,
    sigma_range=None,
) -> np.ndarray:
    """A baseline S-step sampling schedule, step 1 first.

    - training families (TRAINING_FAMILIES): ``training_alphas_cumprod(name, T)`` at
      ``spacing_indices(spacing, S, T)`` (diffusers' ``set_timesteps``, steps_offset 0);
    - ``karras``: :func:`karras_alphas_cumprod` (rho = 7);
    - ``exponential``: :func:`exponential_alphas_cumprod` (uniform in log sigma);
    - ``kl_optimal``: :func:`kl_optimal_alphas_cumprod` (Align Your Steps' arctan rule);
    - ``logsnr``: :func:`logsnr_alphas_cumprod` between the ``linear`` family's end points.

    The three :data:`SIGMA_BASELINES` run between ``sigma_range`` (EDM's 0.002 and 80 by
    default; :func:`sigma_range_from_bounds` gives the range of optimiser bounds) and use
    neither T nor a spacing. ``karras``, ``exponential``, ``kl_optimal`` and ``logsnr``
    ignore ``spacing`` (it is still checked to be a known one).

    Parameters
    ----------
    name : str
        One of BASELINES.
    num_steps : int
        S, 1 <= S (and S <= T for the training families).
    spacing : {"linspace", "leading", "trailing"}
    num_train_timesteps : int
        T.
    sigma_range : (float, float) or None
        ``(sigma_min, sigma_max)`` of a sigma baseline, ``0 < sigma_min < sigma_max``; None:
        :data:`EDM_SIGMA_RANGE`. Refused for the other baselines, which have their own levels.

    Returns
    -------
    ndarray of shape (num_steps,), float64
        alphas_cumprod, strictly decreasing in (0, 1), step 1 (least noisy) first.

    Raises
    ------
    InputError
        Unknown ``name`` (the message lists BASELINES), unknown spacing, bad S or T, a
        ``sigma_range`` that is not two positive increasing numbers (the message names
        ``sigma_min`` or ``sigma_max``), or one given for a baseline other than
        SIGMA_BASELINES (the message names ``sigma_range``).
    """
    _check_choice(name, "name", BASELINES)
    _check_choice(spacing, "spacing", SPACINGS)
    if name in SIGMA_BASELINES:
        smin, smax = EDM_SIGMA_RANGE if sigma_range is None else _sigma_pair(sigma_range)
        family = {"karras": karras_alphas_cumprod, "exponential": exponential_alphas_cumprod,
                  "kl_optimal": kl_optimal_alphas_cumprod}[name]
        return family(num_steps, smin, smax)
    if sigma_range is not None:
        raise InputError(f"sigma_range: applies to {', '.join(SIGMA_BASELINES)}; the baseline "
                         f"{name!r} has its own levels")
    if name == "logsnr":
        return logsnr_alphas_cumprod(num_steps, "linear", num_train_timesteps)
    idx = spacing_indices(spacing, num_steps, num_train_timesteps)
    return training_alphas_cumprod(name, num_train_timesteps)[idx]


def _sigma_pair(sigma_range) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of a two-element ``sigma_range``, checked."""
    try:
        smin, smax = sigma_range
    except (TypeError, ValueError):
        raise InputError(f"sigma_range: expected two numbers (sigma_min, sigma_max), got "
                         f"{sigma_range!r}") from None
    return _check_sigma_range(smin, smax)


def nearest_training_timesteps_with_error(
    alphas_cumprod, family: str = "linear", num_train_timesteps: int = 1000
) -> tuple[np.ndarray, float]:
    """Nearest training steps in logSNR, and the largest logSNR rounding error.

    Parameters
    ----------
    alphas_cumprod : array-like of shape (n_steps,)
        Values in (0, 1); usually a schedule, step 1 first (monotonicity is not required).
    family : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Training grid, :func:`training_alphas_cumprod`.
    num_train_timesteps : int
        T >= 1.

    Returns
    -------
    timesteps : ndarray of shape (n_steps,), int64
        ``argmin_t |logsnr(ab_train[t]) - logsnr(ab_s)|`` for each step (ties go to the
        smaller, less noisy t). Two steps may share a training step if they are closer than
        the grid.
    max_error : float
        ``max_s |logsnr(ab_train[t_s]) - logsnr(ab_s)|`` in nats (natural log).

    Raises
    ------
    InputError
        If ``alphas_cumprod`` is not 1-D, empty, non-finite or outside (0, 1); bad family / T.
    """
    ab = _as_float64(alphas_cumprod, "alphas_cumprod", one_d=True)
    _check_open_interval(ab, "alphas_cumprod", 0.0, 1.0)
    t, errors = _nearest_timesteps(ab, family, num_train_timesteps)
    return t, float(np.max(errors))


def _nearest_timesteps(ab: np.ndarray, family: str, num_train_timesteps: int):
    """Nearest training steps in logSNR of a validated (S,) ``ab`` and the per-step errors.

    Returns ``(t (S,) int64, |logsnr_train[t] - logsnr(ab)| (S,) float64)``; the family and T
    are checked by :func:`training_alphas_cumprod`.
    """
    target = _logsnr(ab)
    grid = _logsnr(training_alphas_cumprod(family, num_train_timesteps))
    # grid is strictly decreasing in t; search the increasing -grid.
    hi = np.clip(np.searchsorted(-grid, -target), 0, grid.size - 1)
    lo = np.clip(hi - 1, 0, grid.size - 1)
    with np.errstate(invalid="ignore"):  # ab = 0 (pure noise): logSNR -inf
        pick_lo = np.abs(grid[lo] - target) <= np.abs(grid[hi] - target)
    t = np.where(pick_lo & np.isfinite(target), lo, hi).astype(np.int64)  # -inf: the last
    return t, np.abs(grid[t] - target)


def nearest_training_timesteps(
    alphas_cumprod, family: str = "linear", num_train_timesteps: int = 1000
) -> np.ndarray:
    """Index of the training step nearest in logSNR to each step of a schedule.

    See :func:`nearest_training_timesteps_with_error`, which also returns the rounding error.

    Returns
    -------
    ndarray of shape (n_steps,), int64
        Indices in [0, T-1], in the order of the input (step 1 first).
    """
    return nearest_training_timesteps_with_error(alphas_cumprod, family, num_train_timesteps)[0]
