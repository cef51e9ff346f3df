r"""Newton's method in logSNR for deterministic samplers (docs/theory.md section 5, "Newton's
method").

The levels are ``y_s = logsnr_s``, s = 1..S, step 1 the least noisy; the feasible set is
``L_min <= y_S``, ``y_1 <= L_max`` and the margin ``ab_s - ab_{s+1} >= delta`` on
``ab = expit(y)``. The Hessian of a deterministic sampler's loss is a tridiagonal matrix plus
a term of rank K + 1 (:mod:`specsched.theory.curvature`), so the damped Newton system
``(Hess + mu I) p = -grad`` is solved by the Woodbury identity in O(S K^2): a tridiagonal LU
(LAPACK ``dgttrf``), K + 1 solves with it, and one (K + 1) x (K + 1) system.

Each iteration is a Levenberg-Marquardt step: the damping ``mu`` grows when the model's
prediction is poor or not a decrease, and shrinks when it is good, so the steps are
gradient-like far from the optimum and Newton's, converging quadratically, near it.

Active constraints are held exactly (an active-set method):

- a margin that a step reaches *ties* its two levels, ``ab_{s+1} = ab_s - delta``: tied levels
  form a block that moves with its first level ``z``, ``y_{s+1} = phi(y_s)``,
  ``phi(y) = logit(expit(y) - delta)``, so the variables are the blocks' first levels and the
  reduced Hessian ``P^T Hess P + diag(sum g Q)`` (``P = dy/dz``, ``Q = d^2y/dz^2``) keeps the
  tridiagonal plus low-rank form;
- a block whose level reaches ``L_max`` (the first) or ``L_min`` (the last) is held there.

A tie is released when separating its levels lowers the loss (the gradient along the tail of
the block is positive), a bound when the gradient points inside. The run stops when the model
predicts a decrease below ``rtol`` times the value: a converged Newton step gains its square
next.

The Hessian may come from fewer directions than the value and gradient (a quadrature of the
spectrum): the fixed point is the same, the convergence linear with the rate of the
Hessian's relative error.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import lapack, lu_factor, lu_solve
from scipy.special import expit, logit

#: Starting damping, relative to the largest diagonal entry of the Hessian's banded part.
MU_START = 1e-3
#: Relative model decrease below which the run has converged.
NEWTON_RTOL = 1e-13
#: A rejected step predicting a decrease below this (relative) is rounding: the objective's
#: own rounding on CIFAR-10 KL is ~1e-11 of its value (sums of thousands of log terms).
ROUNDING_RTOL = 1e-11
#: A level this close (relative to the bounds' size) to its bound counts as on it.
BOUND_ATOL = 1e-10
#: Up to this many free levels the damped system is solved densely.
DENSE_MAX = 8


class NewtonResult(NamedTuple):
    """Outcome of :func:`newton_logsnr`: the levels, their value, SciPy-style report, and the
    number of tied margins and of levels held on a bound at the end."""

    y: np.ndarray
    value: float
    success: bool
    message: str
    nit: int
    nfev: int
    ties: int = 0


def _phi(y, delta):
    """``(phi, phi', phi'')`` of ``phi(y) = logit(expit(y) - delta)``: the next level of a tie."""
    a = expit(y)
    ap = a - delta
    u, up = a * (1.0 - a), ap * (1.0 - ap)
    d1 = u / up
    d2 = u * ((1.0 - 2.0 * a) * up - (1.0 - 2.0 * ap) * u) / (up * up)
    return logit(ap), d1, d2


class _Blocks:
    """The levels as blocks of tied levels, each moved by its first level (module docstring).

    ``tied[i]``: the margin between levels i and i + 1 is held (``ab_{i+1} = ab_i - delta``).
    """

    def __init__(self, tied, delta):
        self.tied = tied
        self.delta = delta
        self.heads = np.concatenate([[0], np.flatnonzero(~tied) + 1])
        self.ends = np.concatenate([self.heads[1:] - 1, [tied.size]])
        self.of = np.cumsum(np.concatenate([[0], ~tied]))  # block of each level

    @property
    def n(self) -> int:
        return self.heads.size

    def chain(self, y):
        """``y`` with every tied level recomputed from the one before it (in place)."""
        for i in np.flatnonzero(self.tied):
            y[i + 1] = _phi(y[i], self.delta)[0]
        return y

    def derivatives(self, y):
        """``P = dy/dz`` and ``Q = d^2 y/dz^2`` of every level in its block's first level."""
        P, Q = np.ones(y.size), np.zeros(y.size)
        for i in np.flatnonzero(self.tied):
            _, d1, d2 = _phi(y[i], self.delta)
            P[i + 1] = d1 * P[i]
            Q[i + 1] = d2 * P[i] * P[i] + d1 * Q[i]
        return P, Q

    def reduce(self, curv, g, P, Q):
        """Reduced gradient, tridiagonal (diag, off), low-rank rows ``J P`` and the weight of
        ``e_S`` in the last block (the reduced problem's Hessian, module docstring)."""
        if not self.tied.any():  # every level its own block: P = 1, Q = 0
            return g, curv.diag, curv.off, curv.J, 1.0
        gz = np.bincount(self.of, g * P, minlength=self.n)
        diag = np.bincount(self.of, P * P * curv.diag + g * Q, minlength=self.n)
        inner = np.flatnonzero(self.tied)
        if inner.size:
            diag += np.bincount(self.of[inner], 2.0 * P[inner] * P[inner + 1] * curv.off[inner],
                                minlength=self.n)
        gaps = np.flatnonzero(~self.tied)
        off = curv.off[gaps] * P[gaps] * P[gaps + 1]
        Jz = np.add.reduceat(curv.J * P, self.heads, axis=1)
        return gz, diag, off, Jz, P[-1]


def _damped_solve(diag, off, J, c, b, e_last, mu, rhs):
    """``(T + G^T C G + mu I)^{-1} rhs`` by the Woodbury identity: ``T = tridiag(diag, off)``,
    ``G = [J; e_last e_n^T]`` (the row only if ``e_last`` is not None),
    ``C = [[diag(c), b], [b^T, 0]]``; None if a factor is singular."""
    n = diag.size
    G = J if e_last is None else np.vstack([J, e_last * np.eye(1, n, n - 1)])
    if n <= DENSE_MAX:  # a few free levels: the dense system (LAPACK's tridiagonal LU needs n > 2)
        M = np.diag(diag + mu) + np.diag(off, 1) + np.diag(off, -1) + (J.T * c) @ J
        if e_last is not None:
            u = e_last * (J.T @ b)
            M[:, -1] += u
            M[-1, :] += u
        try:
            with np.errstate(all="ignore"):
                out = np.linalg.solve(M, rhs)
        except np.linalg.LinAlgError:
            return None
        return out if np.all(np.isfinite(out)) else None
    lo, d, up, up2, piv, info = lapack.dgttrf(off, diag + mu, off)
    if info != 0:
        return None
    X, info = lapack.dgttrs(lo, d, up, up2, piv, np.column_stack([rhs, G.T]))
    if info != 0:
        return None
    base, X = X[:, 0], X[:, 1:]
    K = c.size

    def apply_c(a):  # C a (the b row and column only with the e_S row)
        out = c[:, None] * a[:K] if a.ndim == 2 else c * a[:K]
        if e_last is None:
            return out
        bl = b[:, None] * a[K:K + 1] if a.ndim == 2 else b * a[K]
        return np.concatenate([out + bl, (b @ a[:K])[None]], axis=0)

    small = np.eye(G.shape[0]) + apply_c(G @ X)
    try:
        with np.errstate(all="ignore"):
            lu = lu_factor(small, check_finite=True)
    except (ValueError, np.linalg.LinAlgError):
        return None
    return base - X @ lu_solve(lu, apply_c(G @ base))


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
        ``success`` False when ``maxiter`` was reached.
    """
    y = np.array(y0, dtype=np.float64)
    S = y.size
    tied = np.zeros(max(S - 1, 0), dtype=bool)
    f, g = fun(y)
    nfev = 1
    curv = hess(y)
    scale = max(float(np.max(np.abs(curv.diag))), 1e-300)
    mu = MU_START  # damping relative to scale
    tol = BOUND_ATOL * (1.0 + max(abs(L_min), abs(L_max)))

    def result(success, message, nit):
        return NewtonResult(y, f, success, message, nit, nfev, int(tied.sum()))

    for nit in range(1, maxiter + 1):
        blocks = _Blocks(tied, delta)
        P, Q = blocks.derivatives(y)
        # release a tie where separating its levels (its tail moving down) lowers the loss
        tail = np.cumsum((g * P)[::-1])[::-1]  # sum_{j >= i} g_j P_j
        ends_after = blocks.ends[blocks.of]  # the last level of each level's block
        after = np.append(tail, 0.0)
        release = np.flatnonzero(tied & ((after[1:-1] - after[ends_after[:-1] + 1]) > 0.0))
        if release.size:
            tied[release] = False
            blocks = _Blocks(tied, delta)
            P, Q = blocks.derivatives(y)
        gz, diag, off, Jz, e_last = blocks.reduce(curv, g, P, Q)
        # a block on a bound is held there while its gradient points outside
        top = bool(y[0] >= L_max - tol and gz[0] < 0.0)
        bottom = bool(y[-1] <= L_min + tol and gz[-1] > 0.0 and not (top and blocks.n == 1))
        lo, hi = int(top), blocks.n - int(bottom)
        if lo >= hi:
            return result(True, "every level held on a bound", nit)
        p = _damped_solve(diag[lo:hi], off[lo:hi - 1], Jz[:, lo:hi], curv.c, curv.b,
                          None if bottom else e_last, mu * scale, -gz[lo:hi])
        pz = np.zeros(blocks.n)
        if p is not None:
            pz[lo:hi] = p
        dy = P * pz[blocks.of]  # the step in y to first order
        gp = float(gz @ pz)
        pHp = float(dy @ curv.matvec(dy) + (g * Q) @ (pz[blocks.of] ** 2))
        pred = -(gp + 0.5 * pHp)
        if p is None or not (np.isfinite(pred) and pred > 0.0 and gp < 0.0):
            if np.isfinite(pred) and abs(pred) <= rtol * abs(f) and mu <= MU_START:
                return result(True, "converged: no decrease left to model", nit)
            mu *= 10.0
            continue
        if pred <= rtol * abs(f) and mu <= MU_START:
            return result(True, f"converged: predicted decrease {pred:.1e}", nit)
        # the step within the bounds (linearised); every untied margin it would cross is tied
        # (a projection onto the margins, as in projected Newton), then the step is checked
        tau = 1.0
        hit_top = dy[0] > 0 and y[0] + dy[0] >= L_max
        hit_bottom = dy[-1] < 0 and y[-1] + dy[-1] <= L_min
        if hit_top:
            tau = (L_max - y[0]) / dy[0]
        if hit_bottom:
            tau = min(tau, (L_min - y[-1]) / dy[-1])
        gaps = np.flatnonzero(~tied)
        t_gap = np.full(gaps.size, np.inf)
        if gaps.size:
            closing = dy[gaps] - dy[gaps + 1]
            room = (y[gaps] - y[gaps + 1]) - (y[gaps] - _phi(y[gaps], delta)[0])
            with np.errstate(divide="ignore", invalid="ignore"):
                t_gap = np.where(closing < 0.0, np.maximum(room, 0.0) / -closing, np.inf)
        y_new, new_tied = None, tied
        while tau >= 1e-14:
            new_tied = tied.copy()
            new_tied[gaps[t_gap < tau]] = True
            y_new = y.copy()
            y_new[blocks.heads] += tau * pz
            if hit_top and tau * dy[0] >= L_max - y[0] - tol:
                y_new[0] = L_max
            _Blocks(new_tied, delta).chain(y_new)
            if y_new[-1] < L_min:  # back along the last block so its last level is on L_min
                y_new[-1] = L_min
                for i in range(S - 2, -1, -1):
                    if not new_tied[i]:
                        break
                    y_new[i] = logit(expit(y_new[i + 1]) + delta)
            with np.errstate(invalid="ignore"):
                ab = expit(y_new)
                ok = (np.all(np.isfinite(y_new)) and y_new[0] <= L_max
                      and y_new[-1] >= L_min
                      and np.all((-np.diff(ab) >= delta * (1 - 1e-9)) | new_tied))
            if ok:
                break
            tau *= 0.5
        if tau < 1e-14:
            mu *= 10.0
            continue
        blocking = int(new_tied.sum() - tied.sum())
        f_new, g_new = fun(y_new)
        nfev += 1
        pred_tau = -(tau * gp + 0.5 * tau * tau * pHp)
        ratio = (f - f_new) / pred_tau if pred_tau > 0 else -1.0
        if np.isfinite(f_new) and (ratio > 1e-4 or (blocking > 0 and f_new <= f)):
            y, f, g, tied = y_new, f_new, g_new, new_tied
            curv = hess(y)
            if ratio > 0.75 and tau == 1.0:
                mu = max(mu * 0.1, 1e-12)
            elif ratio > 0.5:
                mu = max(mu * 0.5, 1e-12)
            elif ratio < 0.25:
                mu *= 4.0
        else:
            if pred_tau <= ROUNDING_RTOL * abs(f) and pred <= ROUNDING_RTOL * abs(f):
                return result(True, f"converged: a predicted decrease of {pred_tau:.1e} is "
                              "lost in rounding", nit)
            mu *= 4.0
    return result(False, f"iteration limit ({maxiter}) reached", maxiter)
