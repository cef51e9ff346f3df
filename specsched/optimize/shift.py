"""The best SD3-style shift of a flow-matching schedule: a one-dimensional search.

docs/theory.md section 10. The uniform grid ``t = 1/S, ..., 1`` through SD3's shift
``t' = s t / (1 + (s - 1) t)`` is one schedule per ``s > 0``; the shift a user can set in
``FlowMatchEulerDiscreteScheduler(shift=s)``. For a spectrum, sampler and loss this finds the
``s`` with the lowest loss: a grid of :data:`GRID_POINTS` values of ``log s`` over
``[log SHIFT_MIN, log SHIFT_MAX]``, then bounded Brent (:func:`scipy.optimize.minimize_scalar`)
between the grid neighbours of the best point. Beside the fully optimised schedule
(:func:`specsched.optimize.optimize_schedule`) it tells how much of the gain one scalar
already buys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize as sopt

from specsched.errors import InputError
from specsched.schedules.flow import fm_baseline_alphas_cumprod
from specsched.theory import LOSSES, loss_summary, loss_value
from specsched.theory.losses import KL_FLOOR
from specsched.theory.samplers import sampler_param

__all__ = ["GRID_POINTS", "SHIFT_MAX", "SHIFT_MIN", "ShiftResult", "optimal_shift"]

#: Range of the search: shifts from 1/100 to 1000 (logSNR moved by +9.2 to -13.8).
SHIFT_MIN, SHIFT_MAX = 1e-2, 1e3
#: Points of the coarse grid in log s.
GRID_POINTS = 41
#: Brent's tolerance on log s.
XATOL = 1e-7


@dataclass(frozen=True)
class ShiftResult:
    """The best SD3 shift for one step count.

    Attributes
    ----------
    shift : float
        ``s`` minimising the loss over [:data:`SHIFT_MIN`, :data:`SHIFT_MAX`].
    fun : float
        The loss there (W2 in data units for ``loss="w2"``, nats for the KLs).
    w2, kl, kl_data_gen : float
        All three losses of that schedule.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        The schedule (step 1 first, ``ab_S = 0``).
    on_bound : bool
        The best shift is at an end of the range (the true optimum may lie beyond).
    nfev : int
        Loss evaluations.
    grid : ndarray of shape (GRID_POINTS, 2)
        ``(s, loss)`` on the coarse grid, for plots.
    """

    shift: float
    fun: float
    w2: float
    kl: float
    kl_data_gen: float
    alphas_cumprod: np.ndarray
    on_bound: bool
    nfev: int
    grid: np.ndarray


def optimal_shift(eigenvalues, mean, num_steps: int, *, sampler: str = "fm-euler",
                  loss: str = "w2", init: str = "normal", kl_floor: float = KL_FLOOR,
                  shift_range=(SHIFT_MIN, SHIFT_MAX)) -> ShiftResult:
    """The SD3 shift ``s`` of the uniform flow-matching grid with the lowest loss.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis.
    num_steps : int
        S >= 1 (S = 1 is the single step from pure noise: every shift is the same schedule,
        and 1.0 is reported).
    sampler : str
        A sampler that can start at ``t = 1``: ``fm-euler``, ``fm-heun``, ``ddim`` (the same
        as ``fm-euler`` from pure noise) or another VP discrete sampler.
    loss : {"w2", "kl", "kl-data-gen"}
    init : {"normal", "marginal"}
    kl_floor : float
    shift_range : (float, float)
        ``0 < s_min < s_max``.

    Returns
    -------
    ShiftResult

    Raises
    ------
    InputError
        A bad loss, step count or range (named), or a sampler that cannot start from pure
        noise (a VE or k-diffusion sampler: sigma = inf).
    """
    if loss not in LOSSES:
        raise InputError(f"loss: expected one of {LOSSES}, got {loss!r}", param="loss")
    try:
        lo, hi = (float(v) for v in shift_range)
    except (TypeError, ValueError):
        raise InputError(f"shift_range: expected two numbers, got {shift_range!r}",
                         param="shift_range") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise InputError(f"shift_range: expected 0 < s_min < s_max, got {shift_range!r}",
                         param="shift_range")
    if sampler_param(sampler) == "ve":
        raise InputError(f"sampler: {sampler!r} runs on sigmas and cannot start from pure noise "
                         "(t = 1, sigma = inf); use fm-euler, fm-heun or a VP sampler",
                         param="sampler")
    lam = np.asarray(eigenvalues, dtype=np.float64)
    kw = dict(sampler=sampler, init=init, kl_floor=kl_floor)
    calls = [0]
    if num_steps == 1:  # one step from pure noise: every shift is the same schedule
        ab = np.zeros(1)
        with np.errstate(all="ignore"):
            report = loss_summary(lam, mean, ab, **kw)
        return ShiftResult(shift=1.0, fun=report[loss.replace("-", "_")], w2=report["w2"],
                           kl=report["kl"], kl_data_gen=report["kl_data_gen"],
                           alphas_cumprod=ab, on_bound=False, nfev=0, grid=np.zeros((0, 2)))

    def schedule(log_s):
        return fm_baseline_alphas_cumprod("sd3-shift", num_steps, shift=math.exp(log_s))

    def f(log_s):
        calls[0] += 1
        with np.errstate(all="ignore"):
            return float(loss_value(lam, mean, schedule(log_s), loss=loss, **kw))

    grid = np.linspace(math.log(lo), math.log(hi), GRID_POINTS)
    values = np.array([f(g) for g in grid])
    k = int(np.nanargmin(values))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = sopt.minimize_scalar(f, bounds=(a, b), method="bounded",
                               options={"xatol": XATOL})
    best = res.x if res.fun <= values[k] else grid[k]
    ab = schedule(best)
    with np.errstate(all="ignore"):
        report = loss_summary(lam, mean, ab, **kw)
    on_bound = bool(abs(best - grid[0]) < 1e-3 or abs(best - grid[-1]) < 1e-3)
    fun = report[loss.replace("-", "_")]
    return ShiftResult(shift=float(math.exp(best)), fun=float(fun), w2=report["w2"],
                       kl=report["kl"], kl_data_gen=report["kl_data_gen"], alphas_cumprod=ab,
                       on_bound=on_bound, nfev=calls[0],
                       grid=np.column_stack([np.exp(grid), values]))
