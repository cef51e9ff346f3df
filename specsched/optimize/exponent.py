"""The best coloured forward noise ``power:GAMMA`` for a spectrum and a step count.

docs/theory.md section 9. The noise ``c_k`` proportional to ``lambda_k ** GAMMA`` interpolates
white noise (GAMMA = 0) and EqualSNR (GAMMA = 1); for every GAMMA the schedule is optimised
(:func:`specsched.optimize.optimize_schedule` with ``noise="power:GAMMA"``), so the loss of the
best schedule is a function of GAMMA alone, searched here: a grid over [0, 2], then a bounded
1-D search (Brent's method, :func:`scipy.optimize.minimize_scalar`) between the best grid
point's neighbours, each optimisation warm-started from the previous optimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from specsched.errors import InputError
from specsched.optimize.problem import OptimizeResult, optimize_schedule
from specsched.theory.noise import GAMMA_MAX, GAMMA_MIN

__all__ = ["GAMMA_GRID", "ExponentResult", "optimize_power_exponent", "power_label"]

#: The grid of the first pass.
GAMMA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def power_label(gamma: float) -> str:
    """The noise-spectrum name of ``power:GAMMA`` (0 is ``white``, 1 ``equal-snr``)."""
    return "white" if gamma == 0 else "equal-snr" if gamma == 1 else f"power:{float(gamma)!r}"


@dataclass
class ExponentResult:
    """The best exponent and its optimised schedule.

    Attributes
    ----------
    gamma : float
        The best GAMMA found, in [0, 2].
    result : OptimizeResult
        The optimised schedule under ``power:gamma``.
    points : dict[float, float]
        Every GAMMA tried and the optimised value of the loss there (W2 for ``loss="w2"``,
        as :attr:`OptimizeResult.fun` reports it).
    optima : dict[float, OptimizeResult]
        The optimisation at every GAMMA tried.
    """

    gamma: float
    result: OptimizeResult
    points: dict = field(default_factory=dict)
    optima: dict = field(default_factory=dict)


def optimize_power_exponent(eigenvalues, mean, num_steps: int, *, grid=GAMMA_GRID,
                            xatol: float = 5e-3, maxiter: int = 10, x0=None,
                            **optimize_kwargs) -> ExponentResult:
    """Optimise GAMMA of ``power:GAMMA`` together with the schedule (module docstring).

    Parameters
    ----------
    eigenvalues : ndarray of shape (d,), float64
        Data variances, largest first.
    mean : ndarray of shape (d,) or None
        Data mean in the eigenbasis.
    num_steps : int
        S.
    grid : sequence of float
        First-pass exponents, increasing, within [0, 2].
    xatol, maxiter : float, int
        Tolerance on GAMMA and iteration limit of the bounded search. When the best grid
        point's loss is already below 1e-7 of the largest (a zero: EqualSNR on centred data,
        docs/theory.md section 9) no search is run.
    x0 : ndarray of shape (S,), optional
        Warm start of the first optimisation.
    **optimize_kwargs
        Passed to :func:`optimize_schedule` (``loss``, ``sampler``, ``eta``, bounds, ...);
        not ``noise``.

    Returns
    -------
    ExponentResult

    Raises
    ------
    InputError
        A grid outside [0, 2] or not increasing, a ``noise`` argument, or what
        :func:`optimize_schedule` raises.
    """
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size < 2 or np.any(np.diff(g) <= 0) or g[0] < GAMMA_MIN \
            or g[-1] > GAMMA_MAX:
        raise InputError(f"grid: expected at least 2 increasing exponents in "
                         f"[{GAMMA_MIN:g}, {GAMMA_MAX:g}], got {list(grid)!r}", param="grid")
    if "noise" in optimize_kwargs:
        raise InputError("noise: the exponent search sets the noise spectrum itself",
                         param="noise")
    out = ExponentResult(gamma=np.nan, result=None)

    def run(gamma, start):
        gamma = float(gamma)
        if gamma not in out.optima:
            kw = dict(optimize_kwargs)
            if start is not None:
                kw.setdefault("starts", ("linear",))
            out.optima[gamma] = optimize_schedule(eigenvalues, mean, num_steps,
                                                  noise=power_label(gamma), x0=start, **kw)
            out.points[gamma] = out.optima[gamma].fun
        return out.optima[gamma]

    start = x0
    for gamma in g:
        start = run(gamma, start).x
    i = int(np.argmin([out.points[float(x)] for x in g]))
    best_grid = float(g[i])
    if out.points[best_grid] > 1e-7 * max(out.points.values()):
        lo, hi = float(g[max(i - 1, 0)]), float(g[min(i + 1, g.size - 1)])
        start = out.optima[best_grid].x
        minimize_scalar(lambda x: run(x, start).fun, bounds=(lo, hi), method="bounded",
                        options={"xatol": xatol, "maxiter": maxiter})
    out.gamma = min(out.points, key=out.points.get)
    out.result = out.optima[out.gamma]
    return out
