r"""Discrete samplers: each defined once, and their closed forms as per-direction linear systems.

Notation (docs/theory.md sections 1-3). A schedule is ``alphas_cumprod = (ab_1, ..., ab_S)``,
``1 > ab_1 > ... > ab_S > 0``, step 1 the least noisy, with ``ab_0 = 1`` implied (the last
reverse step lands on clean data). One reverse step ``s -> s-1`` uses ``a = ab_s`` and
``ap = ab_{s-1}``; VE samplers use the same points as noise levels
``sigma_s = sqrt((1 - ab_s) / ab_s)`` (``sigma_0 = 0``).

**The one definition of each sampler** is its update (:attr:`Sampler.update`): every step of
every sampler here combines the denoiser's output and the state linearly,

    x_{s-1} = p_s x0_hat + r_s x_s + sqrt(q_s) z,      z ~ N(0, 1),

with the scalars ``(p_s, r_s, q_s)`` of (docs/theory.md section 3):

- ``ddim`` / ``ddpm`` (DDIM-eta, Song et al. 2021 eq. 12; eta = 0 DDIM, eta = 1 DDPM with
  the posterior variance beta-tilde): ``x_{s-1} = sqrt(ap) x0_hat + sqrt(1 - ap - sig^2)
  eps_hat + sig z`` with ``eps_hat = (x_s - sqrt(a) x0_hat) / sqrt(1 - a)``, so
  ``c = sqrt((1 - ap - sig^2) / (1 - a))``, ``p = sqrt(ap) - c sqrt(a)``, ``r = c``,
  ``q = sig^2 = eta^2 (1 - ap)/(1 - a) (1 - a/ap)``;
- ``ddpm-large`` (Ho et al. 2020, eq. 7 posterior-mean form with sigma^2 = beta_s):
  ``p = sqrt(ap) beta_s / (1 - a)``, ``r = sqrt(a/ap) (1 - ap)/(1 - a)``, ``q = beta_s``,
  ``beta_s = 1 - a/ap``, no noise on the final step s = 1;
- ``ddim-ve`` (DDIM in VE form): ``x_{s-1} = x0_hat + rho (x_s - x0_hat)``,
  ``rho = sigma_{s-1}/sigma_s``: ``p = 1 - rho``, ``r = rho``, ``q = 0``;
- ``ddpm-ve`` (SMLD ancestral sampling, Song & Ermon 2019): ``rho = sigma_{s-1}^2/sigma_s^2``,
  ``q = sigma_{s-1}^2 (sigma_s^2 - sigma_{s-1}^2) / sigma_s^2``.

The array sampler :func:`specsched.sampling.step` runs these updates on samples. **The closed
form is derived from them**: with the Wiener denoiser ``x0_hat = m + g (x - s m)``,
``g = s lambda / (gamma lambda + delta)`` (:func:`specsched.theory.wiener.wiener_gain_coefficients`
at the state's level), a step is, in each eigen-direction k with data variance ``lambda_k``,

    x_{s-1} = A_s x_s + B_s m + noise of variance q_s,
    A_s = p g + r = (alpha lambda + beta) / (gamma lambda + delta),
    B_s = p (1 - s g) = b / (gamma lambda + delta),

with ``alpha = p s + r gamma``, ``beta = r delta``, ``b = p delta`` (:func:`step_scalars`: six
scalars per step, depending on ``(ab_s, ab_{s-1})`` only; :func:`step_gains` evaluates them).

Started from ``x_S ~ N(0, v_S)`` (``init="normal"``: ``v_S = 1`` for VP, ``sigma_S^2`` for
VE) or from the true marginal (``init="marginal"``: ``N(s_S m, gamma_S lambda + delta_S)``,
i.e. ``N(sqrt(ab_S) m, ab_S lambda + 1 - ab_S)`` for VP and ``N(m, lambda + sigma_S^2)`` for
VE), the generated law per direction is Gaussian with

    H        = prod_s A_s                               (the transfer function)
    var_gen  = H^2 v_S + sum_s q_s (prod_{j<s} A_j)^2
    mean_gen - m = -c_S H m                             (normal start; 0 for the marginal)

where ``c_S = s_S`` (``sqrt(ab_S)`` for VP, 1 for VE) is the true mean's scale at step S:
each step maps the exact mean of its level to the exact mean of the next (the Wiener denoiser
is unbiased), so only the start's missing mean survives, damped by H. Everything is O(S d)
time; no d x d matrix is formed. The gradient in ``alphas_cumprod`` is a reverse-mode pass
over the same recursion (:func:`closed_form_vjp`); the partial derivatives of the per-step
scalars (and of the start) are taken by complex-step differentiation (exact to rounding,
Squire & Trapp 1998), so a new sampler needs only its update.

Validation happens once, in :func:`linear_system` (called by every public entry point here
and in :mod:`specsched.theory.objective`); the helpers below it trust their inputs.
``alphas_cumprod`` itself is trusted (validate it at the boundary, e.g.
:func:`specsched.schedules.validate_alphas_cumprod`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from specsched.errors import InputError
from specsched.schedules.conversions import _fm_times
from specsched.theory.flow import PRODUCT_SAMPLERS, get_product_sampler, step_gain
from specsched.theory.ksolvers import KSAMPLERS, resolve_options
from specsched.theory.wiener import wiener_gain_coefficients

__all__ = [
    "INITS",
    "SAMPLERS",
    "SCALAR_ROWS",
    "GeneratedGaussian",
    "LinearSystem",
    "Sampler",
    "StepGains",
    "check_finite_start",
    "check_init",
    "check_sampler_options",
    "closed_form",
    "closed_form_vjp",
    "get_sampler",
    "linear_system",
    "mobius",
    "mobius_derivative",
    "resolve_eta",
    "nfe_of",
    "sampler_names",
    "sampler_param",
    "steps_for_nfe",
    "steps_within_nfe",
    "step_coefficients",
    "step_gains",
    "step_scalar_derivatives",
    "step_scalars",
]

#: Start distributions of the reverse process.
INITS = ("normal", "marginal")
#: Rows of :func:`step_scalars`: ``A = (alpha lambda + beta) / (gamma lambda + delta)``,
#: noise variance ``q``, ``B = b / (gamma lambda + delta)``.
SCALAR_ROWS = ("alpha", "beta", "gamma", "delta", "q", "b")


# -------------------------------------------------------------- the updates (one per sampler)
# Written with complex-safe operations only: step_scalar_derivatives perturbs a or ap by i h.

def _ddim_eta_update(a, ap, eta):
    """DDIM-eta (Song et al. 2021 eq. 12): ``(p, r, q)`` in product forms.

    ``q = sig^2 = eta^2 (1 - ap)(ap - a) / (ap (1 - a))`` and
    ``c^2 = (1 - ap - sig^2)/(1 - a) = (1 - ap)((1 - eta^2) ap + a (eta^2 - ap))/(ap (1 - a)^2)``:
    exact zeros on the last step (ap = 1), no cancellation at eta = 1.
    """
    w, u, e2 = 1.0 - a, 1.0 - ap, eta**2
    sig2 = e2 * u * (ap - a) / (ap * w)
    c2 = u * ((1.0 - e2) * ap + a * (e2 - ap)) / (ap * w * w)
    c = np.sqrt(np.where(np.real(c2) > 0.0, c2, 0.0))
    return np.sqrt(ap) - c * np.sqrt(a), c, sig2


def _ddpm_large_update(a, ap, eta):
    """DDPM with sigma^2 = beta (Ho et al. 2020 eq. 7 posterior-mean form); none at s = 1."""
    w = 1.0 - a
    beta = (ap - a) / ap
    p = np.sqrt(ap) * beta / w
    r = np.sqrt(a / ap) * (1.0 - ap) / w
    return p, r, np.where(np.real(ap) == 1.0, 0.0, beta)


def _ddim_ve_update(a, ap, eta):
    """DDIM in VE form: ``x0_hat + rho (x - x0_hat)``, ``rho = sigma_{s-1}/sigma_s``."""
    rho = np.sqrt(((1.0 - ap) / ap) / ((1.0 - a) / a))  # 0 on the final step (ap = 1)
    return 1.0 - rho, rho, 0.0 * rho


def _fm_euler_update(a, ap, eta):
    """Euler on the flow-matching velocity, ``x' = x + (t' - t) v_hat`` with
    ``v_hat = (x - x0_hat) / t`` (docs/theory.md section 10): ``p = (t - t')/t``,
    ``r = t'/t``; from ``t = 1`` (``a = 0``) and onto ``t' = 0`` (``ap = 1``) alike."""
    t, tp = _fm_times(a), _fm_times(ap)
    return (t - tp) / t, tp / t, 0.0 * t


def _ddpm_ve_update(a, ap, eta):
    """SMLD ancestral sampling (Song & Ermon 2019): ``rho`` the squared sigma ratio, noise q."""
    sig2, sig2_prev = (1.0 - a) / a, (1.0 - ap) / ap
    rho = sig2_prev / sig2
    return 1.0 - rho, rho, sig2_prev * (sig2 - sig2_prev) / sig2


@dataclass(frozen=True)
class Sampler:
    """A discrete sampler, defined by its update ``x_{s-1} = p x0_hat + r x_s + sqrt(q) z``.

    Attributes
    ----------
    name : str
        Command-line name.
    param : {"vp", "ve", "fm"}
        Parametrisation of its states: VP ``x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps``,
        VE ``x_t = x_0 + sigma eps`` with ``sigma = sqrt((1 - ab) / ab)``, or FM
        ``x_t = (1 - t) x_0 + t eps`` with ``t = sigma / (1 + sigma)`` (docs/theory.md
        section 10; start ``N(0, 1)`` as VP, at ``t_S``).
    update : callable
        ``(a, ap, eta) -> (p, r, q)`` for ``a = ab_s``, ``ap = ab_{s-1}`` (floats or arrays of
        one shape; complex-safe), module docstring.
    default_eta : float or None
        eta of the sampler; None when eta does not apply.
    eta_free : bool
        Whether any eta in [0, 1] is accepted (DDIM-eta).
    description : str
    """

    name: str
    param: str
    update: Callable
    default_eta: float | None
    eta_free: bool
    description: str


SAMPLERS = {
    "ddim": Sampler("ddim", "vp", _ddim_eta_update, 0.0, True,
                    "DDIM-eta (eta = 0 by default), VP"),
    "ddpm": Sampler("ddpm", "vp", _ddim_eta_update, 1.0, False,
                    "DDPM ancestral, posterior variance beta-tilde (eta = 1), VP"),
    "ddpm-large": Sampler("ddpm-large", "vp", _ddpm_large_update, None, False,
                          "DDPM ancestral, variance beta ('fixed_large'), VP"),
    "ddim-ve": Sampler("ddim-ve", "ve", _ddim_ve_update, None, False,
                       "DDIM in VE form, start N(0, sigma_S^2)"),
    "ddpm-ve": Sampler("ddpm-ve", "ve", _ddpm_ve_update, None, False,
                       "SMLD ancestral sampling (VE), start N(0, sigma_S^2)"),
    "fm-euler": Sampler("fm-euler", "fm", _fm_euler_update, None, False,
                        "flow matching: Euler on the velocity in t (diffusers' "
                        "FlowMatchEulerDiscreteScheduler), start N(0, 1)"),
}


def sampler_names() -> list[str]:
    """Every sampler name: the discrete samplers of :data:`SAMPLERS`, the flow-matching
    product samplers (:data:`specsched.theory.flow.PRODUCT_SAMPLERS`), then k-diffusion's
    (:data:`specsched.theory.ksolvers.KSAMPLERS`)."""
    return [*SAMPLERS, *PRODUCT_SAMPLERS, *KSAMPLERS]


def sampler_param(name: str) -> str:
    """``"vp"``, ``"ve"`` or ``"fm"``: the parametrisation of a sampler's states (k-diffusion:
    VE; diffusers' ``unipc``: VP, :attr:`specsched.theory.ksolvers.KSampler.param`; the
    flow-matching samplers: FM).

    Raises
    ------
    InputError
        Unknown name (listing every name).
    """
    if name in KSAMPLERS:
        return KSAMPLERS[name].param
    if name in PRODUCT_SAMPLERS:
        return PRODUCT_SAMPLERS[name].param
    if name in SAMPLERS:
        return SAMPLERS[name].param
    raise InputError(f"sampler: expected one of {', '.join(sampler_names())}, got {name!r}")


def check_sampler_options(sampler: str, eta=None, options: dict | None = None) -> dict:
    """Validate the options of a sampler besides eta, before any work; the given ones.

    ``options`` holds k-diffusion's ``s_noise``, ``r``, ``solver_type`` (None entries are
    ignored): checked by :func:`specsched.theory.ksolvers.resolve_options` for its samplers;
    a discrete sampler of :data:`SAMPLERS` takes none.

    Returns
    -------
    dict
        The options given (without None entries).

    Raises
    ------
    InputError
        An option the sampler has not, or a value out of range (``param`` the option).
    """
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if sampler in PRODUCT_SAMPLERS:
        resolve_eta(sampler, eta)
    if sampler in KSAMPLERS:
        resolve_options(sampler, eta, **given)
    elif given:
        key = next(iter(given))
        raise InputError(f"{key}: sampler {sampler!r} has no {key}; it applies to "
                         "k-diffusion's samplers", param=key)
    return given


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations ``sampler`` spends in ``steps`` steps: S for the discrete samplers,
    :attr:`specsched.theory.ksolvers.KSampler.nfe` for k-diffusion's (``2 S - 1`` for the
    two-stage ones)."""
    if sampler in PRODUCT_SAMPLERS:
        return PRODUCT_SAMPLERS[sampler].nfe(int(steps))
    return KSAMPLERS[sampler].nfe(steps) if sampler in KSAMPLERS else int(steps)


def steps_within_nfe(sampler: str, budget: int) -> int:
    """The most steps whose cost (:func:`nfe_of`) fits in ``budget`` evaluations (>= 1).

    Raises
    ------
    InputError
        ``budget`` not a positive integer, or below the cost of one step (``param``
        ``"nfe"``).
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InputError(f"nfe: expected a positive integer, got {budget!r}", param="nfe")
    if nfe_of(sampler, 1) > budget:
        raise InputError(f"nfe: {sampler} needs {nfe_of(sampler, 1)} evaluation(s) for one "
                         f"step, more than {budget}", param="nfe")
    steps = 1
    while nfe_of(sampler, steps + 1) <= budget:
        steps += 1
    return steps


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """The number of steps S at which ``sampler`` spends exactly ``nfe`` network evaluations.

    S = NFE for the single-stage samplers; ``2 S - 1`` for k-diffusion's two-stage ones
    (:attr:`specsched.theory.ksolvers.KSampler.nfe_rule`), so an even budget has none.

    Raises
    ------
    InputError
        As :func:`steps_within_nfe`, or no step count costs exactly ``nfe`` (the message
        names the nearest budgets that exist).
    """
    steps = steps_within_nfe(sampler, nfe)
    if nfe_of(sampler, steps) != nfe:
        rule = (KSAMPLERS[sampler].nfe_rule if sampler in KSAMPLERS
                else PRODUCT_SAMPLERS[sampler].nfe_rule if sampler in PRODUCT_SAMPLERS
                else "one per step")
        raise InputError(f"nfe: {sampler} spends {rule}, so no step count costs {nfe} "
                         f"evaluations; the nearest are {nfe_of(sampler, steps)} or "
                         f"{nfe_of(sampler, steps + 1)}", param="nfe")
    return steps


def get_sampler(name: str) -> Sampler:
    """The :class:`Sampler` called ``name``; InputError listing the names otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        if isinstance(name, str) and name in KSAMPLERS:
            raise InputError(f"sampler: {name!r} is k-diffusion's (VE, on sigmas): its closed "
                             "form is specsched.theory.kclosed, its array sampler "
                             "specsched.sampling.ksamplers.sample_k; this takes one of "
                             f"{', '.join(SAMPLERS)}") from None
        raise InputError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}") \
            from None


def resolve_eta(sampler: str, eta: float | None = None) -> float | None:
    """Return the stochasticity eta of a named sampler.

    ``"ddim"`` defaults to eta = 0 and accepts any ``eta`` in [0, 1] (DDIM-eta);
    ``"ddpm"`` is eta = 1 (posterior variance beta-tilde); k-diffusion's ancestral and SDE
    samplers default to their function's eta (1) and accept any eta >= 0
    (:func:`specsched.theory.ksolvers.resolve_options`); the other samplers have no eta
    (returns None). Idempotent: a resolved eta resolves to itself.

    Raises
    ------
    InputError
        Unknown sampler name, eta outside [0, 1], an eta other than 1 with ``"ddpm"``, or an
        eta with a sampler that has none.
    """
    if sampler in KSAMPLERS:  # k-diffusion's eta: >= 0, only where its function has one
        return resolve_options(sampler, eta).get("eta")
    if sampler in PRODUCT_SAMPLERS:
        if eta is not None:
            raise InputError(f"eta: sampler {sampler!r} has no eta; eta applies to ddim "
                             "(DDIM-eta) and to k-diffusion's ancestral and SDE samplers",
                             param="eta")
        return None
    spec = get_sampler(sampler)
    if eta is None:
        return spec.default_eta
    if spec.default_eta is None:
        raise InputError(f"eta: sampler {sampler!r} has no eta; eta applies to ddim (DDIM-eta) "
                         "and to k-diffusion's ancestral and SDE samplers", param="eta")
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise InputError(f"eta: expected a number in [0, 1], got {eta!r}",
                         param="eta") from None
    if not np.isfinite(eta) or not (0.0 <= eta <= 1.0):
        raise InputError(f"eta: expected a number in [0, 1], got {eta!r}", param="eta")
    if not spec.eta_free and eta != spec.default_eta:
        raise InputError(
            f"eta: sampler {sampler!r} is eta = {spec.default_eta:g}; "
            f"use --sampler ddim --eta {eta:g} for DDIM-eta", param="eta"
        )
    return eta


def check_finite_start(alphas_cumprod, sampler) -> None:
    """Refuse pure noise (``ab_S = 0``, ``t_S = 1``) for a sampler that runs on sigmas:
    ``sigma_S`` is infinite there (docs/theory.md section 10).

    Raises
    ------
    InputError
        Naming the sampler and the samplers that can start from pure noise.
    """
    if np.asarray(alphas_cumprod)[-1] == 0.0:
        raise InputError(f"sampler: {sampler!r} runs on sigmas and cannot start from pure noise "
                         "(ab_S = 0, t_S = 1, sigma = inf); use fm-euler, fm-heun or a VP "
                         "sampler (ddim, ddpm), or a schedule whose last t is below 1",
                         param="sampler")


def check_init(init: str) -> str:
    """``init`` if it is one of :data:`INITS`; InputError naming the choices otherwise."""
    if init not in INITS:
        raise InputError(f"init: expected one of {INITS}, got {init!r}")
    return init


# ------------------------------------------------ from the update to the per-step linear system

def _state_gain(param: str, a):
    """Wiener gain coefficients ``(s, gamma, delta)`` of a state at VP level ``a``.

    A VE state sits at ``sigma = sqrt((1 - a)/a)``, an FM state at ``t = sigma / (1 + sigma)``;
    complex-safe.
    """
    if param == "fm":
        return wiener_gain_coefficients(_fm_times(a), param)
    return wiener_gain_coefficients(a if param == "vp" else np.sqrt((1.0 - a) / a), param)


def _scalars(spec: Sampler, a, ap, eta) -> np.ndarray:
    """The six scalars of :data:`SCALAR_ROWS` from the update (module docstring)."""
    p, r, q = spec.update(a, ap, eta)
    s, gamma, delta = _state_gain(spec.param, a)
    return np.stack(np.broadcast_arrays(p * s + r * gamma, r * delta, gamma, delta, q,
                                        p * delta))


def _previous_levels(a, ap):
    a = np.asarray(a, dtype=np.float64)
    ap = np.concatenate([[1.0], a[:-1]]) if ap is None else np.asarray(ap, dtype=np.float64)
    return a, ap


def step_scalars(spec: Sampler, alphas_cumprod, eta, ap=None) -> np.ndarray:
    """Per-step scalars ``(alpha, beta, gamma, delta, q, b)`` of a sampler on a schedule.

    Parameters
    ----------
    spec : Sampler
    alphas_cumprod : ndarray of shape (n_steps,)
        ``a_s = ab_s``, step 1 first.
    eta : float or None
        Resolved eta (:func:`resolve_eta`).
    ap : ndarray of shape (n_steps,) or None
        ``ab_{s-1}`` of each step; by default the chained ``(1, ab_1, ..., ab_{S-1})``. Explicit
        values give unchained (denoise, landing) pairs (:mod:`specsched.theory.unchained`).

    Returns
    -------
    ndarray of shape (6, n_steps), float64
        Rows :data:`SCALAR_ROWS`: ``A_s = (alpha lambda + beta) / (gamma lambda + delta)``,
        ``B_s = b / (gamma lambda + delta)``, noise variance ``q`` (module docstring).
    """
    a, ap = _previous_levels(alphas_cumprod, ap)
    return _scalars(spec, a, ap, eta)


def step_scalar_derivatives(spec: Sampler, alphas_cumprod, eta, ap=None):
    """Partial derivatives of :func:`step_scalars` in ``a = ab_s`` and in ``ap = ab_{s-1}``.

    Taken by complex step (Squire & Trapp 1998): each step's scalars depend on its own
    ``(a, ap)`` only, so perturbing every ``a`` (or every ``ap``) at once by ``i h`` gives
    every step's partial derivative, exact to rounding, for two O(S) evaluations.

    Returns
    -------
    d_da, d_dap : ndarray of shape (6, n_steps), float64
        ``d_dap`` of a step with ``ap = 1`` (the chained step 1, ``ab_0 = 1`` a constant) is
        not meaningful and is never used.
    """
    return _scalars_and_derivatives(spec, alphas_cumprod, eta, ap)[1:]


def _scalars_and_derivatives(spec: Sampler, alphas_cumprod, eta, ap=None):
    """:func:`step_scalars` and :func:`step_scalar_derivatives` from one complex evaluation:
    the real part of the ``a + i h`` half is the scalars to O(h^2) = 1e-60 (relative)."""
    a, ap = _previous_levels(alphas_cumprod, ap)
    h, n = 1e-30, a.shape[0]
    # both perturbations in one evaluation: (a + i h, ap) then (a, ap + i h)
    z = _scalars(spec, np.concatenate([a + 1j * h, a]), np.concatenate([ap, ap + 1j * h]),
                 eta)
    d = z.imag / h
    return np.ascontiguousarray(z.real[:, :n]), d[:, :n], d[:, n:]


def mobius(alpha, beta, gamma, delta, lam):
    """``A = (alpha lam + beta) / (gamma lam + delta)`` and ``1 / (gamma lam + delta)``.

    Plain arithmetic on floats or broadcasting arrays: :func:`step_gains` evaluates it on
    (n_steps, n_directions) arrays and :mod:`specsched.theory.kernels` compiles this same
    function with numba for its inner loops.

    Returns
    -------
    value, inverse_denominator : float or ndarray, broadcast shape
    """
    inv = 1.0 / (gamma * lam + delta)
    return (alpha * lam + beta) * inv, inv


def mobius_derivative(d_alpha, d_beta, d_gamma, d_delta, lam, value, inv):
    """Derivative of ``value = mobius(alpha, beta, gamma, delta, lam)[0]`` along the scalars.

    ``d value = ((d_alpha lam + d_beta) - value (d_gamma lam + d_delta)) * inv`` for the
    derivatives ``d_*`` of the four scalars and ``inv`` from :func:`mobius` (quotient rule).
    Shared by the NumPy gradient and the numba kernels like :func:`mobius`.
    """
    return ((d_alpha * lam + d_beta) - value * (d_gamma * lam + d_delta)) * inv


class StepGains(NamedTuple):
    """The per-direction linear system of each step: ``x_{s-1} = A x_s + B m + noise (q)``.

    Attributes
    ----------
    A : ndarray of shape (n_steps, n_directions), float64
        Gain on the state.
    B : ndarray of shape (n_steps, n_directions), float64
        Gain on the data mean ``m``.
    q : ndarray of shape (n_steps, 1), float64
        Variance of the injected noise (the same in every direction).
    """

    A: np.ndarray
    B: np.ndarray
    q: np.ndarray


def step_gains(eigenvalues, scalars) -> StepGains:
    """Evaluate the per-step scalars in every direction: the one evaluator of A, B and q.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    scalars : ndarray of shape (6, n_steps)
        :func:`step_scalars`.

    Returns
    -------
    StepGains
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)[None, :]
    alpha, beta, gamma, delta, q, b = (row[:, None] for row in scalars)
    A, inv = mobius(alpha, beta, gamma, delta, lam)
    return StepGains(A, b * inv, q)


def step_coefficients(eigenvalues, a: float, ap: float, eta: float | None = None,
                      sampler: str = "ddim") -> StepGains:
    """Gains ``A_s``, ``B_s`` and noise variance ``q_s`` of one reverse step.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    a, ap : float
        ``ab_s`` and ``ab_{s-1}`` with ``0 < a < ap <= 1`` (``ap = 1``: the final step).
    eta : float or None
        Stochasticity in [0, 1] (DDIM-eta only); None: the sampler's own.
    sampler : str
        A name of :data:`SAMPLERS`.

    Returns
    -------
    StepGains
        ``A``, ``B`` of shape (n_directions,), ``q`` of shape (n_directions,)
        (module docstring; docs/theory.md section 3).

    Raises
    ------
    InputError
        Unknown sampler or an eta it does not take.
    """
    spec = get_sampler(sampler)
    eta = resolve_eta(sampler, eta)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    P = step_scalars(spec, np.array([a], dtype=np.float64), eta, ap=np.array([ap], float))
    A, B, q = step_gains(lam, P)
    return StepGains(A[0], B[0], np.broadcast_to(q[0], lam.shape).copy())


# ------------------------------------------------------------------------- the linear system

@dataclass(frozen=True)
class LinearSystem:
    """A sampler on a schedule as per-step scalars and a start: all its closed form needs.

    Attributes
    ----------
    sampler : Sampler
    eta : float or None
        Resolved eta.
    init : {"normal", "marginal"}
    scalars : ndarray of shape (6, n_steps), float64
        :func:`step_scalars`.
    scalars_da, scalars_dap : ndarray of shape (6, n_steps) or None
        :func:`step_scalar_derivatives` (with ``derivatives=True``).
    start_variance : ndarray of shape (n_directions,), float64
        ``v_S``, the variance of ``x_S``.
    start_variance_d : ndarray of shape (n_directions,) or None
        ``d v_S / d ab_S``.
    mean_scale : float
        ``c_S``: the true mean at step S is ``c_S m`` (``sqrt(ab_S)`` VP, 1 VE).
    mean_scale_d : float or None
        ``d c_S / d ab_S``.
    """

    sampler: Sampler
    eta: float | None
    init: str
    scalars: np.ndarray
    scalars_da: np.ndarray | None
    scalars_dap: np.ndarray | None
    start_variance: np.ndarray
    start_variance_d: np.ndarray | None
    mean_scale: float
    mean_scale_d: float | None

    @property
    def normal(self) -> bool:
        """Whether the start is ``N(0, v_S)`` (mean error ``-c_S H m``)."""
        return self.init == "normal"


def _start(spec: Sampler, lam, ab_S, init: str):
    """``(v_S (d,), c_S)`` of the start at level ``ab_S`` (module docstring); complex-safe."""
    s, gamma, delta = _state_gain(spec.param, ab_S)
    if init == "marginal":
        return gamma * lam + delta, s
    v = delta * np.ones_like(lam) if spec.param == "ve" else np.ones_like(lam)
    return v, s


def linear_system(eigenvalues, alphas_cumprod, sampler="ddim", eta=None, init="normal",
                  derivatives: bool = False) -> LinearSystem:
    """Validate a sampler's options once and build its per-step linear system.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``ab_1 > ... > ab_S`` in (0, 1), step 1 first (trusted).
    sampler : str
        A name of :data:`SAMPLERS`.
    eta : float or None
        DDIM-eta stochasticity; None takes the sampler's own.
    init : {"normal", "marginal"}
    derivatives : bool
        Also the partial derivatives in ``alphas_cumprod`` (for gradients).

    Returns
    -------
    LinearSystem

    Raises
    ------
    InputError
        Unknown sampler or init, or an eta the sampler does not take.
    """
    spec = get_sampler(sampler)
    eta = resolve_eta(sampler, eta)
    check_init(init)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    if spec.param == "ve":
        check_finite_start(ab, sampler)
    v, c = _start(spec, lam, ab[-1], init)
    if derivatives:
        scalars, *partials = _scalars_and_derivatives(spec, ab, eta)
    else:
        scalars = step_scalars(spec, ab, eta)
    system = dict(sampler=spec, eta=eta, init=init, scalars=scalars,
                  start_variance=np.asarray(v, dtype=np.float64), mean_scale=float(c),
                  scalars_da=None, scalars_dap=None, start_variance_d=None, mean_scale_d=None)
    if derivatives:
        h = 1e-30
        vd, cd = _start(spec, lam, ab[-1] + 1j * h, init)
        system.update(zip(("scalars_da", "scalars_dap"), partials, strict=True))
        system.update(start_variance_d=np.imag(vd) / h * np.ones_like(lam),
                      mean_scale_d=float(np.imag(cd) / h))
    return LinearSystem(**system)


# ------------------------------------------------------------------------- the closed form

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
        ``mean_gen - m = mean_gain * m + mean_offset``: ``-c_S H`` for the normal start, 0
        for the marginal start.
    mean_offset : ndarray of shape (n_directions,), float64, or None
        The part of the mean error that does not scale with ``m``: a calibrated (biased)
        denoiser's bias carried to the output (:mod:`specsched.sampling.calibration`); None
        (zero) for the exact Wiener denoiser.
    """

    transfer: np.ndarray
    variance: np.ndarray
    mean_gain: np.ndarray
    mean_offset: np.ndarray | None = None

    def mean_error(self, mean) -> np.ndarray:
        """``mean_gen - m`` for the data mean ``m`` (ndarray of shape (n_directions,))."""
        error = self.mean_gain * np.asarray(mean, dtype=np.float64)
        return error if self.mean_offset is None else error + self.mean_offset


def propagate(system: LinearSystem, eigenvalues) -> GeneratedGaussian:
    """The generated Gaussian of a :class:`LinearSystem` (trusted; module docstring)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    A, _, q = step_gains(lam, system.scalars)
    v = system.start_variance
    for s in range(A.shape[0] - 1, -1, -1):  # reverse time: step S first
        v = A[s] * A[s] * v + q[s]
    H = np.prod(A, axis=0)
    gain = -system.mean_scale * H if system.normal else np.zeros_like(lam)
    return GeneratedGaussian(transfer=H, variance=v, mean_gain=gain)


def _product_closed_form(eigenvalues, alphas_cumprod, sampler, init):
    """The generated Gaussian of a product sampler (:mod:`specsched.theory.flow`): ``H = prod_s
    A_s``, ``var_gen = H^2 v_S``, ``mean_gen - m = -c_S H m`` (normal start) or 0."""
    spec = get_product_sampler(sampler)
    check_init(init)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    ap = np.concatenate([[1.0], ab[:-1]])
    H = np.prod(step_gain(spec, lam[:, None], ab, ap), axis=1)
    v, c = _start(spec, lam, ab[-1], init)
    gain = -c * H if init == "normal" else np.zeros_like(lam)
    return GeneratedGaussian(transfer=H, variance=H * H * v, mean_gain=gain)


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
        A name of :data:`SAMPLERS` ("ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve",
        "fm-euler") or of :data:`specsched.theory.flow.PRODUCT_SAMPLERS` ("fm-heun": the
        product of its step gains, docs/theory.md section 10).
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
    if sampler in PRODUCT_SAMPLERS:
        resolve_eta(sampler, eta)
        return _product_closed_form(eigenvalues, alphas_cumprod, sampler, init)
    return propagate(linear_system(eigenvalues, alphas_cumprod, sampler, eta, init),
                     eigenvalues)


def forward_pass(A, q, start_variance, mean_scale, normal: bool):
    """The generated Gaussian of per-step gains, keeping what the adjoint needs.

    Parameters
    ----------
    A : ndarray of shape (n_steps, n_directions)
        Gains ``A_s`` (array row s is step s + 1).
    q : ndarray of shape (n_steps, 1) or (n_steps, n_directions)
        Injected noise variances.
    start_variance : ndarray of shape (n_directions,)
        ``v_S``.
    mean_scale : float or ndarray of shape (n_directions,)
        ``c_S``, the true mean's scale at step S.
    normal : bool
        Normal start (mean error ``-c_S H m``) or the marginal (none).

    Returns
    -------
    gen : GeneratedGaussian
    v_in : ndarray of shape (n_steps, n_directions)
        The variance entering each array step.
    prefix : ndarray of shape (n_steps, n_directions)
        ``prod_{j<s} A_j``: the gain of the steps run after array step s.
    """
    S, d = A.shape
    v_in = np.empty((S, d))  # v_in[s]: the variance entering array step s (step s + 1)
    v = start_variance
    for s in range(S - 1, -1, -1):  # reverse time: step S first
        v_in[s] = v
        v = A[s] * A[s] * v + q[s]
    prefix = np.cumprod(np.vstack([np.ones((1, d)), A[:-1]]), axis=0)
    H = prefix[-1] * A[-1]
    gain = -mean_scale * H if normal else np.zeros(d)
    return GeneratedGaussian(transfer=H, variance=v, mean_gain=gain), v_in, prefix


def gain_adjoint(A, v_in, prefix, mean_scale, normal: bool, grad_variance, grad_mean_gain):
    """Reverse mode of :func:`forward_pass`: ``dL/dA`` and ``dL/dq`` per step and direction.

    The adjoint of ``v_{s-1} = A_s^2 v_s + q_s`` and, for the normal start, of
    ``mean_gain = -c_S prod_j A_j`` (product rule); docs/theory.md section 5.

    Returns
    -------
    dL_dA, dL_dq : ndarray of shape (n_steps, n_directions)
    """
    d = A.shape[1]
    w_out = grad_variance * prefix * prefix  # dL / d(variance leaving array step s) = dL/dq
    dL_dA = w_out * 2.0 * A * v_in
    if normal:
        # mean_gain = -c_S prod_j A_j; d/dA_s = -c_S prod_{j != s} A_j
        suffix = np.vstack([np.cumprod(A[::-1], axis=0)[::-1][1:], np.ones((1, d))])
        dL_dA += grad_mean_gain * (-mean_scale) * prefix * suffix
    return dL_dA, w_out


def propagate_vjp(system: LinearSystem, eigenvalues, loss_partials):
    """:func:`closed_form_vjp` on a :class:`LinearSystem` built with ``derivatives=True``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    P, Da, Dap = system.scalars, system.scalars_da, system.scalars_dap
    S = P.shape[1]
    lam_ = lam[None, :]

    def rows(M):
        return tuple(row[:, None] for row in M)

    alpha, beta, gamma, delta, q, _ = rows(P)
    A, inv = mobius(alpha, beta, gamma, delta, lam_)
    dA_da = mobius_derivative(*rows(Da)[:4], lam_, A, inv)
    dA_dap = mobius_derivative(*rows(Dap)[:4], lam_, A, inv)
    dq_da, dq_dap = Da[4][:, None], Dap[4][:, None]
    c_S, normal = system.mean_scale, system.normal
    out, v_in, prefix = forward_pass(A, q, system.start_variance, c_S, normal)
    value, grad_variance, grad_mean_gain = loss_partials(out)
    dL_dA, w_out = gain_adjoint(A, v_in, prefix, c_S, normal, grad_variance, grad_mean_gain)
    H = out.transfer
    grad = np.zeros(S)
    if normal:
        grad[-1] += np.sum(grad_mean_gain * (-system.mean_scale_d) * H)
    grad[-1] += np.sum(grad_variance * H * H * system.start_variance_d)  # v_S depends on ab_S
    grad += np.sum(dL_dA * dA_da + w_out * dq_da, axis=1)
    grad[:-1] += np.sum(dL_dA[1:] * dA_dap[1:] + w_out[1:] * dq_dap[1:], axis=1)
    return value, out, grad


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

    Raises
    ------
    InputError
        As :func:`closed_form`.
    """
    system = linear_system(eigenvalues, alphas_cumprod, sampler, eta, init, derivatives=True)
    return propagate_vjp(system, eigenvalues, loss_partials)
