r"""Closed-form DDIM / DDPM samplers as per-direction linear systems (VP).

Notation (THEORY.md sections 1-3). A schedule is ``alphas_cumprod = (ab_1, ..., ab_S)``,
``1 > ab_1 > ... > ab_S > 0``, step 1 the least noisy, with ``ab_0 = 1`` implied (the last
reverse step lands on clean data). One reverse step ``s -> s-1`` uses ``a = ab_s`` and
``ap = ab_{s-1}``. With the Wiener denoiser (``specsched.theory.wiener``) substituted, the
DDIM-eta update of Song et al. (2021, eq. 12)

    x_{s-1} = sqrt(ap) x0_hat + sqrt(1 - ap - sig_s^2) eps_hat + sig_s z,
    sig_s^2 = eta^2 (1 - ap)/(1 - a) (1 - a/ap)

becomes, in each eigen-direction k with data variance ``lambda_k``,
``x_{s-1} = A_s x_s + B_s m + sig_s z`` where

    A_s = (sqrt(ap a) lambda + c_s (1 - a)) / (a lambda + 1 - a),
    c_s = sqrt((1 - ap - sig_s^2) / (1 - a)).

eta = 0 is DDIM, eta = 1 is DDPM ancestral sampling with the posterior variance
beta-tilde (Ho et al. 2020). Run from ``x_S ~ N(0, 1)`` (``init="normal"``) or from the true
marginal ``N(sqrt(ab_S) m, ab_S lambda + 1 - ab_S)`` (``init="marginal"``), the generated
law per direction is Gaussian with

    H        = prod_s A_s                               (the transfer function)
    var_gen  = H^2 var_S + sum_s sig_s^2 (prod_{j<s} A_j)^2
    mean_gen = m + (H mu_S - sqrt(ab_S) H m)            (the Wiener denoiser maps means exactly)

so ``mean_gen - m = -sqrt(ab_S) H m`` for the normal start and 0 for the marginal start.
Everything is O(S d) time; no d x d matrix is formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError

#: Discrete VP samplers of this module and their default eta.
SAMPLERS = {"ddim": 0.0, "ddpm": 1.0}
#: Start distributions of the reverse process.
INITS = ("normal", "marginal")


def resolve_eta(sampler: str, eta: float | None = None) -> float:
    """Return the stochasticity eta of a named sampler.

    ``"ddim"`` defaults to eta = 0 and accepts any ``eta`` in [0, 1] (DDIM-eta);
    ``"ddpm"`` is eta = 1 (posterior variance beta-tilde).

    Raises
    ------
    InputError
        Unknown sampler name, eta outside [0, 1], or an eta other than 1 with ``"ddpm"``.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {sorted(SAMPLERS)}, got {sampler!r}")
    if eta is None:
        return SAMPLERS[sampler]
    eta = float(eta)
    if not (0.0 <= eta <= 1.0) or not np.isfinite(eta):
        raise InputError(f"eta: expected a number in [0, 1], got {eta!r}")
    if sampler == "ddpm" and eta != 1.0:
        raise InputError(
            f"eta: sampler 'ddpm' is eta = 1; use --sampler ddim --eta {eta} for DDIM-eta"
        )
    return eta


def step_coefficients(eigenvalues, a: float, ap: float, eta: float):
    """Per-direction gain ``A_s`` and noise variance ``sig_s^2`` of one DDIM-eta step.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    a, ap : float
        ``ab_s`` and ``ab_{s-1}`` with ``0 < a < ap <= 1``.
    eta : float
        Stochasticity in [0, 1].

    Returns
    -------
    A : ndarray of shape (n_directions,), float64
        Gain on ``x_s`` (module docstring; THEORY.md section 3).
    sig2 : float
        Variance of the injected noise ``sig_s^2``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    A, sig2 = _all_step_coefficients(lam, np.array([a], float), eta, ap=np.array([ap], float))
    return A[0], float(sig2[0])


def _all_step_coefficients(lam, ab, eta: float, derivatives: bool = False, ap=None):
    """Gains ``A_s`` and noise variances ``sig_s^2`` of every step at once.

    Parameters
    ----------
    lam : ndarray of shape (n_directions,)
    ab : ndarray of shape (n_steps,), step 1 first (``ab_0 = 1`` implied)
    eta : float
    ap : ndarray of shape (n_steps,), optional
        ``ab_{s-1}`` of each step; by default ``(1, ab_1, ..., ab_{S-1})``.
    derivatives : bool
        Also return the partial derivatives of ``A`` and ``sig2`` in ``a = ab_s`` and
        ``ap = ab_{s-1}`` (derived by hand from the module docstring's expressions; checked
        against finite differences in tests/test_theory.py).

    Returns
    -------
    A : ndarray of shape (n_steps, n_directions); sig2 : ndarray of shape (n_steps,)
    and, with ``derivatives``, dA_da, dA_dap (n_steps, n_directions) and
    dsig2_da, dsig2_dap (n_steps,).
    """
    a = ab
    if ap is None:
        ap = np.concatenate([[1.0], ab[:-1]])
    w = 1.0 - a
    u = 1.0 - ap
    e2 = eta**2
    # Product forms, exact zeros on the last step (ap = 1) without cancellation:
    # sig2 = eta^2 (1 - ap)(ap - a) / (ap (1 - a)),  c^2 = (1 - ap - sig2) / (1 - a)
    n2 = u * (ap - a) / ap
    sig2 = e2 * n2 / w
    c2 = u / w * (1.0 - e2 * (ap - a) / (ap * w))
    pos = c2 > 0.0
    c = np.sqrt(np.where(pos, c2, 0.0))
    lam_ = lam[None, :]
    num = np.sqrt(a * ap)[:, None] * lam_ + (c * w)[:, None]
    den = a[:, None] * lam_ + w[:, None]
    A = num / den
    if not derivatives:
        return A, sig2
    dsig2_da = e2 * ((1.0 - 1.0 / ap) * w + n2) / w**2
    dsig2_dap = e2 * (a / ap**2 - 1.0) / w
    dc2_da = (-dsig2_da * w + (u - sig2)) / w**2
    dc2_dap = (-1.0 - dsig2_dap) / w
    safe_c = np.where(pos, c, 1.0)
    dc_da = np.where(pos, dc2_da / (2.0 * safe_c), 0.0)  # c vanishes identically when ap = 1
    dc_dap = np.where(pos, dc2_dap / (2.0 * safe_c), 0.0)
    dnum_da = (0.5 * np.sqrt(ap / a))[:, None] * lam_ + (dc_da * w - c)[:, None]
    dnum_dap = (0.5 * np.sqrt(a / ap))[:, None] * lam_ + (dc_dap * w)[:, None]
    dA_da = (dnum_da * den - num * (lam_ - 1.0)) / den**2
    dA_dap = dnum_dap / den
    return A, sig2, dA_da, dA_dap, dsig2_da, dsig2_dap


@dataclass(frozen=True)
class GeneratedGaussian:
    """The Gaussian law of a sampler's output in each eigen-direction.

    Attributes
    ----------
    transfer : ndarray of shape (n_directions,), float64
        Transfer function ``H(lambda) = prod_s A_s``.
    variance : ndarray of shape (n_directions,), float64
        Variance of the generated samples ``var_gen``.
    mean_gain : ndarray of shape (n_directions,), float64
        ``mean_gen - m = mean_gain * m``: ``-sqrt(ab_S) H`` for the normal start, 0 for the
        marginal start.
    """

    transfer: np.ndarray
    variance: np.ndarray
    mean_gain: np.ndarray

    def mean_error(self, mean) -> np.ndarray:
        """``mean_gen - m`` for the data mean ``m`` (ndarray of shape (n_directions,))."""
        return self.mean_gain * np.asarray(mean, dtype=np.float64)


def _initial_variance(lam, ab_S: float, init: str):
    if init == "normal":
        return np.ones_like(lam)
    if init == "marginal":
        return ab_S * lam + (1.0 - ab_S)
    raise InputError(f"init: expected one of {INITS}, got {init!r}")


def ddim_closed_form(eigenvalues, alphas_cumprod, eta: float = 0.0, init: str = "normal"):
    """Generated Gaussian of the DDIM-eta sampler with the exact Wiener denoiser.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``ab_1 > ... > ab_S`` in (0, 1), step 1 (least noisy) first; ``ab_0 = 1`` implied.
    eta : float
        0 for DDIM, 1 for DDPM (beta-tilde), anything in between for DDIM-eta.
    init : {"normal", "marginal"}
        Start ``x_S ~ N(0, 1)`` or the true marginal at ``ab_S``.

    Returns
    -------
    GeneratedGaussian

    Notes
    -----
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12, with the Wiener
    denoiser; Benita, Elad, Keshet (2025) for the linear-system view; THEORY.md section 3.
    Inputs are trusted (validate at the boundary, e.g. with ``validate_alphas_cumprod``).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    A, sig2 = _all_step_coefficients(lam, ab, eta)
    v = _initial_variance(lam, ab[-1], init)
    for s in range(ab.shape[0] - 1, -1, -1):  # reverse time: step S first
        v = A[s] * A[s] * v + sig2[s]
    H = np.prod(A, axis=0)
    gain = -np.sqrt(ab[-1]) * H if init == "normal" else np.zeros_like(lam)
    return GeneratedGaussian(transfer=H, variance=v, mean_gain=gain)


def ddim_closed_form_vjp(eigenvalues, alphas_cumprod, eta, init, loss_partials):
    """A loss of the generated Gaussian and its gradient with respect to ``alphas_cumprod``.

    One forward pass stores the per-step gains; one backward pass (reverse-mode, the adjoint
    of ``v_{s-1} = A_s^2 v_s + sig_s^2``) accumulates ``dL/d ab_s``. Every ``A_s`` depends
    on ``(ab_s, ab_{s-1})`` only, so the cost is O(S d) (THEORY.md section 5).

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,)
    alphas_cumprod : ndarray of shape (n_steps,), step 1 first
    eta : float
    init : {"normal", "marginal"}
    loss_partials : callable
        ``loss_partials(gen) -> (L, dL/d var_gen, dL/d mean_gain)`` for the forward result
        ``gen`` (a :class:`GeneratedGaussian`); the partials are ndarrays of shape
        (n_directions,) (``dL/d mean_gain`` is ignored for ``init="marginal"``).

    Returns
    -------
    value : float
        ``L`` at the forward result.
    gen : GeneratedGaussian
        The forward result (as :func:`ddim_closed_form`).
    grad : ndarray of shape (n_steps,), float64
        ``dL / d alphas_cumprod``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    S, d = ab.shape[0], lam.shape[0]
    A, sig2, dA_da, dA_dap, dq_da, dq_dap = _all_step_coefficients(lam, ab, eta, True)
    v_in = np.empty((S, d))  # v_in[s]: the variance entering step s + 1 (array index s)
    v = _initial_variance(lam, ab[-1], init)
    for s in range(S - 1, -1, -1):
        v_in[s] = v
        v = A[s] * A[s] * v + sig2[s]
    # prefix[s] = prod_{j<s} A_j (steps run after step s+1 in array order), suffix for H.
    prefix = np.cumprod(np.vstack([np.ones((1, d)), A[:-1]]), axis=0)
    H = prefix[-1] * A[-1]
    normal = init == "normal"
    gain = -np.sqrt(ab[-1]) * H if normal else np.zeros_like(lam)
    out = GeneratedGaussian(transfer=H, variance=v, mean_gain=gain)
    value, grad_variance, grad_mean_gain = loss_partials(out)

    grad = np.zeros(S)
    # adjoint of v after step s (i.e. of v_{s-1}): w_{s-1} = dL/dv_0 * prod_{j<s} A_j^2
    w_out = grad_variance * prefix * prefix  # (S, d), row s: dL/d v_{s-1}
    dL_dA = w_out * 2.0 * A * v_in
    dL_dq = w_out.sum(axis=1)
    if normal:
        # mean_gain = -sqrt(ab_S) prod_j A_j; d/dA_s = -sqrt(ab_S) prod_{j != s} A_j
        suffix = np.vstack([np.cumprod(A[::-1], axis=0)[::-1][1:], np.ones((1, d))])
        dL_dA += grad_mean_gain * (-np.sqrt(ab[-1])) * prefix * suffix
        grad[-1] += np.sum(grad_mean_gain * (-0.5 / np.sqrt(ab[-1])) * H)
    else:
        # v_S = ab_S lambda + 1 - ab_S
        w_start = grad_variance * prefix[-1] ** 2 * A[-1] ** 2
        grad[-1] += np.sum(w_start * (lam - 1.0))
    grad += np.sum(dL_dA * dA_da, axis=1) + dL_dq * dq_da
    grad[:-1] += np.sum(dL_dA[1:] * dA_dap[1:], axis=1) + dL_dq[1:] * dq_dap[1:]
    return value, out, grad
