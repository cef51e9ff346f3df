r"""Second derivatives of the loss of a deterministic sampler: a banded plus low-rank Hessian.

Notation (docs/theory.md sections 3-5, "Newton's method"). A schedule is given by its
logSNR levels ``y_s = log(ab_s / (1 - ab_s))``, s = 1..S, step 1 the least noisy. A sampler
whose steps inject no noise (``q_s = 0`` for every step: ``ddim`` with eta = 0, ``ddim-ve``,
``fm-euler``, and the product samplers of :mod:`specsched.theory.flow`, ``fm-heun``) has, per
eigen-direction k with data variance ``lambda_k``, the generated law

    var_gen_k = H_k^2 v_S,      mean_gen_k - m_k = -c_S H_k m_k   (normal start; 0 marginal),

with the transfer function ``H_k = prod_s A_s(lambda_k)`` and each gain a function of
``(y_s, y_{s-1})`` only: ``A_s = (alpha_s lambda + beta_s) / (gamma_s lambda + delta_s)``
for a discrete sampler (:mod:`specsched.theory.samplers`), the step run on the deviation 1
for a product sampler (``y_0`` is the clean end, ``ab_0 = 1``; ``y_S = -inf``, pure noise,
is a level held fixed). So, with

    z_k = log H_k + (1/2) log v_S = sum_s log A_s(lambda_k) + (1/2) log v_S,
    rho_k = log(1 + R_k),  R_k = c_S^2 m_k^2 / v_S    (0 for the marginal start),

every loss of section 4 is ``sum_k w_k phi(z_k, rho_k)`` (``w_k``: quadrature weights), with
``E = exp(2 z) = var_gen``:

- W2^2:          ``phi = E (1 + R) - 2 sqrt(lambda E) + lambda``;
- KL(gen||data): ``phi = (E (1 + R) / lambda - 1 - log E + log lambda) / 2``;
- KL(data||gen): ``phi = (lambda / E - 1 + log E - log lambda + R) / 2``.

``z_k`` is a sum of terms each in two neighbouring levels and ``rho_k`` depends on ``y_S``
alone, so the Hessian in ``y`` is

    sum_k w_k [phi_zz J_k J_k^T + phi_z T_k + phi_zr rho_k' (J_k e_S^T + e_S J_k^T)]
      + e_S e_S^T sum_k w_k (phi_rr rho_k'^2 + phi_r rho_k''),

``J_k = grad z_k`` (a row of the K x S matrix J) and ``T_k = hess z_k`` tridiagonal: a
tridiagonal matrix plus a rank-(K + 1) term, which a Newton step solves in O(S K^2)
(Woodbury) instead of O(S^3). The per-step scalars and their first derivatives in ``y`` are
taken by complex step (Squire & Trapp 1998) from the sampler's own update, their second
derivatives by central differences of those (relative error ~1e-9: the Hessian only steers
Newton's steps; value and gradient are exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.theory.flow import PRODUCT_SAMPLERS, ProductSampler, step_gain
from specsched.theory.losses import KL_FLOOR, LOSSES, kl_mask
from specsched.theory.samplers import _scalars, _start, check_init, get_sampler, resolve_eta

__all__ = ["Curvature", "is_deterministic", "loss_curvature"]

_H = 1e-30  # complex-step size
_E = 1e-4  # central-difference step in logSNR for the second derivatives


def _expit(y):
    """``1 / (1 + exp(-y))``: complex-safe (scipy's expit is real only)."""
    return 1.0 / (1.0 + np.exp(-y))


@dataclass(frozen=True)
class Curvature:
    """Value, gradient and Hessian of a loss in the logSNR levels ``y`` (module docstring).

    The Hessian is ``tridiag(diag, off) + G^T C G`` with ``G = [J; e_S^T]`` of shape
    (K + 1, S) and ``C = [[diag(c), b], [b^T, 0]]``.

    Attributes
    ----------
    value : float
        The objective ``sum_k w_k phi_k``: W2^2 (squared data units) or KL (nats).
    grad : ndarray of shape (n_steps,), float64
        ``d value / d y`` (y = logSNR, step 1 first).
    diag : ndarray of shape (n_steps,), float64
        Diagonal of the tridiagonal part.
    off : ndarray of shape (n_steps - 1,), float64
        Its first off-diagonal (entry s couples steps s and s + 1).
    J : ndarray of shape (n_counted, n_steps), float64
        ``d z_k / d y`` of each counted direction.
    c : ndarray of shape (n_counted,), float64
        ``w_k phi_zz``.
    b : ndarray of shape (n_counted,), float64
        ``w_k phi_zr rho_k'``: coupling of ``z_k`` with ``y_S``.
    """

    value: float
    grad: np.ndarray
    diag: np.ndarray
    off: np.ndarray
    J: np.ndarray
    c: np.ndarray
    b: np.ndarray

    def matvec(self, v) -> np.ndarray:
        """The Hessian times ``v`` (n_steps,): O(S K)."""
        v = np.asarray(v, dtype=np.float64)
        out = self.diag * v
        out[:-1] += self.off * v[1:]
        out[1:] += self.off * v[:-1]
        Jv = self.J @ v
        out += self.J.T @ (self.c * Jv + self.b * v[-1])
        out[-1] += self.b @ Jv
        return out

    def scaled(self, factor: float) -> Curvature:
        """The same quantities for the objective times ``factor``."""
        return Curvature(self.value * factor, self.grad * factor, self.diag * factor,
                         self.off * factor, self.J, self.c * factor, self.b * factor)

    def without_last(self) -> Curvature:
        """The same quantities in the levels but the last (held fixed: a schedule ending at
        zero SNR, ``y_S = -inf``); its coupling ``b`` to the others goes with it."""
        return Curvature(self.value, self.grad[:-1], self.diag[:-1], self.off[:-1],
                         self.J[:, :-1], self.c, np.zeros_like(self.b))

    def dense(self) -> np.ndarray:
        """The Hessian as an (n_steps, n_steps) array (for tests and small S)."""
        return np.stack([self.matvec(e) for e in np.eye(self.grad.size)], axis=1)


def is_deterministic(sampler: str, alphas_cumprod, eta=None) -> bool:
    """Whether a discrete sampler injects no noise on this schedule (``q_s = 0`` every step):
    its generated law is then a product of per-step gains (module docstring).

    Parameters
    ----------
    sampler : str
        Any sampler name: the product samplers of :mod:`specsched.theory.flow` are; k-diffusion's
        samplers (not of :data:`specsched.theory.SAMPLERS`) are never taken as deterministic
        here.
    alphas_cumprod : ndarray of shape (n_steps,), step 1 first
    eta : float or None
        As :func:`specsched.theory.resolve_eta`.
    """
    if sampler in PRODUCT_SAMPLERS:
        return True
    try:
        spec = get_sampler(sampler)
    except InputError:
        return False
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    ap = np.concatenate([[1.0], ab[:-1]])
    q = _scalars(spec, ab, ap, resolve_eta(sampler, eta))[4]
    return bool(np.all(q == 0.0))


#: The complex levels of :func:`_log_gain_derivatives`: ``(d y_s, d y_{s-1})`` of each
#: evaluation (complex step ``i h``, central differences ``+-e``).
_SHIFTS = ((1j * _H, 0), (0, 1j * _H), (_E + 1j * _H, 0), (-_E + 1j * _H, 0), (1j * _H, _E),
           (1j * _H, -_E), (0, _E + 1j * _H), (0, -_E + 1j * _H))


def _level(y, shift):
    """``expit(y + shift)`` (complex); ``y = -inf`` (zero SNR, a fixed level) is exactly 0 and
    ``y = +inf`` (the clean end) exactly 1, neither perturbed."""
    with np.errstate(all="ignore"):
        out = _expit(y + shift)
    return np.where(np.isneginf(y), 0.0, np.where(np.isposinf(y), 1.0, out))


def _log_gain_derivatives(spec, lam, y, eta):
    """``log A_s`` and its first and second derivatives in ``(y_s, y_{s-1})``: six (K, S)
    arrays ``(log A, a, p, aa, ap, pp)`` ("a" the step's own level, "p" the previous; zero
    for the clean end ``ab_0 = 1`` and for a fixed level at zero SNR).

    A discrete sampler's gain is a quotient ``N / D`` of two functions linear in lambda whose
    coefficients (its scalars, O(S)) are differentiated, so only real (K, S) arithmetic
    follows; a product sampler's gain is differentiated directly on (K, S) complex arrays."""
    yp = np.concatenate([[np.inf], y[:-1]])
    lk = lam[:, None]
    a = np.stack([_level(y, da) for da, _ in _SHIFTS])
    ap = np.stack([_level(yp, dp) for _, dp in _SHIFTS])
    with np.errstate(all="ignore"):
        if isinstance(spec, ProductSampler):
            A = [step_gain(spec, lk, a[k], ap[k]) for k in range(len(_SHIFTS))]
            d = [x.imag / _H for x in A]  # d/dy_s at the base and at +-e, d/dy_{s-1} alike
            base = A[0].real
            if np.any(~np.isfinite(base) | (base < 0.0)):
                raise InputError(f"sampler: {spec.name!r} has a gain A_s < 0 (or not finite) "
                                 "on this schedule; the product form needs positive gains")
            la, lp = d[0] / base, d[1] / base
            laa = (d[2] - d[3]) / (2 * _E) / base - la * la
            lap = (d[4] - d[5]) / (2 * _E) / base - la * lp
            lpp = (d[6] - d[7]) / (2 * _E) / base - lp * lp
            return np.log(base), la, lp, laa, lap, lpp
        z = _scalars(spec, a.ravel(), ap.ravel(), eta)[:4].reshape(4, len(_SHIFTS), -1)
        dz = z.imag / _H
        dd = {"": z[:, 0].real, "a": dz[:, 0], "p": dz[:, 1],
              "aa": (dz[:, 2] - dz[:, 3]) / (2 * _E), "ap": (dz[:, 4] - dz[:, 5]) / (2 * _E),
              "pp": (dz[:, 6] - dz[:, 7]) / (2 * _E)}

        def form(key):  # numerator and denominator of A_s, or their derivatives, (K, S)
            al, be, ga, de = dd[key]
            return al * lk + be, ga * lk + de

        N, D = form("")
        if np.any(~(N * D > 0.0)):
            raise InputError(f"sampler: {spec.name!r} has a gain A_s <= 0 (or not finite) on "
                             "this schedule; the product form needs positive gains")
        Na, Da = form("a")
        Np, Dp = form("p")
        na, da, np_, dp = Na / N, Da / D, Np / N, Dp / D
        la, lp = na - da, np_ - dp
        Naa, Daa = form("aa")
        Nap, Dap = form("ap")
        Npp, Dpp = form("pp")
        laa = Naa / N - na * na - Daa / D + da * da
        lap = Nap / N - na * np_ - Dap / D + da * dp
        lpp = Npp / N - np_ * np_ - Dpp / D + dp * dp
    return np.log(N / D), la, lp, laa, lap, lpp


def _start_derivatives(spec, lam, m, y_S, init):
    """``(1/2) log v_S`` and ``rho = log(1 + c_S^2 m^2 / v_S)`` per direction with their first
    and second derivatives in ``y_S`` (zero for a level fixed at zero SNR): two tuples of
    three (n,) arrays."""
    e = _E

    def parts(shift):
        v, c = _start(spec, lam.astype(complex), _level(np.array(y_S), shift), init)
        v = v * np.ones_like(lam)
        r = np.log(1.0 + c * c * m * m / v) if init == "normal" else 0.0 * v
        return 0.5 * np.log(v), r

    (hv0, r0), (hv1, r1), (hv2, r2) = (parts(d) for d in (1j * _H, e + 1j * _H,
                                                          -e + 1j * _H))
    half_logv = (hv0.real, hv0.imag / _H, (hv1.imag - hv2.imag) / (2 * e * _H))
    rho = (r0.real, r0.imag / _H, (r1.imag - r2.imag) / (2 * e * _H))
    return half_logv, rho


def _phi(loss, lam, z, rho):
    """``phi`` and its partial derivatives ``(phi, phi_z, phi_zz, phi_r, phi_rr, phi_zr)`` of
    one loss per direction (module docstring)."""
    if loss == "w2":
        E1 = np.exp(2.0 * z + rho)  # var_gen (1 + R)
        sq = np.sqrt(lam) * np.exp(z)  # sqrt(lambda var_gen)
        return E1 - 2.0 * sq + lam, 2.0 * E1 - 2.0 * sq, 4.0 * E1 - 2.0 * sq, E1, E1, 2.0 * E1
    if loss == "kl":
        E1 = np.exp(2.0 * z + rho) / lam
        phi = 0.5 * (E1 - 1.0 - 2.0 * z + np.log(lam))
        return phi, E1 - 1.0, 2.0 * E1, 0.5 * E1, 0.5 * E1, E1
    u = lam * np.exp(-2.0 * z)  # kl-data-gen: lambda / var_gen
    half = 0.5 * np.exp(rho)  # (1 + R) / 2
    phi = 0.5 * (u - 1.0 + 2.0 * z - np.log(lam)) + half - 0.5
    return phi, 1.0 - u, 2.0 * u, half, half, np.zeros_like(u)


def loss_curvature(eigenvalues, mean, logsnr, *, loss="w2", sampler="ddim", eta=None,
                   init="normal", kl_floor=KL_FLOOR, weights=None, keep=None) -> Curvature:
    """Value, gradient and structured Hessian of a loss in the logSNR levels of a schedule.

    For deterministic discrete samplers (:func:`is_deterministic`); docs/theory.md section 5,
    "Newton's method", and the module docstring.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``; directions with ``lambda_k = 0`` add a constant 0
        (their transfer function is 0) and are left out of ``J``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis (None: centred).
    logsnr : ndarray of shape (n_steps,), float64
        ``y_s = log(ab_s / (1 - ab_s))``, decreasing, step 1 (least noisy) first.
    loss : {"w2", "kl", "kl-data-gen"}
        W2^2, KL(gen || data) or KL(data || gen) (section 4).
    sampler : str
        A sampler of :data:`specsched.theory.SAMPLERS` that is deterministic with this eta.
    eta : float or None
    init : {"normal", "marginal"}
    kl_floor : float
        Relative eigenvalue floor of the KLs (:func:`specsched.theory.losses.kl_mask`).
    weights : ndarray of shape (n_directions,), optional
        Quadrature weights (1 by default).
    keep : ndarray of bool, shape (n_directions,), optional
        Directions the KLs count (default: above the floor).

    Returns
    -------
    Curvature

    Raises
    ------
    InputError
        Unknown loss or sampler, or a sampler that injects noise (its law is not a product of
        gains), or a gain that is not positive.
    """
    if loss not in LOSSES:
        raise InputError(f"loss: expected one of {LOSSES}, got {loss!r}")
    check_init(init)
    y = np.asarray(logsnr, dtype=np.float64)
    if sampler in PRODUCT_SAMPLERS:
        spec, eta = PRODUCT_SAMPLERS[sampler], None
    else:
        spec = get_sampler(sampler)
        eta = resolve_eta(sampler, eta)
        if not is_deterministic(sampler, _expit(y), eta):
            raise InputError(f"sampler: {sampler!r} injects noise"
                             f"{f' (eta = {eta:g})' if eta else ''}: its generated law is not "
                             "a product of gains; loss_curvature takes ddim with eta = 0, "
                             f"ddim-ve, fm-euler or {', '.join(PRODUCT_SAMPLERS)}")
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    w = np.ones_like(lam) if weights is None else np.asarray(weights, dtype=np.float64)
    counted = lam > 0.0
    if loss != "w2":
        counted &= kl_mask(lam, kl_floor) if keep is None else np.asarray(keep, dtype=bool)
    lam, m, w = lam[counted], m[counted], w[counted]
    logA, la, lp, laa, lap, lpp = _log_gain_derivatives(spec, lam, y, eta)
    # a product sampler's last gain, onto t = 0, is the Wiener gain g itself, formed as
    # 1 - (1 - g): in a direction with lambda ~ 1e-14 it rounds to 0, H = 0 (the output is the
    # mean). Such a direction adds its H = 0 limit, lambda to W2^2 (its KL is infinite), and
    # no gradient.
    dead = ~np.all(np.isfinite(logA), axis=1)
    extra = 0.0
    if np.any(dead):
        if loss != "w2":
            raise InputError(f"sampler: {sampler!r} sends {int(dead.sum())} direction(s) with "
                             f"eigenvalues down to {float(lam[dead].min()):.3g} to their mean "
                             "(H = 0 in float64), where KL is infinite; use W2, or a "
                             "kl_floor above those eigenvalues", param="sampler")
        extra = float(w[dead] @ lam[dead])
        keep_ = ~dead
        lam, m, w = lam[keep_], m[keep_], w[keep_]
        logA, la, lp, laa, lap, lpp = (x[keep_] for x in (logA, la, lp, laa, lap, lpp))
    (hv, hv1, hv2), (rho, r1, r2) = _start_derivatives(spec, lam, m, y[-1], init)
    z = logA.sum(axis=1) + hv
    J = la.copy()
    J[:, :-1] += lp[:, 1:]
    J[:, -1] += hv1
    phi, phi_z, phi_zz, phi_r, phi_rr, phi_zr = _phi(loss, lam, z, rho)
    wz = w * phi_z
    grad = wz @ J
    grad[-1] += w @ (phi_r * r1)
    diag = wz @ laa
    diag[:-1] += wz @ lpp[:, 1:]
    diag[-1] += wz @ hv2 + w @ (phi_rr * r1 * r1 + phi_r * r2)
    off = wz @ lap[:, 1:]
    return Curvature(value=float(w @ phi) + extra, grad=grad, diag=diag, off=off, J=J,
                     c=w * phi_zz, b=w * phi_zr * r1)
