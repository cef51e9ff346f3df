"""Schedule losses as functions of ``alphas_cumprod``: evaluation and analytic gradient.

Glue between the closed-form samplers and the losses (:mod:`specsched.theory.losses`); the
optimiser calls :func:`loss_and_grad`. Discrete samplers (:data:`SAMPLERS`) go through
:mod:`specsched.theory.samplers` (and its numba kernels); k-diffusion's samplers
(:data:`~specsched.theory.ksolvers.KSAMPLERS`) through :mod:`specsched.theory.kclosed`, on
the schedule's noise levels ``sigmas = (sigma_S, ..., sigma_1, 0)``,
``sigma_s = sqrt((1 - ab_s)/ab_s)``: the compiled corner recursion for the optimiser
(:func:`~specsched.theory.kclosed.kclosed_loss_and_grad`), the NumPy trace for reports.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logit

from specsched.errors import InputError
from specsched.theory.curvature import loss_curvature
from specsched.theory.flow import PRODUCT_SAMPLERS
from specsched.theory.kclosed import (
    kclosed_form,
    kclosed_form_vjp,
    kclosed_loss_and_grad,
    kdiffusion_sigmas,
)
from specsched.theory.ksolvers import KSAMPLERS, resolve_options
from specsched.theory.losses import (
    KL_FLOOR,
    LOSSES,
    LossReport,
    kl_mask,
    loss_value_and_partials,
)
from specsched.theory.samplers import (
    LinearSystem,
    check_finite_start,
    check_sampler_options,
    closed_form,
    linear_system,
    propagate,
    propagate_vjp,
)


def _k_backend(backend) -> str:
    """kclosed's backend for ``backend``: "auto" is "numba" (the NumPy trace costs
    milliseconds of Python per call at any size; the kernels microseconds)."""
    _use_numba(backend, 0)  # the one check of the name
    return "numpy" if backend == "numpy" else "numba"


def _check_calibration(sampler, calibration):
    """A calibrated denoiser runs through k-diffusion's samplers' closed form only."""
    if calibration is not None and sampler not in KSAMPLERS:
        raise InputError(f"calibration: applies to the samplers of k-diffusion and unipc, not "
                         f"{sampler!r} (euler is ddim-ve, euler-ancestral ddpm-ve)",
                         param="calibration")


def _k_generated(lam, alphas_cumprod, sampler, eta, init, options=None, backend="numpy",
                 calibration=None):
    """The generated Gaussian of a k-diffusion sampler on a schedule (module docstring)."""
    check_finite_start(alphas_cumprod, sampler)
    options = resolve_options(sampler, eta, **(options or {}))
    return kclosed_form(lam, kdiffusion_sigmas(alphas_cumprod), sampler, options,
                        init, validate=False,  # alphas_cumprod is trusted here too
                        backend="numpy" if calibration is not None else _k_backend(backend),
                        calibration=calibration)


def _state_law(lam, alphas_cumprod, sampler, eta, init, options, backend, calibration):
    """The generated Gaussian of a sampler that is not a Mobius-scalar discrete one: a
    product sampler's (:mod:`specsched.theory.flow`) or k-diffusion's."""
    if sampler in PRODUCT_SAMPLERS:
        return closed_form(lam, alphas_cumprod, sampler, init=init)
    return _k_generated(lam, alphas_cumprod, sampler, eta, init, options, backend, calibration)


def _k_loss_and_grad(lam, m, alphas_cumprod, loss, sampler, eta, init, kl_floor, weights,
                     keep, options=None, backend="numpy", calibration=None):
    """:func:`loss_and_grad` of a k-diffusion sampler: the gradient in sigmas, chained to ab."""
    check_finite_start(alphas_cumprod, sampler)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    sigmas = kdiffusion_sigmas(ab)
    # sigmas[j] is sigma of ab[S - 1 - j]; d sigma / d ab = -1 / (2 ab^2 sigma)
    dsigma = -1.0 / (2.0 * ab * ab * sigmas[:-1][::-1])
    opts = resolve_options(sampler, eta, **(options or {}))
    if calibration is None and _k_backend(backend) == "numba":
        value, grad_sigmas = kclosed_loss_and_grad(
            lam, m, sigmas, sampler, opts, init, loss, weights,
            kl_mask(lam, kl_floor) if keep is None else keep, validate=False)
        return value, grad_sigmas[:-1][::-1] * dsigma

    def partials(gen):
        value, d_var, d_err = loss_value_and_partials(
            loss, lam, gen.variance, gen.mean_error(m), kl_floor, weights, keep
        )
        return value, d_var, d_err * m, d_err

    value, _, grad_sigmas = kclosed_form_vjp(lam, sigmas, sampler, opts, init, partials,
                                             validate=False, calibration=calibration)
    return float(value), grad_sigmas[:-1][::-1] * dsigma


def _resolve_noise(noise, lam, sampler, calibration):
    """The non-white :class:`~specsched.theory.noise.NoiseSpectrum` of ``noise``, or None."""
    if noise is None:
        return None
    from specsched.theory.noise import noise_spectrum
    from specsched.theory.varying import check_varying_sampler

    ns = noise_spectrum(noise, lam)
    if ns.is_white:
        return None
    if calibration is not None:
        raise InputError(f"calibration: measured on a network trained with white noise; it "
                         f"does not apply under the noise spectrum {ns.label}",
                         param="calibration")
    if ns.time_varying:
        check_varying_sampler(sampler, ns)
    return ns


def _in_y(ns, lam, m, loss, kl_floor, weights, keep):
    """The constant-colour reduction (docs/theory.md section 9) of an objective's arguments:
    ``(lambda / c, m / sqrt(c), weights, keep)`` with W2's terms weighted by ``c`` and the
    KL mask of the data's own eigenvalues."""
    lam_y, m_y, c = ns.to_white(lam, m)
    keep = kl_mask(lam, kl_floor) if keep is None else keep
    if loss == "w2":
        weights = c if weights is None else np.asarray(weights, dtype=np.float64) * c
    return lam_y, m_y, weights, keep


def evaluate_schedule(
    eigenvalues, mean, alphas_cumprod, *, sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR, options=None, calibration=None, noise=None,
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
        A name of :data:`specsched.theory.SAMPLERS` or of
        :data:`specsched.theory.ksolvers.KSAMPLERS` (k-diffusion's, with their defaults).
    eta : float or None
        DDIM-eta stochasticity (0 = DDIM, 1 = DDPM beta-tilde), or k-diffusion's eta of an
        ancestral/SDE sampler; None: the sampler's own.
    init : {"normal", "marginal"}
        Start distribution of the reverse process.
    kl_floor : float
        Relative eigenvalue floor of KL (see :mod:`specsched.theory.losses`).
    options : dict, optional
        Options of a k-diffusion sampler besides eta (``s_noise``, ``r``, ``solver_type``;
        :func:`specsched.theory.ksolvers.resolve_options`); None entries are ignored.
    calibration : LinearCalibration, optional
        A measured denoiser in place of the Wiener filter (k-diffusion's samplers only;
        :func:`specsched.theory.kclosed.kclosed_form`): the network-calibrated closed form.
    noise : str, NoiseSpectrum or None
        The forward noise spectrum (:func:`specsched.theory.noise.noise_spectrum`: "white",
        "equal-snr", "power:GAMMA", "fans[:GAMMA]" or a .npy path; None is white). A constant
        spectrum runs every sampler through the reduction ``y = x / sqrt(c)``; FANS, which
        changes with the level, runs ddim and ddpm on per-direction levels
        (:mod:`specsched.theory.varying`). W2 and KL are measured in x, the per-direction
        terms and ``variance`` too (docs/theory.md section 9).

    Returns
    -------
    LossReport

    Notes
    -----
    docs/theory.md sections 3-4; reference values in docs/theory.md section 5 (CIFAR-10 spectrum,
    linear betas, linspace spacing: S = 10 DDIM W2 = 5.5886).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    options = check_sampler_options(sampler, eta, options)
    _check_calibration(sampler, calibration)
    ns = _resolve_noise(noise, lam, sampler, calibration)
    if ns is not None and ns.time_varying:
        from specsched.theory.varying import varying_closed_form

        gen = varying_closed_form(lam, alphas_cumprod, ns, sampler, eta, init)
        return LossReport.from_moments(lam, gen.variance, gen.mean_error(m), gen.transfer,
                                       kl_floor)
    lam_y, m_y, c = (lam, m, None) if ns is None else ns.to_white(lam, m)
    if sampler in KSAMPLERS:
        gen = _k_generated(lam_y, alphas_cumprod, sampler, eta, init, options,
                           calibration=calibration)
    else:
        gen = closed_form(lam_y, alphas_cumprod, sampler=sampler, eta=eta, init=init)
    if c is None:
        return LossReport.from_moments(lam, gen.variance, gen.mean_error(m), gen.transfer,
                                       kl_floor)
    # back to x: variance c v_y, mean error sqrt(c) e_y
    return LossReport.from_moments(lam, c * gen.variance, np.sqrt(c) * gen.mean_error(m_y),
                                   gen.transfer, kl_floor)


#: ``backend="auto"`` compiles (numba) when S x d reaches this; below it the NumPy
#: reference is about as fast and needs no compilation (at S x d = 21200, 106 quadrature nodes
#: and S = 200, the kernel takes 0.45 ms and NumPy 1.75 ms).
NUMBA_MIN_WORK = 20_000
BACKENDS = ("auto", "numpy", "numba")


def _use_numba(backend, work):
    if backend not in BACKENDS:
        raise InputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend == "numba" or (backend == "auto" and work >= NUMBA_MIN_WORK)


def _check_loss(loss):
    if loss not in LOSSES:
        raise InputError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _kernel_args(system: LinearSystem, lam, m, loss, kl_floor, weights, keep):
    """Arguments of the numba kernels for a validated :class:`LinearSystem`."""
    from specsched.theory.kernels import LOSS_CODES  # numba: imported on first use

    w = np.ones_like(lam) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = kl_mask(lam, kl_floor) if keep is None else np.asarray(keep, dtype=bool)
    head = (lam, m, w, keep, np.ascontiguousarray(system.scalars))
    tail = (system.mean_scale,)
    if system.scalars_da is not None:
        head += (np.ascontiguousarray(system.scalars_da),
                 np.ascontiguousarray(system.scalars_dap))
        return (*head, np.ascontiguousarray(system.start_variance),
                np.ascontiguousarray(system.start_variance_d), *tail, system.mean_scale_d,
                system.normal, LOSS_CODES[loss])
    return (*head, np.ascontiguousarray(system.start_variance), *tail, system.normal,
            LOSS_CODES[loss])


def _value(system: LinearSystem, lam, m, loss, kl_floor, weights, keep, numba: bool,
           gen=None) -> float:
    """The objective of a validated system; ``gen`` reuses a NumPy forward pass."""
    if numba:
        from specsched.theory.kernels import loss_value_kernel, threads_for  # numba

        with threads_for(lam.size * system.scalars.shape[1]):
            return float(loss_value_kernel(*_kernel_args(system, lam, m, loss, kl_floor,
                                                         weights, keep)))
    gen = propagate(system, lam) if gen is None else gen
    return loss_value_and_partials(loss, lam, gen.variance, gen.mean_error(m), kl_floor,
                                   weights, keep)[0]


def loss_value(
    eigenvalues, mean, alphas_cumprod, *, loss="w2", sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR, weights=None, keep=None, backend="auto", options=None, calibration=None,
    noise=None,
) -> float:
    """The optimiser's objective alone (``W2^2`` or a KL), without gradient.

    Same arguments and value as :func:`loss_and_grad`; about half its cost (line searches
    need only values).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    numba = _use_numba(backend, lam.size * np.size(alphas_cumprod))
    _check_loss(loss)
    options = check_sampler_options(sampler, eta, options)
    _check_calibration(sampler, calibration)
    ns = _resolve_noise(noise, lam, sampler, calibration)
    if ns is not None:
        if ns.time_varying:
            from specsched.theory.varying import varying_loss

            return varying_loss(lam, m, alphas_cumprod, ns, loss=loss, sampler=sampler, eta=eta,
                                init=init, kl_floor=kl_floor, weights=weights, keep=keep,
                                gradient=False)
        lam, m, weights, keep = _in_y(ns, lam, m, loss, kl_floor, weights, keep)
    if sampler in KSAMPLERS or sampler in PRODUCT_SAMPLERS:
        gen = _state_law(lam, alphas_cumprod, sampler, eta, init, options, backend,
                         calibration)
        return loss_value_and_partials(loss, lam, gen.variance, gen.mean_error(m), kl_floor,
                                       weights, keep)[0]
    system = linear_system(lam, alphas_cumprod, sampler, eta, init)
    return _value(system, lam, m, loss, kl_floor, weights, keep, numba)


def loss_and_grad(
    eigenvalues, mean, alphas_cumprod, *, loss="w2", sampler="ddim", eta=None, init="normal",
    kl_floor=KL_FLOOR, weights=None, keep=None, backend="auto", options=None, calibration=None,
    noise=None,
):
    """The optimiser's objective and its analytic gradient in ``alphas_cumprod``.

    The objective is ``sum_k w_k term_k``: ``W2^2`` for ``loss="w2"``, ``KL(gen || data)``
    for ``loss="kl"`` and ``KL(data || gen)`` for ``loss="kl-data-gen"``.

    Parameters
    ----------
    eigenvalues, mean, alphas_cumprod, sampler, eta, init, kl_floor, options, calibration, noise
        As in :func:`evaluate_schedule` (the objective of a coloured ``noise`` is in x).
    loss : {"w2", "kl", "kl-data-gen"}
    weights : ndarray of shape (n_directions,), optional
        Weight of each direction (quadrature nodes, :mod:`specsched.theory.quadrature`);
        1 by default.
    keep : ndarray of bool, shape (n_directions,), optional
        Directions the KLs count; by default those above ``kl_floor`` times the largest
        eigenvalue.
    backend : {"auto", "numpy", "numba"}
        "numpy" is the reference implementation
        (:func:`specsched.theory.samplers.closed_form_vjp`); "numba" the
        fused compiled kernel (:mod:`specsched.theory.kernels`); "auto" picks numba when
        S x d >= :data:`NUMBA_MIN_WORK`. For k-diffusion's samplers "numpy" is the reference
        trace over the directions and "numba" (and "auto", at any size) the compiled corner
        recursion (:func:`specsched.theory.kclosed.kclosed_form`'s backends).

    Returns
    -------
    value : float
    grad : ndarray of shape (n_steps,), float64
        ``d value / d alphas_cumprod``.

    Notes
    -----
    Reverse-mode differentiation of the per-direction recursion, O(S d)
    (Benita, Elad, Keshet 2025; docs/theory.md section 5); for k-diffusion's samplers the
    adjoint of their state recursion (:func:`specsched.theory.kclosed.kclosed_form_vjp`),
    O(S L^2 d) with L <= 4 state entries.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    numba = _use_numba(backend, lam.size * np.size(alphas_cumprod))
    _check_loss(loss)
    options = check_sampler_options(sampler, eta, options)
    _check_calibration(sampler, calibration)
    ns = _resolve_noise(noise, lam, sampler, calibration)
    if ns is not None:
        if ns.time_varying:
            from specsched.theory.varying import varying_loss

            return varying_loss(lam, m, alphas_cumprod, ns, loss=loss, sampler=sampler, eta=eta,
                                init=init, kl_floor=kl_floor, weights=weights, keep=keep)
        lam, m, weights, keep = _in_y(ns, lam, m, loss, kl_floor, weights, keep)
    if sampler in KSAMPLERS:
        return _k_loss_and_grad(lam, m, alphas_cumprod, loss, sampler, eta, init, kl_floor,
                                weights, keep, options, backend, calibration)
    if sampler in PRODUCT_SAMPLERS:  # value and gradient of the product form, in logSNR
        ab = np.asarray(alphas_cumprod, dtype=np.float64)
        c = loss_curvature(lam, m, logit(ab), loss=loss, sampler=sampler, init=init,
                           kl_floor=kl_floor, weights=weights, keep=keep)
        with np.errstate(divide="ignore", invalid="ignore"):  # ab_S = 0: a fixed level
            return c.value, np.where(ab > 0.0, c.grad / (ab * (1.0 - ab)), np.nan)
    system = linear_system(lam, alphas_cumprod, sampler, eta, init, derivatives=True)
    if numba:
        from specsched.theory.kernels import loss_grad, threads_for  # numba: on first use

        with threads_for(lam.size * system.scalars.shape[1]):
            value, grad = loss_grad(*_kernel_args(system, lam, m, loss, kl_floor, weights,
                                                  keep))
        return float(value), grad

    def partials(gen):
        value, d_var, d_err = loss_value_and_partials(
            loss, lam, gen.variance, gen.mean_error(m), kl_floor, weights, keep
        )
        return value, d_var, d_err * m  # mean_error = mean_gain * m

    value, _, grad = propagate_vjp(system, lam, partials)
    return value, grad


def loss_summary(eigenvalues, mean, alphas_cumprod, *, sampler="ddim", eta=None,
                 init="normal", kl_floor=KL_FLOOR, backend="auto", options=None,
                 calibration=None, noise=None) -> dict:
    """W2 and both KLs of a schedule, without per-direction terms.

    The same numbers as :func:`evaluate_schedule` (``w2``, ``kl``, ``kl_data_gen``), as
    :func:`loss_value` computes them, so through the compiled kernel for large S x d: what
    tables of baselines need. Under a coloured ``noise`` (as in :func:`evaluate_schedule`) it
    is :func:`evaluate_schedule`'s summary.

    Returns
    -------
    dict
        ``{"w2": float, "kl": float, "kl_data_gen": float}``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    numba = _use_numba(backend, lam.size * np.size(alphas_cumprod))
    keys = (("w2", "w2"), ("kl", "kl"), ("kl_data_gen", "kl-data-gen"))
    options = check_sampler_options(sampler, eta, options)
    _check_calibration(sampler, calibration)
    ns = _resolve_noise(noise, lam, sampler, calibration)
    if ns is not None:  # the parsed spectrum: a file is read once
        return evaluate_schedule(lam, m, alphas_cumprod, sampler=sampler, eta=eta, init=init,
                                 kl_floor=kl_floor, options=options, noise=ns).summary()
    if sampler in KSAMPLERS or sampler in PRODUCT_SAMPLERS:
        gen = _state_law(lam, alphas_cumprod, sampler, eta, init, options, backend,
                         calibration)
        out = {key: loss_value_and_partials(loss, lam, gen.variance, gen.mean_error(m),
                                            kl_floor)[0] for key, loss in keys}
    else:
        system = linear_system(lam, alphas_cumprod, sampler, eta, init)
        gen = None if numba else propagate(system, lam)
        out = {key: _value(system, lam, m, loss, kl_floor, None, None, numba, gen)
               for key, loss in keys}
    out["w2"] = float(np.sqrt(max(out["w2"], 0.0)))
    return out
