r"""Continuous-time VP SDE solvers on Gaussian data, in closed form per eigen-direction.

Pierret & Galerne (ICML 2025), "Diffusion models for Gaussian distributions: exact solutions
and Wasserstein errors"; docs/theory.md section 3. Forward SDE on ``[0, T]``, ``T = 1``:

    dx = -beta(t) x dt + sqrt(2 beta(t)) dw,      beta(t) = bmin + t (bmax - bmin),

with ``B(t) = int_0^t beta = bmin t + (bmax - bmin) t^2 / 2``. The marginal at time t is
``N(e^{-B} m, lam_t)``, ``lam_t = e^{-2B} lambda + 1 - e^{-2B}``, so the exact score is
``-(x - e^{-B(t)} m) / lam_t``. The solvers run backwards on the uniform grid of forward
times ``t_k = T - (T - eps) k / K``, k = 0..K (K solver steps; the paper's "NFE = N" is
K = N - 1), from ``x_T ~ N(0, 1)`` (``init="normal"``) or the true ``N(e^{-B(T)} m, lam_T)``
(``init="marginal"``). With the exact score substituted each step from t to ``t' = t - dt``
is affine, ``x' = F x + G m + noise of variance q``; per direction:

- ``pg-euler`` (probability-flow ODE): ``F = 1 + dt c(t)``, ``c(t) = beta(t)(1 - 1/lam_t)``,
  ``G = dt k(t)``, ``k(t) = beta(t) e^{-B(t)} / lam_t``, ``q = 0``;
- ``pg-heun``: the trapezoidal corrector on the same ODE,
  ``F = 1 + dt/2 c(t) + dt/2 c(t') (1 + dt c(t))``, ``G = dt/2 (k(t) + k(t') + dt c(t') k(t))``;
- ``pg-em`` (Euler-Maruyama, reverse SDE): ``F = 1 + dt beta (1 - 2/lam_t)``,
  ``G = 2 dt beta e^{-B}/lam_t``, ``q = 2 dt beta``;
- ``pg-ei`` (exponential integrator): ``g1 = e^{B(t) - B(t')} - 1``,
  ``g2 = (e^{2(B(t) - B(t'))} - 1)/2``, ``F = 1 + g1 (1 - 2/lam_t)``, ``G = 2 g1 e^{-B}/lam_t``,
  ``q = 2 g2``;
- ``pg-ddpm`` (their "DDPM" scheme): ``bd = 2 dt beta(t)``,
  ``F = (1 - bd/lam_t)/sqrt(1 - bd)``, ``G = bd e^{-B}/(lam_t sqrt(1 - bd))``, ``q = bd``.

The variance recursion ``v' = F^2 v + q`` is docs/theory.md section 3's; the mean recursion
``M' = F M + G`` (generated mean ``M m``) extends it to data with a mean.
``pg-heun`` evaluates the score at ``t' = 0`` on the last step when ``eps = 0``; in directions
with ``lambda = 0`` that score is singular, and those directions take the ``pg-euler`` step
instead.

The ``pg-`` prefix keeps these apart from k-diffusion's samplers of the same family
(``euler``, ``heun``: steps in sigma on a schedule's noise levels), which are other solvers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.theory.losses import (
    KL_FLOOR,
    LossReport,
    w2_terms,
)
from specsched.theory.samplers import GeneratedGaussian, check_init
from specsched.theory.wiener import wiener_gain_coefficients

#: Continuous-time solvers of this module.
SDE_SOLVERS = ("pg-euler", "pg-heun", "pg-em", "pg-ei", "pg-ddpm")
#: Former names of solvers that no other sampler takes over, mapped to the current ones
#: (``euler`` and ``heun`` go to k-diffusion's samplers, so they are not listed).
RENAMED_SOLVERS = {"em": "pg-em", "ei": "pg-ei"}
#: Defaults of docs/theory.md section 3: Song et al.'s 0.1 and 20 halved for this SDE's convention.
BETA_MIN, BETA_MAX = 0.05, 10.0


@dataclass(frozen=True)
class SDETrajectory:
    """Closed-form result of a continuous-time solver.

    Attributes
    ----------
    times : ndarray of shape (K + 1,), float64
        Forward times of the grid, ``T`` first, ``eps`` last.
    w2 : ndarray of shape (K + 1,), float64
        W2 between the generated law and the true marginal at each grid time.
    report : LossReport
        W2 and KLs of the final law against the data ``N(m, lambda)``.
    generated : GeneratedGaussian
        The final law (``transfer = prod F``, ``mean_gain = M - 1``).
    """

    times: np.ndarray
    w2: np.ndarray
    report: LossReport
    generated: GeneratedGaussian


def _B(t, bmin, bmax):
    return bmin * t + 0.5 * (bmax - bmin) * t * t


def _marginal(lam, t, bmin, bmax):
    """``(e^{-B(t)}, lam_t)``: the marginal ``N(e^{-B} m, lam_t)`` at time t is the VP state at
    ``ab = e^{-2B(t)}``, mean scale ``s`` and variance ``gamma lam + delta`` (docs/theory.md
    section 2, :func:`specsched.theory.wiener.wiener_gain_coefficients`)."""
    s, gamma, delta = wiener_gain_coefficients(np.exp(-2.0 * _B(t, bmin, bmax)))
    return s, gamma * lam + delta


def _step(solver, lam, t, dt, bmin, bmax):
    """``(F, G, q)`` of one solver step from t to t - dt (module docstring)."""
    tp = t - dt
    beta = bmin + t * (bmax - bmin)
    eB, lam_t = _marginal(lam, t, bmin, bmax)
    if solver == "pg-euler":
        return 1.0 + dt * beta * (1.0 - 1.0 / lam_t), dt * beta * eB / lam_t, 0.0
    if solver == "pg-heun":
        c, k = beta * (1.0 - 1.0 / lam_t), beta * eB / lam_t
        beta_p = bmin + tp * (bmax - bmin)
        eBp, lam_p = _marginal(lam, tp, bmin, bmax)
        with np.errstate(divide="ignore", invalid="ignore"):
            cp, kp = beta_p * (1.0 - 1.0 / lam_p), beta_p * eBp / lam_p
            F = 1.0 + 0.5 * dt * c + 0.5 * dt * cp * (1.0 + dt * c)
            G = 0.5 * dt * (k + kp + dt * cp * k)
        singular = lam_p <= 0.0
        if np.any(singular):  # score undefined at t' = 0 where lambda = 0: pg-euler step
            F = np.where(singular, 1.0 + dt * c, F)
            G = np.where(singular, dt * k, G)
        return F, G, 0.0
    if solver == "pg-em":
        return (1.0 + dt * beta * (1.0 - 2.0 / lam_t), 2.0 * dt * beta * eB / lam_t,
                2.0 * dt * beta)
    if solver == "pg-ei":
        dB = _B(t, bmin, bmax) - _B(tp, bmin, bmax)
        g1, g2 = np.expm1(dB), 0.5 * np.expm1(2.0 * dB)
        return 1.0 + g1 * (1.0 - 2.0 / lam_t), 2.0 * g1 * eB / lam_t, 2.0 * g2
    if solver == "pg-ddpm":
        bd = 2.0 * dt * beta
        if bd >= 1.0:
            raise InputError(
                f"steps: pg-ddpm needs 2 dt beta(t) < 1, got {bd:.3g} at t = {t:.3g}; "
                "use more steps or a smaller --beta-max"
            )
        r = 1.0 / np.sqrt(1.0 - bd)
        return (1.0 - bd / lam_t) * r, bd * eB / lam_t * r, bd
    raise _unknown_solver(solver)


def renamed_solver_message(name: str) -> str | None:
    """What to tell a caller who passes a former solver name, or None for any other name.

    Parameters
    ----------
    name : str
        A solver name as given.

    Returns
    -------
    str or None
        ``"the continuous-time solver 'em' is now called 'pg-em'"`` for a key of
        :data:`RENAMED_SOLVERS`, else None.
    """
    new = RENAMED_SOLVERS.get(name)
    return None if new is None else f"the continuous-time solver {name!r} is now called {new!r}"


def _unknown_solver(solver) -> InputError:
    renamed = renamed_solver_message(solver) if isinstance(solver, str) else None
    if renamed is not None:
        return InputError(f"sampler: {renamed}")
    return InputError(f"sampler: expected one of {SDE_SOLVERS}, got {solver!r}")


def sde_closed_form(
    eigenvalues,
    mean,
    num_steps: int,
    solver: str = "pg-euler",
    *,
    beta_min: float = BETA_MIN,
    beta_max: float = BETA_MAX,
    t_eps: float = 0.0,
    T: float = 1.0,
    init: str = "normal",
    kl_floor: float = KL_FLOOR,
) -> SDETrajectory:
    """Generated law and W2 trajectory of a continuous-time VP solver with the exact score.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis (None: zero).
    num_steps : int
        K >= 1 solver steps.
    solver : {"pg-euler", "pg-heun", "pg-em", "pg-ei", "pg-ddpm"}
    beta_min, beta_max : float
        Linear ``beta(t)`` end points, ``0 < beta_min <= beta_max``.
    t_eps : float
        Truncation time ``eps`` in [0, T): the solver stops at forward time eps.
    T : float
        Final forward time.
    init : {"normal", "marginal"}
    kl_floor : float
        Relative eigenvalue floor of the KLs.

    Returns
    -------
    SDETrajectory

    Raises
    ------
    InputError
        Unknown solver (a former name such as ``em`` is told its new one) or init, K < 1,
        bad beta range or eps, or a pg-ddpm step with ``2 dt beta >= 1``.
    """
    if solver not in SDE_SOLVERS:
        raise _unknown_solver(solver)
    check_init(init)
    if int(num_steps) != num_steps or num_steps < 1:
        raise InputError(f"steps: expected an integer >= 1, got {num_steps!r}")
    if not (0.0 < beta_min <= beta_max and np.isfinite(beta_max)):
        raise InputError(
            f"beta-min/beta-max: expected 0 < beta_min <= beta_max, got {beta_min}, {beta_max}"
        )
    if not (0.0 <= t_eps < T):
        raise InputError(f"t-eps: expected 0 <= eps < T = {T}, got {t_eps}")
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    K = int(num_steps)
    times = T - (T - t_eps) * np.arange(K + 1) / K
    dt = (T - t_eps) / K

    def marginal(t):
        return _marginal(lam, t, beta_min, beta_max)

    e_T, lam_T = marginal(T)
    if init == "normal":
        v, M = np.ones_like(lam), np.zeros_like(lam)
    else:
        v, M = lam_T.copy(), np.full_like(lam, e_T)
    H = np.ones_like(lam)
    w2 = np.empty(K + 1)
    w2[0] = np.sqrt(np.sum(w2_terms(lam_T, v, (M - e_T) * m)))
    for k in range(K):
        F, G, q = _step(solver, lam, times[k], dt, beta_min, beta_max)
        v = F * F * v + q
        M = F * M + G
        H = H * F
        e_k, lam_k = marginal(times[k + 1])
        w2[k + 1] = np.sqrt(np.sum(w2_terms(lam_k, v, (M - e_k) * m)))
    gen = GeneratedGaussian(transfer=H, variance=v, mean_gain=M - 1.0)
    report = LossReport.from_moments(lam, v, gen.mean_error(m), H, kl_floor)
    return SDETrajectory(times=times, w2=w2, report=report, generated=gen)
