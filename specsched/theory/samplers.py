r"""Closed-form discrete samplers as per-direction linear systems (VP and VE).

Notation (docs/theory.md sections 1-3). A schedule is ``alphas_cumprod = (ab_1, ..., ab_S)``,
``1 > ab_1 > ... > ab_S > 0``, step 1 the least noisy, with ``ab_0 = 1`` implied (the last
reverse step lands on clean data). One reverse step ``s -> s-1`` uses ``a = ab_s`` and
``ap = ab_{s-1}``; VE samplers use the same points as noise levels
``sigma_s = sqrt((1 - ab_s) / ab_s)`` (``sigma_0 = 0``). With the Wiener denoiser
(:mod:`specsched.theory.wiener`) substituted, every step of every sampler here is, in each
eigen-direction k with data variance ``lambda_k``,

    x_{s-1} = A_s x_s + B_s m + noise of variance q_s,

with (docs/theory.md section 3):

- ``ddim`` / ``ddpm`` (DDIM-eta, Song et al. 2021 eq. 12; eta = 0 DDIM, eta = 1 DDPM with
  the posterior variance beta-tilde): ``sig_s^2 = eta^2 (1 - ap)/(1 - a) (1 - a/ap)``,
  ``c_s = sqrt((1 - ap - sig_s^2) / (1 - a))``,
  ``A_s = (sqrt(ap a) lambda + c_s (1 - a)) / (a lambda + 1 - a)``, ``q_s = sig_s^2``;
- ``ddpm-large`` (Ho et al. 2020, eq. 7 posterior-mean form with sigma^2 = beta_s; no noise
  on the final step): ``A_s = sqrt(ap) beta_s/(1 - a) g_s + sqrt(a/ap) (1 - ap)/(1 - a)``,
  ``g_s = sqrt(a) lambda / (a lambda + 1 - a)``, ``q_s = beta_s`` (0 for s = 1);
- ``ddim-ve`` (DDIM in VE form): ``r = sigma_{s-1}/sigma_s``,
  ``A_s = r + (1 - r) lambda / (lambda + sigma_s^2)``, ``q_s = 0``;
- ``ddpm-ve`` (SMLD ancestral sampling, Song & Ermon 2019): ``r = sigma_{s-1}^2/sigma_s^2``,
  same ``A_s``, ``q_s = sigma_{s-1}^2 (sigma_s^2 - sigma_{s-1}^2) / sigma_s^2``.

Started from ``x_S ~ N(0, v_S)`` (``init="normal"``: ``v_S = 1`` for VP,
``sigma_S^2`` for VE) or from the true marginal (``init="marginal"``:
``N(sqrt(ab_S) m, ab_S lambda + 1 - ab_S)`` for VP, ``N(m, lambda + sigma_S^2)`` for VE),
the generated law per direction is Gaussian with

    H        = prod_s A_s                               (the transfer function)
    var_gen  = H^2 v_S + sum_s q_s (prod_{j<s} A_j)^2
    mean_gen - m = -c_S H m                             (normal start; 0 for the marginal)

where ``c_S = sqrt(ab_S)`` (VP) or 1 (VE) is the true mean's scale at step S: each step maps
the exact mean of its level to the exact mean of the next (the Wiener denoiser is unbiased),
so only the start's missing mean survives, damped by H. Everything is O(S d) time; no d x d
matrix is formed. The gradient in ``alphas_cumprod`` is a reverse-mode pass over the same
recursion (:func:`closed_form_vjp`); the partial derivatives of ``A_s`` and ``q_s`` are
written out for DDIM-eta and taken by complex-step differentiation (exact to rounding,
Squire & Trapp 1998) for the other samplers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError

#: Start distributions of the reverse process.
INITS = ("normal", "marginal")


def _ddim_eta_mobius(a, ap, eta):
    """DDIM-eta (Song et al. 2021 eq. 12) with the VP Wiener denoiser; complex-safe.

    ``sig2 = eta^2 (1 - ap)(ap - a) / (ap (1 - a))`` and
    ``c^2 = (1 - ap - sig2)/(1 - a) = (1 - ap)((1 - eta^2) ap + a (eta^2 - ap))/(ap (1 - a)^2)``
    in product forms: exact zeros on the last step (ap = 1), no cancellation at eta = 1.
    """
    w, u, e2 = 1.0 - a, 1.0 - ap, eta**2
    sig2 = e2 * u * (ap - a) / (ap * w)
    c2 = u * ((1.0 - e2) * ap + a * (e2 - ap)) / (ap * w * w)
    c = np.sqrt(np.where(np.real(c2) > 0.0, c2, 0.0))
    return np.sqrt(a * ap), c * w, a, w, sig2


def _ddpm_large_mobius(a, ap, eta):
    """DDPM with sigma^2 = beta (Ho et al. 2020 eq. 7 posterior-mean form); complex-safe.

    ``A = sqrt(ap) beta/(1 - a) g + sqrt(a/ap) (1 - ap)/(1 - a)``,
    ``g = sqrt(a) lambda/(a lambda + 1 - a)``; no noise on the final step.
    """
    w, u = 1.0 - a, 1.0 - ap
    beta = (ap - a) / ap
    r = np.sqrt(a / ap)
    alpha = np.sqrt(ap * a) * beta / w + r * u * a / w
    q = np.where(np.real(ap) == 1.0, 0.0, beta)
    return alpha, r * u, a, w, q


def _ve_mobius(a, ap, ancestral):
    sig2 = (1.0 - a) / a
    sig2_prev = (1.0 - ap) / ap  # 0 on the final step (ap = 1)
    r = sig2_prev / sig2 if ancestral else np.sqrt(sig2_prev / sig2)
    q = sig2_prev * (sig2 - sig2_prev) / sig2 if ancestral else 0.0 * a
    one = np.ones_like(a)
    return one, r * sig2, one, sig2, q


def _ddim_ve_mobius(a, ap, eta):
    """DDIM in VE form, ``A = r + (1 - r) lambda/(lambda + sigma_s^2)``, r = sigma ratio."""
    return _ve_mobius(a, ap, ancestral=False)


def _ddpm_ve_mobius(a, ap, eta):
    """SMLD ancestral sampling (Song & Ermon 2019): r = squared sigma ratio, noise q."""
    return _ve_mobius(a, ap, ancestral=True)


@dataclass(frozen=True)
class Sampler:
    """A discrete sampler's per-step coefficients in the closed form.

    Every sampler here has gains of Mobius form in the eigenvalue,
    ``A_s(lambda) = (alpha_s lambda + beta_s) / (gamma_s lambda + delta_s)``, and a noise
    variance ``q_s`` that does not depend on lambda; the five per-step scalars depend on
    ``(a, ap) = (ab_s, ab_{s-1})`` only.

    Attributes
    ----------
    name : str
        Command-line name.
    param : {"vp", "ve"}
        Parametrisation of its states: VP ``x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps`` or
        VE ``x_t = x_0 + sigma eps`` with ``sigma = sqrt((1 - ab) / ab)``.
    mobius : callable
        ``(a (S,), ap (S,), eta) -> (alpha, beta, gamma, delta, q)``, each of shape (S,),
        written with complex-safe operations (derivatives are taken by complex step).
    default_eta : float or None
        eta of the sampler; None when eta does not apply.
    eta_free : bool
        Whether any eta in [0, 1] is accepted (DDIM-eta).
    description : str
    """

    name: str
    param: str
    mobius: Callable
    default_eta: float | None
    eta_free: bool
    description: str


SAMPLERS = {
    "ddim": Sampler("ddim", "vp", _ddim_eta_mobius, 0.0, True,
                    "DDIM-eta (eta = 0 by default), VP"),
    "ddpm": Sampler("ddpm", "vp", _ddim_eta_mobius, 1.0, False,
                    "DDPM ancestral, posterior variance beta-tilde (eta = 1), VP"),
    "ddpm-large": Sampler("ddpm-large", "vp", _ddpm_large_mobius, None, False,
                          "DDPM ancestral, variance beta ('fixed_large'), VP"),
    "ddim-ve": Sampler("ddim-ve", "ve", _ddim_ve_mobius, None, False,
                       "DDIM in VE form, start N(0, sigma_S^2)"),
    "ddpm-ve": Sampler("ddpm-ve", "ve", _ddpm_ve_mobius, None, False,
                       "SMLD ancestral sampling (VE), start N(0, sigma_S^2)"),
}


def get_sampler(name: str) -> Sampler:
    """The :class:`Sampler` called ``name``; InputError listing the names otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise InputError(f"sampler: expected one of {list(SAMPLERS)}, got {name!r}") from None


def resolve_eta(sampler: str, eta: float | None = None) -> float | None:
    """Return the stochasticity eta of a named sampler.

    ``"ddim"`` defaults to eta = 0 and accepts any ``eta`` in [0, 1] (DDIM-eta);
    ``"ddpm"`` is eta = 1 (posterior variance beta-tilde); the other samplers have no eta
    (returns None).

    Raises
    ------
    InputError
        Unknown sampler name, eta outside [0, 1], an eta other than 1 with ``"ddpm"``, or an
        eta with a sampler that has none.
    """
    spec = get_sampler(sampler)
    if eta is None:
        return spec.default_eta
    eta = float(eta)
    if not np.isfinite(eta) or not (0.0 <= eta <= 1.0):
        raise InputError(f"eta: expected a number in [0, 1], got {eta!r}")
    if spec.default_eta is None:
        raise InputError(f"eta: sampler {sampler!r} has no eta; eta applies to ddim (DDIM-eta)")
    if not spec.eta_free and eta != spec.default_eta:
        raise InputError(
            f"eta: sampler {sampler!r} is eta = {spec.default_eta:g}; "
            f"use --sampler ddim --eta {eta:g} for DDIM-eta"
        )
    return eta


def step_coefficients(eigenvalues, a: float, ap: float, eta: float = 0.0, sampler="ddim"):
    """Per-direction gain ``A_s`` and noise variance ``q_s`` of one reverse step.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    a, ap : float
        ``ab_s`` and ``ab_{s-1}`` with ``0 < a < ap <= 1`` (``ap = 1``: the final step).
    eta : float
        Stochasticity in [0, 1] (DDIM-eta only).
    sampler : str
        A name of :data:`SAMPLERS`.

    Returns
    -------
    A : ndarray of shape (n_directions,), float64
        Gain on ``x_s`` (module docstring; docs/theory.md section 3).
    q : ndarray of shape (n_directions,), float64
        Variance of the injected noise.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    spec = get_sampler(sampler)
    al, be, ga, de, q = (np.asarray(x, dtype=np.float64)
                         for x in spec.mobius(np.array([a], float), np.array([ap], float), eta))
    A = (al * lam + be) / (ga * lam + de)
    return A, np.broadcast_to(q, A.shape).copy()


def _all_step_coefficients(lam, ab, eta: float, ap=None):
    """DDIM-eta gains ``A`` (S, d) and noise variances ``sig2`` (S, 1) of every step.

    ``ap`` (S,) gives ``ab_{s-1}`` of each step, by default ``(1, ab_1, ..., ab_{S-1})``;
    passing it explicitly allows unchained (denoise, landing) level pairs
    (:mod:`specsched.theory.unchained`).
    """
    a = np.asarray(ab, dtype=np.float64)
    ap = np.concatenate([[1.0], a[:-1]]) if ap is None else np.asarray(ap, dtype=np.float64)
    al, be, ga, de, q = _ddim_eta_mobius(a, ap, eta)
    lam_ = np.asarray(lam, dtype=np.float64)[None, :]
    A = (al[:, None] * lam_ + be[:, None]) / (ga[:, None] * lam_ + de[:, None])
    return A, q[:, None]


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


def _start(spec: Sampler, lam, ab_S: float, init: str):
    """Start variance ``v_S``, its derivative in ``ab_S``, and the true mean scale ``c_S``.

    Returns ``(v_S (d,), dv_S/d ab_S (d,), c_S, dc_S/d ab_S)`` (module docstring).
    """
    if init not in INITS:
        raise InputError(f"init: expected one of {INITS}, got {init!r}")
    if spec.param == "vp":
        c, dc = np.sqrt(ab_S), 0.5 / np.sqrt(ab_S)
        if init == "normal":
            return np.ones_like(lam), np.zeros_like(lam), c, dc
        return ab_S * lam + (1.0 - ab_S), lam - 1.0, c, dc
    sig2 = (1.0 - ab_S) / ab_S
    dsig2 = np.full_like(lam, -1.0 / ab_S**2)
    v = np.full_like(lam, sig2) if init == "normal" else lam + sig2
    return v, dsig2, 1.0, 0.0


def step_scalars(spec: Sampler, ab, eta, derivatives=False):
    """Per-step Mobius scalars ``(alpha, beta, gamma, delta, q)`` of a schedule.

    Parameters
    ----------
    spec : Sampler
    ab : ndarray of shape (n_steps,), step 1 first (``ab_0 = 1`` implied)
    eta : float or None
    derivatives : bool
        Also return their partial derivatives in ``a = ab_s`` and in ``ap = ab_{s-1}``.

    Returns
    -------
    P : ndarray of shape (5, n_steps), float64
    and, with ``derivatives``, ``dP_da`` and ``dP_dap`` of the same shape, taken by complex
    step (Squire & Trapp 1998): each step's scalars depend on its own ``(a, ap)`` only, so
    perturbing every ``a`` (or every ``ap``) at once by ``i h`` gives every step's partial
    derivative, exact to rounding, at the cost of two more O(S) evaluations. ``dP_dap`` of
    step 1 (``ap = ab_0 = 1``, a constant) is not meaningful and is never used.
    """
    ab = np.asarray(ab, dtype=np.float64)
    ap = np.concatenate([[1.0], ab[:-1]])
    P = np.array([np.broadcast_to(x, ab.shape) for x in spec.mobius(ab, ap, eta)], dtype=float)
    if not derivatives:
        return P
    h = 1e-30
    Pa = np.array([np.broadcast_to(x, ab.shape) for x in spec.mobius(ab + 1j * h, ap, eta)])
    Pap = np.array([np.broadcast_to(x, ab.shape) for x in spec.mobius(ab, ap + 1j * h, eta)])
    return P, Pa.imag / h, Pap.imag / h


def _coefficients(spec: Sampler, lam, ab, eta, derivatives=False):
    """``A``, ``q`` (S, d) of every step, optionally with their partials in a and ap."""
    out = step_scalars(spec, ab, eta, derivatives)
    P = out[0] if derivatives else out
    lam_ = lam[None, :]
    den = P[2][:, None] * lam_ + P[3][:, None]
    A = (P[0][:, None] * lam_ + P[1][:, None]) / den
    q = np.broadcast_to(P[4][:, None], A.shape)
    if not derivatives:
        return A, q
    _, Da, Dap = out

    def dA(D):
        return ((D[0][:, None] * lam_ + D[1][:, None])
                - A * (D[2][:, None] * lam_ + D[3][:, None])) / den

    return A, q, dA(Da), dA(Dap), Da[4][:, None], Dap[4][:, None]


def closed_form(eigenvalues, alphas_cumprod, sampler="ddim", eta=None, init="normal"):
    """Generated Gaussian of a discrete sampler with the exact Wiener denoiser.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``ab_1 > ... > ab_S`` in (0, 1), step 1 (least noisy) first; ``ab_0 = 1`` implied.
        VE samplers use ``sigma_s = sqrt((1 - ab_s) / ab_s)``.
    sampler : str
        A name of :data:`SAMPLERS` ("ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve").
    eta : float or None
        DDIM-eta stochasticity (0 DDIM, 1 DDPM); None takes the sampler's own.
    init : {"normal", "marginal"}
        Start ``x_S ~ N(0, v_S)`` or the true marginal at step S.

    Returns
    -------
    GeneratedGaussian

    Raises
    ------
    InputError
        Unknown sampler or init, or an eta the sampler does not take.

    Notes
    -----
    docs/theory.md section 3; Song, Meng, Ermon (2021) eq. 12; Ho, Jain, Abbeel (2020);
    Song & Ermon (2019); Benita, Elad, Keshet (2025) for the linear-system view.
    ``alphas_cumprod`` is trusted (validate it at the boundary).
    """
    spec = get_sampler(sampler)
    eta = resolve_eta(sampler, eta)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    A, q = _coefficients(spec, lam, ab, eta)
    q = np.broadcast_to(q, A.shape)
    v, _, c_S, _ = _start(spec, lam, ab[-1], init)
    for s in range(ab.shape[0] - 1, -1, -1):  # reverse time: step S first
        v = A[s] * A[s] * v + q[s]
    H = np.prod(A, axis=0)
    gain = -c_S * H if init == "normal" else np.zeros_like(lam)
    return GeneratedGaussian(transfer=H, variance=v, mean_gain=gain)


def closed_form_vjp(eigenvalues, alphas_cumprod, sampler, eta, init, loss_partials):
    """A loss of the generated Gaussian and its gradient with respect to ``alphas_cumprod``.

    One forward pass stores the per-step gains; one backward pass (reverse mode, the adjoint
    of ``v_{s-1} = A_s^2 v_s + q_s``, and the product rule for H) accumulates
    ``dL/d ab_s``. Every ``A_s`` and ``q_s`` depends on ``(ab_s, ab_{s-1})`` only, so the
    cost is O(S d) (docs/theory.md section 5).

    Parameters
    ----------
    eigenvalues, alphas_cumprod, sampler, eta, init
        As in :func:`closed_form`.
    loss_partials : callable
        ``loss_partials(gen) -> (L, dL/d var_gen, dL/d mean_gain)`` for the forward result
        ``gen`` (a :class:`GeneratedGaussian`); the partials are ndarrays of shape
        (n_directions,) (``dL/d mean_gain`` is ignored for ``init="marginal"``).

    Returns
    -------
    value : float
        ``L`` at the forward result.
    gen : GeneratedGaussian
        The forward result (as :func:`closed_form`).
    grad : ndarray of shape (n_steps,), float64
        ``dL / d alphas_cumprod``.
    """
    spec = get_sampler(sampler)
    eta = resolve_eta(sampler, eta)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    S, d = ab.shape[0], lam.shape[0]
    A, q, dA_da, dA_dap, dq_da, dq_dap = _coefficients(spec, lam, ab, eta, derivatives=True)
    q = np.broadcast_to(q, A.shape)
    v_S, dv_S, c_S, dc_S = _start(spec, lam, ab[-1], init)
    v_in = np.empty((S, d))  # v_in[s]: the variance entering array step s (step s + 1)
    v = v_S
    for s in range(S - 1, -1, -1):
        v_in[s] = v
        v = A[s] * A[s] * v + q[s]
    # prefix[s] = prod_{j<s} A_j: the gain of the steps run after array step s
    prefix = np.cumprod(np.vstack([np.ones((1, d)), A[:-1]]), axis=0)
    H = prefix[-1] * A[-1]
    normal = init == "normal"
    gain = -c_S * H if normal else np.zeros_like(lam)
    out = GeneratedGaussian(transfer=H, variance=v, mean_gain=gain)
    value, grad_variance, grad_mean_gain = loss_partials(out)

    grad = np.zeros(S)
    w_out = grad_variance * prefix * prefix  # dL / d(variance leaving array step s)
    dL_dA = w_out * 2.0 * A * v_in
    if normal:
        # mean_gain = -c_S prod_j A_j; d/dA_s = -c_S prod_{j != s} A_j
        suffix = np.vstack([np.cumprod(A[::-1], axis=0)[::-1][1:], np.ones((1, d))])
        dL_dA += grad_mean_gain * (-c_S) * prefix * suffix
        grad[-1] += np.sum(grad_mean_gain * (-dc_S) * H)
    grad[-1] += np.sum(grad_variance * H * H * dv_S)  # the start variance depends on ab_S
    grad += np.sum(dL_dA * dA_da + w_out * dq_da, axis=1)
    grad[:-1] += np.sum(dL_dA[1:] * dA_dap[1:] + w_out[1:] * dq_dap[1:], axis=1)
    return value, out, grad
