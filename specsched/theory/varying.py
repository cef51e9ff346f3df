r"""DDIM-eta under a noise spectrum that changes with the level: per-direction schedules.

docs/theory.md section 9. With forward noise ``C(ab) = diag(c_k(ab))`` each eigen-direction k
has its own Gaussian path ``x_t = sqrt(ab) x_0 + sqrt((1 - ab) c_k(ab)) eps``. DDIM-eta (Song
et al. 2021 eq. 12) written with a signal scale ``a`` and a noise std ``s`` per direction is
equivariant to rescaling each level, so in ``x / r_k`` with ``r_k^2 = ab + (1 - ab) c_k(ab)``
it is the white VP sampler on the per-direction levels

    abeff_k(ab) = ab / (ab + (1 - ab) c_k(ab)),

and ``x = x / r`` at the clean end (``ab_0 = 1``, ``r = 1``). The reverse process starts from
``N(0, C(ab_S))``, variance ``c_k / r_k^2`` in the rescaled state (the white start ``N(0, 1)``
when ``c = 1``). Every per-step scalar of :func:`specsched.theory.samplers.step_scalars` is
then an (n_steps, n_directions) array, and the closed form and its reverse-mode gradient are
the white ones (:func:`specsched.theory.samplers.forward_pass` and
:func:`~specsched.theory.samplers.gain_adjoint`, shared with ``propagate_vjp``), with the chain
rule through
``d abeff_k / d ab`` (complex step, exact to rounding). With a constant ``c`` this equals the
constant-colour reduction ``y = x / sqrt(c)`` (tests/test_noise_spectrum.py checks it).

DDPM (eta = 1) needs every direction's SNR to decrease with the step; FANS' annealing
``c_k(ab) = (1 - ab) chat_k + ab`` keeps ``abeff_k`` increasing in ``ab`` for every
``chat_k > 0`` (docs/theory.md section 9), so any valid schedule is valid in every direction.
Only ``ddim`` and ``ddpm`` (DDIM-eta) are defined here: the other samplers' noise terms are
not equivariant to the rescaling.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from specsched.errors import InputError
from specsched.theory.losses import kl_mask, loss_value_and_partials
from specsched.theory.samplers import (
    GeneratedGaussian,
    _scalars,
    check_init,
    forward_pass,
    gain_adjoint,
    get_sampler,
    mobius,
    mobius_derivative,
    resolve_eta,
)

__all__ = ["VARYING_SAMPLERS", "effective_levels", "varying_closed_form", "varying_loss"]

#: Samplers with a closed form under a level-dependent noise spectrum.
VARYING_SAMPLERS = ("ddim", "ddpm")
_H = 1e-30


def effective_levels(noise, alphas_cumprod):
    """Per-direction levels ``abeff`` (module docstring) and the start variance.

    Parameters
    ----------
    noise : NoiseSpectrum
        Time-varying or constant, not white (:mod:`specsched.theory.noise`).
    alphas_cumprod : ndarray of shape (n_steps,), float64 or complex
        ``ab_1 > ... > ab_S``, step 1 first.

    Returns
    -------
    abeff : ndarray of shape (n_steps, n_directions)
    start_variance : ndarray of shape (n_directions,)
        ``c_k(ab_S) / r_k(ab_S)^2``: the variance of the start ``N(0, C)`` in ``x / r``.
    """
    ab = np.asarray(alphas_cumprod)
    c = noise.at(ab)
    r2 = ab[:, None] + (1.0 - ab[:, None]) * c
    return ab[:, None] / r2, c[-1] / r2[-1]


def check_varying_sampler(sampler: str, noise) -> None:
    """InputError unless ``sampler`` has a closed form under the time-varying ``noise``."""
    if sampler not in VARYING_SAMPLERS:
        raise InputError(f"sampler: under the noise spectrum {noise.label}, which changes with "
                         f"the level, the closed form covers {list(VARYING_SAMPLERS)} "
                         f"(DDIM-eta), not {sampler!r}", param="sampler")


def _run(lam, m, alphas_cumprod, noise, sampler, eta, init, partials=None):
    """Forward pass; with ``partials`` (as in ``closed_form_vjp``) also the gradient."""
    check_varying_sampler(sampler, noise)
    spec = get_sampler(sampler)
    eta = resolve_eta(sampler, eta)
    check_init(init)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    d = lam.size
    noise.check_dimension(d)
    # the levels depend on a direction only through its c_k: FANS has one per band, so the
    # scalars are computed once per distinct c_k and spread to the directions
    values, cols = np.unique(noise.variances, return_inverse=True)
    distinct = replace(noise, variances=values)
    a_u, vn_u = effective_levels(distinct, ab)
    ap_u = np.vstack([np.ones((1, values.size)), a_u[:-1]])
    a, v_normal = a_u[:, cols], vn_u[cols]
    P = _scalars(spec, a_u, ap_u, eta)[:, :, cols]
    alpha, beta, gamma, delta, q = P[0], P[1], P[2], P[3], P[4]
    lam_ = lam[None, :]
    A, inv = mobius(alpha, beta, gamma, delta, lam_)
    normal = init == "normal"

    def start(a_S, v_n):
        v = v_n if normal else a_S * lam + (1.0 - a_S)
        return v, np.sqrt(a_S)

    v_S, c_S = start(a[-1], v_normal)
    out, v_in, prefix = forward_pass(A, q, v_S, c_S, normal)
    if partials is None:
        return out
    value, grad_variance, grad_mean_gain = partials(out)
    H = out.transfer

    # per-direction derivatives of the scalars (complex step on abeff and on its previous)
    Da = (_scalars(spec, a_u + 1j * _H, ap_u, eta).imag / _H)[:, :, cols]
    Dap = (_scalars(spec, a_u, ap_u + 1j * _H, eta).imag / _H)[:, :, cols]
    dA_da = mobius_derivative(Da[0], Da[1], Da[2], Da[3], lam_, A, inv)
    dA_dap = mobius_derivative(Dap[0], Dap[1], Dap[2], Dap[3], lam_, A, inv)
    dL_dA, w_out = gain_adjoint(A, v_in, prefix, c_S, normal, grad_variance, grad_mean_gain)
    g_eff = dL_dA * dA_da + w_out * Da[4]
    g_eff[:-1] += dL_dA[1:] * dA_dap[1:] + w_out[1:] * Dap[4][1:]
    jac = (effective_levels(distinct, ab + 1j * _H)[0].imag / _H)[:, cols]  # d abeff / d ab
    grad = np.sum(g_eff * jac, axis=1)
    # the start depends on ab_S directly (its variance and the true mean's scale)
    a_c, vn_c = effective_levels(distinct, ab[-1:] + 1j * _H)
    v_c, c_c = start(a_c[-1][cols], vn_c[cols])
    grad[-1] += np.sum(grad_variance * H * H * (v_c.imag / _H))
    if normal:
        grad[-1] += np.sum(grad_mean_gain * (-(c_c.imag / _H)) * H)
    return float(value), out, grad


def varying_closed_form(eigenvalues, alphas_cumprod, noise, sampler="ddim", eta=None,
                        init="normal") -> GeneratedGaussian:
    """Generated Gaussian of DDIM-eta under a level-dependent noise spectrum, in x.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``, in the order of ``noise``'s variances.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``ab_1 > ... > ab_S`` in (0, 1), step 1 (least noisy) first; trusted.
    noise : NoiseSpectrum
        Not white (:func:`specsched.theory.noise.noise_spectrum`).
    sampler : {"ddim", "ddpm"}
    eta : float or None
    init : {"normal", "marginal"}
        Start ``N(0, C(ab_S))`` or the true marginal at step S.

    Returns
    -------
    GeneratedGaussian
        Transfer function, variance and mean gain of the output in x (module docstring).

    Raises
    ------
    InputError
        Another sampler, a bad eta or init, or ``noise`` of another dimension.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return _run(lam, None, alphas_cumprod, noise, sampler, eta, init)


def varying_loss(eigenvalues, mean, alphas_cumprod, noise, *, loss="w2", sampler="ddim",
                 eta=None, init="normal", kl_floor=None, weights=None, keep=None,
                 gradient=True):
    """The objective (``W2^2`` or a KL, in x) and its gradient in ``alphas_cumprod``.

    Same conventions as :func:`specsched.theory.loss_and_grad`; ``gradient=False`` returns
    the value alone. O(S d) time and memory (module docstring).

    Returns
    -------
    value : float
    grad : ndarray of shape (n_steps,), float64 (with ``gradient=True``)
    """
    from specsched.theory.losses import KL_FLOOR

    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    floor = KL_FLOOR if kl_floor is None else kl_floor
    keep = kl_mask(lam, floor) if keep is None else keep

    def partials(gen):
        value, d_var, d_err = loss_value_and_partials(loss, lam, gen.variance,
                                                      gen.mean_error(m), floor, weights, keep)
        return value, d_var, d_err * m

    if not gradient:
        gen = _run(lam, m, alphas_cumprod, noise, sampler, eta, init)
        return partials(gen)[0]
    value, _, grad = _run(lam, m, alphas_cumprod, noise, sampler, eta, init, partials)
    return value, grad
