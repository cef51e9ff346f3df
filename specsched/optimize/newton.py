r"""Newton's method in logSNR for deterministic samplers (docs/theory.md section 5, "Newton's
method").

The levels are ``y_s = logsnr_s``, s = 1..S, step 1 the least noisy; the feasible set is
``L_min <= y_S``, ``y_1 <= L_max`` and the margin ``ab_s - ab_{s+1} >= delta`` on
``ab = expit(y)``. The Hessian of a deterministic sampler's loss is a tridiagonal matrix plus
a term of rank K + 1 (:mod:`specsched.theory.curvature`), so the damped Newton system
``(Hess + mu I) p = -grad`` is solved by the Woodbury identity in O(S K^2): a tridiagonal LU
(LAPACK ``dgttrf``), K + 1 solves with it, and one (K + 1) x (K + 1) system.

Each iteration is a Levenberg-Marquardt step on the free levels: the damping ``mu`` grows
when the model's prediction is poor or not a decrease, and shrinks when it is good, so the
steps are gradient-like far from the optimum and Newton's, converging quadratically, near
it. A step is cut short to stay feasible: a bound level is stopped on its bound and held
there (released when its gradient points inside), and no gap ``y_s - y_{s+1}`` shrinks by
more than :data:`GAP_FRACTION` in one step. The run stops when the model predicts a decrease
below ``rtol`` times the value: a converged Newton step gains its square next.

The Hessian may come from fewer directions than the value and gradient (a quadrature of the
spectrum): the fixed point is the same, the convergence linear with the rate of the
Hessian's relative error.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import lapack, lu_factor, lu_solve
from scipy.special import expit

#: Largest fraction of any gap ``y_s - y_{s+1}`` one step may remove.
GAP_FRACTION = 0.9
#: Starting damping, relative to the largest diagonal entry of the Hessian's banded part.
MU_START = 1e-3
#: Relative model decrease below which the run has converged.
NEWTON_RTOL = 1e-13
#: A rejected step predicting a decrease below this (relative) is rounding: the objective's
#: own rounding on CIFAR-10 KL is ~1e-11 of its value (sums of thousands of log terms).
ROUNDING_RTOL = 1e-11
#: A level this close (relative to the bounds' size) to its bound counts as on it.
BOUND_ATOL = 1e-10


class NewtonResult(NamedTuple):
    """Outcome of :func:`newton_logsnr`: the levels, their value, SciPy-style report."""

    y: np.ndarray
    value: float
    success: bool
    message: str
    nit: int
    nfev: int


def _damped_solve(curv, free, mu, rhs):
    """``(Hess_FF + mu I)^{-1} rhs`` on the free levels ``free`` (a contiguous slice) by the
    Woodbury identity; None if a factor is singular."""
    diag = curv.diag[free] + mu
    off = curv.off[free.start:free.stop - 1]
    lo, d, up, up2, piv, info = lapack.dgttrf(off, diag, off)
    if info != 0:
        return None
    last_free = free.stop == curv.grad.size
    J = curv.J[:, free]
    G = np.vstack([J, np.eye(1, J.shape[1], J.shape[1] - 1)]) if last_free else J
    X, info = lapack.dgttrs(lo, d, up, up2, piv, np.column_stack([rhs, G.T]))
    if info != 0:
        return None
    base, X = X[:, 0], X[:, 1:]
    W = G @ X  # (K + 1) x (K + 1)
    t = G @ base
    K = curv.c.size

    def apply_c(a):  # C a for C = [[diag(c), b], [b^T, 0]] (the b row only if S is free)
        out = curv.c[:, None] * a[:K] if a.ndim == 2 else curv.c * a[:K]
        if not last_free:
            return out
        bl = curv.b[:, None] * a[K:K + 1] if a.ndim == 2 else curv.b * a[K]
        return np.concatenate([out + bl, (curv.b @ a[:K])[None]], axis=0)

    small = np.eye(W.shape[0]) + apply_c(W)
    try:
        with np.errstate(all="ignore"):
            lu = lu_factor(small, check_finite=True)
    except (ValueError, np.linalg.LinAlgError):
        return None
    return base - X @ lu_solve(lu, apply_c(t))


def _predicted(curv, free, mu, g):
    """Predicted decrease of the damped Newton step with damping ``mu`` (absolute)."""
    p = _damped_solve(curv, free, mu, -g[free])
    if p is None:
        return np.inf
    step = np.zeros(g.size)
    step[free] = p
    return -(g @ step + 0.5 * step @ curv.matvec(step))


def _step_fraction(y, p, delta):
    """Largest ``tau <= 1`` keeping every gap above (1 - GAP_FRACTION) of itself and the margin
    ``expit(y_s) - expit(y_{s+1}) >= delta``."""
    gaps, dg = -np.diff(y), -np.diff(p)
    closing = dg < 0
    tau = 1.0
    if np.any(closing):
        tau = min(1.0, float(np.min(GAP_FRACTION * gaps[closing] / -dg[closing])))
    while tau > 1e-12:
        ab = expit(y + tau * p)
        if np.all(-np.diff(ab) >= delta):
            return tau
        tau *= 0.5
    return 0.0


def newton_logsnr(fun, hess, y0, L_min, L_max, delta, maxiter=200, rtol=NEWTON_RTOL):
    """Minimise a loss over decreasing logSNR levels by damped Newton steps (module docstring).

    Parameters
    ----------
    fun : callable
        ``y -> (value, grad)``: the objective and its gradient in ``y`` (n_steps,).
    hess : callable
        ``y -> Curvature`` (:func:`specsched.theory.curvature.loss_curvature`): the Hessian
        (its value and gradient are not used).
    y0 : ndarray of shape (n_steps,), float64
        Feasible start (decreasing, within ``[L_min, L_max]``, margin held).
    L_min, L_max : float
        Bounds on the levels (logSNR of ``ab_min`` and ``ab_max``).
    delta : float
        Margin ``ab_s - ab_{s+1} >= delta``.
    maxiter : int
        Newton iterations at most (rejected trial steps count).
    rtol : float
        Stop once a step's predicted decrease is below ``rtol * |value|``.

    Returns
    -------
    NewtonResult
        ``success`` False when ``maxiter`` was reached, or the steps stalled (cut short to
        nothing by the margin: an optimum with merging levels, which the caller hands to
        another method).
    """
    y = np.array(y0, dtype=np.float64)
    S = y.size
    f, g = fun(y)
    nfev = 1
    curv = hess(y)
    scale = max(float(np.max(np.abs(curv.diag))), 1e-300)
    mu = MU_START  # damping relative to scale
    tol = BOUND_ATOL * (1.0 + max(abs(L_min), abs(L_max)))
    stalled = 0
    for nit in range(1, maxiter + 1):
        # a level on its bound is held there while its gradient points outside
        at_top = bool(y[0] >= L_max - tol and g[0] < 0.0)
        at_bottom = bool(S > 1 and y[-1] <= L_min + tol and g[-1] > 0.0)
        free = slice(1 if at_top else 0, S - 1 if at_bottom else S)
        if free.start >= free.stop:
            return NewtonResult(y, f, True, "every level on a bound", nit, nfev)
        p = _damped_solve(curv, free, mu * scale, -g[free])
        step = np.zeros(S)
        if p is not None:
            step[free] = p
        gp = float(g @ step)
        pHp = float(step @ curv.matvec(step))
        pred = -(gp + 0.5 * pHp)
        if p is None or not (np.isfinite(pred) and pred > 0.0 and gp < 0.0):
            if np.isfinite(pred) and abs(pred) <= rtol * abs(f) and mu <= MU_START:
                return NewtonResult(y, f, True, "converged: no decrease left to model", nit,
                                    nfev)
            mu *= 10.0
            continue
        if pred <= rtol * abs(f) and mu <= MU_START:
            return NewtonResult(y, f, True, f"converged: predicted decrease {pred:.1e}",
                                nit, nfev)
        tau = _step_fraction(y, step, delta)
        hit_top = free.start == 0 and step[0] > 0 and y[0] + tau * step[0] >= L_max
        hit_bottom = free.stop == S and step[-1] < 0 and y[-1] + tau * step[-1] <= L_min
        if hit_top:
            tau = min(tau, (L_max - y[0]) / step[0])
        if hit_bottom:
            tau = min(tau, (L_min - y[-1]) / step[-1])
        if tau <= 0.0:
            stalled += 1
            if stalled > 3:
                return NewtonResult(y, f, False, "stalled on the margin", nit, nfev)
            mu *= 10.0
            continue
        y_new = y + tau * step
        if hit_top:
            y_new[0] = min(y_new[0], L_max) if tau < (L_max - y[0]) / step[0] else L_max
        if hit_bottom:
            y_new[-1] = max(y_new[-1], L_min) if tau < (L_min - y[-1]) / step[-1] else L_min
        f_new, g_new = fun(y_new)
        nfev += 1
        pred_tau = -(tau * gp + 0.5 * tau * tau * pHp)
        ratio = (f - f_new) / pred_tau if pred_tau > 0 else -1.0
        if np.isfinite(f_new) and ratio > 1e-4:
            y, f, g = y_new, f_new, g_new
            curv = hess(y)
            if ratio > 0.75 and tau == 1.0:
                mu = max(mu * 0.1, 1e-12)
            elif ratio < 0.25 or tau < 0.5:  # a poor model, or a step too long to fit
                mu *= 4.0
            stalled = stalled + 1 if tau < 1e-6 else 0
            if stalled > 20:
                return NewtonResult(y, f, False, "stalled on the margin", nit, nfev)
        else:
            if pred_tau <= ROUNDING_RTOL * abs(f) and _predicted(
                    curv, free, min(mu, MU_START) * scale, g) <= ROUNDING_RTOL * abs(f):
                return NewtonResult(y, f, True, f"converged: a predicted decrease of "
                                    f"{pred_tau:.1e} is lost in rounding", nit, nfev)
            mu *= 4.0
    return NewtonResult(y, f, False, f"iteration limit ({maxiter}) reached", maxiter, nfev)
