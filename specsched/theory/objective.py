"""Schedule losses as functions of ``alphas_cumprod``: evaluation and analytic gradient.

Glue between the closed-form samplers (:mod:`specsched.theory.samplers`) and the losses
(:mod:`specsched.theory.losses`); the optimiser calls :func:`loss_and_grad`.
"""

from __future__ import annotations

import numpy as np

from specsched.theory.losses import (
    KL_FLOOR,
    LossReport,
    kl_data_gen_terms,
    kl_mask,
    kl_terms,
    loss_value_and_partials,
    w2_terms,
)
from specsched.theory.samplers import closed_form, closed_form_vjp


def evaluate_schedule(
    eigenvalues, mean, alphas_cumprod, *, sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR,
) -> LossReport:
    """W2 and both KL divergences of a discrete sampler run on a schedule.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0`` (any order).
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis; None means zero (centred data).
    alphas_cumprod : ndarray of shape (n_steps,), float64
        Strictly decreasing in (0, 1), step 1 (least noisy) first.
    sampler : str
        A name of :data:`specsched.theory.SAMPLERS`.
    eta : float or None
        DDIM-eta stochasticity (0 = DDIM, 1 = DDPM beta-tilde); None: the sampler's own.
    init : {"normal", "marginal"}
        Start distribution of the reverse process.
    kl_floor : float
        Relative eigenvalue floor of KL (see :mod:`specsched.theory.losses`).

    Returns
    -------
    LossReport

    Notes
    -----
    THEORY.md sections 3-4; reference values in THEORY.md section 5 (CIFAR-10 spectrum,
    linear betas, linspace spacing: S = 10 DDIM W2 = 5.5886).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    gen = closed_form(lam, alphas_cumprod, sampler=sampler, eta=eta, init=init)
    err = gen.mean_error(m)
    wt = w2_terms(lam, gen.variance, err)
    kt = kl_terms(lam, gen.variance, err, kl_floor)
    rt = kl_data_gen_terms(lam, gen.variance, err, kl_floor)
    return LossReport(
        w2=float(np.sqrt(wt.sum())),
        kl=float(kt.sum()),
        kl_data_gen=float(rt.sum()),
        w2_terms=wt,
        kl_terms=kt,
        kl_data_gen_terms=rt,
        kl_excluded=int(lam.size - kl_mask(lam, kl_floor).sum()),
        transfer=gen.transfer,
        variance=gen.variance,
    )


def loss_value(
    eigenvalues, mean, alphas_cumprod, *, loss="w2", sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR,
) -> float:
    """The optimiser's objective alone (``W2^2`` or ``KL(gen || data)``), without gradient.

    Same arguments and value as :func:`loss_and_grad`; about half its cost (line searches
    need only values).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    gen = closed_form(lam, alphas_cumprod, sampler=sampler, eta=eta, init=init)
    return loss_value_and_partials(loss, lam, gen.variance, gen.mean_error(m), kl_floor)[0]


def loss_and_grad(
    eigenvalues, mean, alphas_cumprod, *, loss="w2", sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR,
):
    """The optimiser's objective and its analytic gradient in ``alphas_cumprod``.

    The objective is ``W2^2`` for ``loss="w2"``, ``KL(gen || data)`` for ``loss="kl"`` and
    ``KL(data || gen)`` for ``loss="kl-data-gen"``.

    Parameters
    ----------
    eigenvalues, mean, alphas_cumprod, sampler, eta, init, kl_floor
        As in :func:`evaluate_schedule`.
    loss : {"w2", "kl", "kl-data-gen"}

    Returns
    -------
    value : float
    grad : ndarray of shape (n_steps,), float64
        ``d value / d alphas_cumprod``.

    Notes
    -----
    Reverse-mode differentiation of the per-direction recursion, O(S d)
    (Benita, Elad, Keshet 2025; THEORY.md section 5).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)

    def partials(gen):
        value, d_var, d_err = loss_value_and_partials(
            loss, lam, gen.variance, gen.mean_error(m), kl_floor
        )
        return value, d_var, d_err * m  # mean_error = mean_gain * m

    value, _, grad = closed_form_vjp(lam, alphas_cumprod, sampler, eta, init, partials)
    return value, grad
