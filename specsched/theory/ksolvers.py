r"""k-diffusion's samplers, each written once as a step over a small interface.

Every sampler of k-diffusion 0.1.1.post1 (``k_diffusion/sampling.py``) that combines denoiser
outputs linearly is transcribed here as one function ``step(kit, i, x, history)`` running its
loop body for iteration ``i`` (docs/theory.md section 3), and so is diffusers 0.42's
``UniPCMultistepScheduler.step`` (``unipc``, converted exactly from its VP states to VE; its
start is diffusers' ``N(0, 1)`` in VP, :attr:`KSampler.param`). The same function drives

- the closed form (:mod:`specsched.theory.kclosed`): ``x`` and ``history`` are affine
  combinations of the step's inputs and noise draws, from which the step's matrices are read;
- the torch-free Monte Carlo sampler (:mod:`specsched.sampling.ksamplers`): ``x`` is an array
  of samples.

Conventions (k-diffusion's): VE states ``x = x0 + sigma eps``; ``sigmas`` is the 1-D array
``(sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0)`` in sampling order (largest first,
final 0); iteration ``i`` goes from ``sigmas[i]`` to ``sigmas[i + 1]``; the start is
``x ~ N(0, sigmas[0]^2)``. From a schedule ``alphas_cumprod`` (step 1 the least noisy):
``sigmas = (sigma_S, ..., sigma_1, 0)`` with ``sigma_s = sqrt((1 - ab_s) / ab_s)``.

The kit (duck-typed) provides

- ``kit.sigmas``: the array above (float, or complex when differentiated by complex step);
- ``kit.options``: the sampler's options (``eta``, ``s_noise``, ``r``, ``solver_type``,
  ``order``), defaults those of the k-diffusion function (:data:`KSAMPLERS`);
- ``kit.model(x, sigma)``: the denoiser's prediction of ``x0``;
- ``kit.noise(sigma, sigma_next)``: a standard normal draw shaped like ``x``, as k-diffusion's
  ``noise_sampler(sigma, sigma_next)``: independent draws (``default_noise_sampler``) or
  the scaled increments ``(W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|`` of one
  Brownian motion in sigma (``BrownianTreeNoiseSampler``, the default of ``dpmpp-sde``,
  ``dpmpp-2m-sde``, ``dpmpp-3m-sde``), per :attr:`KSampler.noise`.

``history`` is the tuple of earlier denoiser outputs (or derivatives) a multistep method
carries to the next iteration; schedule-derived scalars (``h_last``) are recomputed from
``sigmas``. Branch decisions test only the final 0, the history's length or the options,
never a perturbed value, so a complex-step perturbation follows the same branch, and the
closed form may run a batch of iterations that take the same branches at once (``i`` then an
array of iteration indices, ``kit.sigmas[i + o]`` a column of levels). Scalars are computed
with NumPy functions (complex-safe) and ``_cmin`` (the real part decides, as ``min`` would).

Sources: Karras et al. 2022, Algorithm 2 (euler, heun, dpm-2); Lu et al. 2022 (DPM-Solver-2,
DPM-Solver++ 2S/2M); k-diffusion's ``sample_*`` functions for the exact step rules, the
first-order steps they take (onto sigma = 0, at the first multistep iteration) and their
defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from specsched.errors import InputError

__all__ = [
    "KSAMPLERS",
    "KSampler",
    "ancestral_step",
    "get_ksampler",
    "lms_coefficients",
    "resolve_options",
]


def _cmin(a, b):
    """``min(a, b)`` deciding on real parts, elementwise (complex-step safe)."""
    return np.where(np.real(a) <= np.real(b), a, b)


def _is_zero(value) -> bool:
    """Whether ``value`` is 0 (every entry, for the closed form's batch of iterations, which
    only ever batches iterations that take the same branch)."""
    return bool(np.all(np.real(value) == 0.0))


def ancestral_step(sigma_from, sigma_to, eta):
    """k-diffusion's ``get_ancestral_step``: ``(sigma_down, sigma_up)`` of an ancestral step.

    ``sigma_up = min(sigma_to, eta sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2)/sigma_from^2))``,
    ``sigma_down = sqrt(sigma_to^2 - sigma_up^2)``; eta = 0 gives ``(sigma_to, 0)``.
    """
    if not eta:
        return sigma_to, 0.0 * sigma_to
    up = _cmin(sigma_to, eta * np.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2)
                                       / sigma_from**2))
    return np.sqrt(sigma_to**2 - up**2), up


def _to_d(x, sigma, denoised):
    """k-diffusion's ``to_d``: the Karras ODE derivative ``(x - denoised) / sigma``."""
    return (x - denoised) * (1.0 / sigma)


def _t(sigma):
    return -np.log(sigma)


def _sigma(t):
    return np.exp(-t)


# Gauss-Legendre nodes integrate the Lagrange basis (degree < order) exactly.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def lms_coefficients(order: int, sigmas, i: int):
    """Coefficients of k-diffusion's ``linear_multistep_coeff`` for iteration ``i``.

    ``c_j = int_{sigma_i}^{sigma_{i+1}} prod_{k != j} (tau - sigma_{i-k}) /
    (sigma_{i-j} - sigma_{i-k}) d tau`` for ``j = 0..order-1`` (the Adams-Bashforth weights on
    the uneven grid). k-diffusion integrates with ``scipy.integrate.quad``; the integrand is
    a polynomial of degree < order, which 8-point Gauss-Legendre integrates exactly
    (complex-safe; ``sigmas[i]`` may be a column of several iterations' levels).
    """
    a, b = sigmas[i], sigmas[i + 1]
    tau = 0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)
    out = []
    for j in range(order):
        prod = np.ones_like(tau)
        for k in range(order):
            if k != j:
                prod = prod * (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        out.append(0.5 * (b - a) * np.sum(_GL_WEIGHTS * prod, axis=-1, keepdims=True))
    return out


# ------------------------------------------------------------------ the steps (one per sampler)

def _euler(kit, i, x, history):
    """``sample_euler`` (s_churn = 0): ``x + d (sigma_{i+1} - sigma_i)``."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    denoised = kit.model(x, s)
    return x + _to_d(x, s, denoised) * (s_next - s), ()


def _euler_ancestral(kit, i, x, history):
    """``sample_euler_ancestral``: Euler to sigma_down, then noise of sigma_up."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    eta, s_noise = kit.options["eta"], kit.options["s_noise"]
    denoised = kit.model(x, s)
    down, up = ancestral_step(s, s_next, eta)
    x = x + _to_d(x, s, denoised) * (down - s)
    if not _is_zero(s_next):
        x = x + kit.noise(s, s_next) * (s_noise * up)
    return x, ()


def _heun(kit, i, x, history):
    """``sample_heun`` (s_churn = 0): Heun's method, Euler onto sigma = 0."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    denoised = kit.model(x, s)
    d = _to_d(x, s, denoised)
    dt = s_next - s
    if _is_zero(s_next):
        return x + d * dt, ()
    x_2 = x + d * dt
    d_2 = _to_d(x_2, s_next, kit.model(x_2, s_next))
    return x + (d + d_2) * (0.5 * dt), ()


def _dpm_2(kit, i, x, history):
    """``sample_dpm_2`` (s_churn = 0): midpoint in log sigma, Euler onto sigma = 0."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    denoised = kit.model(x, s)
    d = _to_d(x, s, denoised)
    if _is_zero(s_next):
        return x + d * (s_next - s), ()
    s_mid = np.exp(0.5 * (np.log(s) + np.log(s_next)))  # log(s).lerp(log(s_next), 0.5).exp()
    x_2 = x + d * (s_mid - s)
    d_2 = _to_d(x_2, s_mid, kit.model(x_2, s_mid))
    return x + d_2 * (s_next - s), ()


def _dpm_2_ancestral(kit, i, x, history):
    """``sample_dpm_2_ancestral``: DPM-Solver-2 to sigma_down, then noise of sigma_up."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    eta, s_noise = kit.options["eta"], kit.options["s_noise"]
    denoised = kit.model(x, s)
    down, up = ancestral_step(s, s_next, eta)
    d = _to_d(x, s, denoised)
    if _is_zero(down):
        return x + d * (down - s), ()
    s_mid = np.exp(0.5 * (np.log(s) + np.log(down)))
    x_2 = x + d * (s_mid - s)
    d_2 = _to_d(x_2, s_mid, kit.model(x_2, s_mid))
    x = x + d_2 * (down - s)
    return x + kit.noise(s, s_next) * (s_noise * up), ()


def _lms(kit, i, x, history):
    """``sample_lms`` (order 4 by default): linear multistep on the derivatives ``d``.

    ``history`` holds the last ``order - 1`` derivatives, newest first.
    """
    order = kit.options["order"]
    s = kit.sigmas[i]
    d = _to_d(x, s, kit.model(x, s))
    ds = (d, *history)  # newest first: reversed(ds) in k-diffusion
    cur = min(len(ds), order)  # = min(i + 1, order): history holds min(i, order - 1)
    coeffs = lms_coefficients(cur, kit.sigmas, i)
    step = ds[0] * coeffs[0]
    for c, dj in zip(coeffs[1:], ds[1:cur], strict=True):
        step = step + dj * c
    return x + step, ds[: order - 1]


def _dpmpp_2s_ancestral(kit, i, x, history):
    """``sample_dpmpp_2s_ancestral``: DPM-Solver++(2S) to sigma_down, then noise of sigma_up."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    eta, s_noise = kit.options["eta"], kit.options["s_noise"]
    denoised = kit.model(x, s)
    down, up = ancestral_step(s, s_next, eta)
    if _is_zero(down):
        x = x + _to_d(x, s, denoised) * (down - s)
    else:
        t, t_next = _t(s), _t(down)
        r = 0.5
        h = t_next - t
        s_ = t + r * h
        x_2 = x * (_sigma(s_) / _sigma(t)) - denoised * np.expm1(-h * r)
        denoised_2 = kit.model(x_2, _sigma(s_))
        x = x * (_sigma(t_next) / _sigma(t)) - denoised_2 * np.expm1(-h)
    if not _is_zero(s_next):
        x = x + kit.noise(s, s_next) * (s_noise * up)
    return x, ()


def _dpmpp_sde(kit, i, x, history):
    """``sample_dpmpp_sde`` (r = 1/2): two DPM-Solver++ stages with Brownian noise."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    eta, s_noise, r = kit.options["eta"], kit.options["s_noise"], kit.options["r"]
    denoised = kit.model(x, s)
    if _is_zero(s_next):
        return x + _to_d(x, s, denoised) * (s_next - s), ()
    t, t_next = _t(s), _t(s_next)
    h = t_next - t
    s_t = t + h * r
    fac = 1.0 / (2.0 * r)
    # stage 1
    sd, su = ancestral_step(_sigma(t), _sigma(s_t), eta)
    s_ = _t(sd)
    x_2 = x * (_sigma(s_) / _sigma(t)) - denoised * np.expm1(t - s_)
    x_2 = x_2 + kit.noise(_sigma(t), _sigma(s_t)) * (s_noise * su)
    denoised_2 = kit.model(x_2, _sigma(s_t))
    # stage 2
    sd, su = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_next_ = _t(sd)
    denoised_d = denoised * (1.0 - fac) + denoised_2 * fac
    x = x * (_sigma(t_next_) / _sigma(t)) - denoised_d * np.expm1(t - t_next_)
    return x + kit.noise(_sigma(t), _sigma(t_next)) * (s_noise * su), ()


def _dpmpp_2m(kit, i, x, history):
    """``sample_dpmpp_2m``: DPM-Solver++(2M); first order at i = 0 and onto sigma = 0.

    ``history`` = ``(old_denoised,)`` after the first iteration.
    """
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    denoised = kit.model(x, s)
    if _is_zero(s_next):  # sigma_fn(t_next) = 0 and expm1(-h) = -1
        return denoised, (denoised,)
    t, t_next = _t(s), _t(s_next)
    h = t_next - t
    if not history:
        x = x * (_sigma(t_next) / _sigma(t)) - denoised * np.expm1(-h)
    else:
        h_last = t - _t(kit.sigmas[i - 1])
        r = h_last / h
        denoised_d = denoised * (1.0 + 1.0 / (2.0 * r)) - history[0] * (1.0 / (2.0 * r))
        x = x * (_sigma(t_next) / _sigma(t)) - denoised_d * np.expm1(-h)
    return x, (denoised,)


def _dpmpp_2m_sde(kit, i, x, history):
    """``sample_dpmpp_2m_sde`` (eta = 1, midpoint): denoising step onto sigma = 0."""
    s, s_next = kit.sigmas[i], kit.sigmas[i + 1]
    eta, s_noise = kit.options["eta"], kit.options["s_noise"]
    solver_type = kit.options["solver_type"]
    denoised = kit.model(x, s)
    if _is_zero(s_next):
        return denoised, (denoised,)
    t, t_s = -np.log(s), -np.log(s_next)
    h = t_s - t
    eta_h = eta * h
    x = x * (s_next / s * np.exp(-eta_h)) + denoised * (-np.expm1(-h - eta_h))
    if history:
        h_last = t - (-np.log(kit.sigmas[i - 1]))
        r = h_last / h
        if solver_type == "heun":
            c = ((-np.expm1(-h - eta_h)) / (-h - eta_h) + 1.0) * (1.0 / r)
        else:
            c = 0.5 * (-np.expm1(-h - eta_h)) * (1.0 / r)
        x = x + (denoised - history[0]) * c
    if eta:
        x = x + kit.noise(s, s_next) * (s_next * np.sqrt(-np.expm1(-2.0 * eta_h)) * s_noise)
    return x, (denoised,)


def _dpmpp_3m_sde(kit, i, x, history):
    """``sample_dpmpp_3m_sde`` (eta = 1): third order from the second iteration on.

    ``history`` = ``(denoised_1, denoised_2)``, newest first (as many as exist).
    """
    sig = kit.sigmas
    s, s_next = sig[i], sig[i + 1]
    eta, s_noise = kit.options["eta"], kit.options["s_noise"]
    denoised = kit.model(x, s)
    if _is_zero(s_next):
        return denoised, (denoised, *history[:1])
    h = -np.log(s_next) + np.log(s)
    h_eta = h * (eta + 1.0)
    x = x * np.exp(-h_eta) + denoised * (-np.expm1(-h_eta))
    phi_2 = np.expm1(-h_eta) / h_eta + 1.0
    if len(history) >= 2:
        h_1 = np.log(sig[i - 1]) - np.log(s)
        h_2 = np.log(sig[i - 2]) - np.log(sig[i - 1])
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - history[0]) * (1.0 / r0)
        d1_1 = (history[0] - history[1]) * (1.0 / r1)
        d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
        d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1))
        phi_3 = phi_2 / h_eta - 0.5
        x = x + d1 * phi_2 - d2 * phi_3
    elif history:
        h_1 = np.log(sig[i - 1]) - np.log(s)
        x = x + (denoised - history[0]) * (phi_2 / (h_1 / h))
    if eta:
        x = x + kit.noise(s, s_next) * (s_next * np.sqrt(-np.expm1(-2.0 * h * eta)) * s_noise)
    return x, (denoised, *history[:1])


def _unipc_orders(n_steps: int, j: int) -> int:
    """Order of diffusers' UniPC predictor at iteration ``j`` (solver_order = 2, defaults).

    ``min(solver_order, len(timesteps) - j)`` (``lower_order_final``), then
    ``min(., lower_order_nums + 1)`` (the warm-up): ``min(2, S - j, j + 1)``.
    """
    return min(2, n_steps - j, j + 1)


def _unipc_b(h, order: int):
    """``(hh, h_phi_1, B_h, b)`` of diffusers' UniPC-bh2 with ``predict_x0``: ``hh = -h``,
    ``h_phi_1 = B_h = expm1(hh)`` and ``b_k = k! h_phi_k / B_h`` (``k = 1..order``), the
    loop of ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update``."""
    hh = -h
    h_phi_1 = np.expm1(hh)
    b_h = np.expm1(hh)  # solver_type "bh2"
    h_phi_k = h_phi_1 / hh - 1.0
    factorial, b = 1, []
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, b


def _unipc(kit, i, x, history):
    r"""diffusers' ``UniPCMultistepScheduler()`` step (default configuration), in VE.

    diffusers 0.42's defaults: ``solver_order=2``, ``prediction_type="epsilon"``,
    ``predict_x0=True``, ``solver_type="bh2"``, ``lower_order_final=True``,
    ``disable_corrector=[]``, ``final_sigmas_type="zero"``, no thresholding. Its VP state
    ``x_vp = alpha x0 + sigma_vp eps`` is converted exactly to VE, ``x = x_vp / alpha``
    (``sigma = sigma_vp / alpha``, ``lambda = log(alpha / sigma_vp) = -log sigma``): dividing
    diffusers' update ``x_t = sigma_vp_t / sigma_vp_s x_s - alpha_t (h_phi_1 m0 + B_h res)`` by
    ``alpha_t`` gives ``x_t = sigma_t / sigma_s x_s - h_phi_1 m0 - B_h res`` on VE states. The
    epsilon output of the network is turned into ``x0`` by diffusers' ``convert_model_output``,
    so ``m`` here is the denoiser ``kit.model`` itself. The start is diffusers' ``x_vp ~ N(0,
    1)`` (``init_noise_sigma = 1``), i.e. ``N(0, 1 + sigma_0^2)`` in VE
    (:attr:`KSampler.start` ``"vp"``).

    Iteration ``i`` is one ``scheduler.step``: ``x`` is the predictor's output ``x_i``
    (uncorrected), ``history = (last_sample, m_{i-1}, m_{i-2})`` (as many as exist), with
    ``last_sample`` the corrected ``x_{i-1}``. The model is called once, at the predicted
    ``x_i``; for ``i > 0`` the corrector UniC (``multistep_uni_c_bh_update``, of the order
    the previous predictor had) re-does the step ``sigma_{i-1} -> sigma_i`` from
    ``last_sample`` with that output; the predictor UniP (``multistep_uni_p_bh_update``, order
    :func:`_unipc_orders`: 1 at the first and the last step) goes from the corrected ``x_i``
    to ``sigma_{i+1}``; onto sigma = 0 (``h`` infinite, ``h_phi_1 = B_h = -1``) it returns
    ``m_i``. Sources: Zhao et al. 2023 (UniPC), Algorithm 2 with B(h) = e^h - 1; diffusers
    0.42.1 ``scheduling_unipc_multistep.py`` for the exact rule.
    """
    sig = kit.sigmas
    n_steps = len(sig) - 1
    i0 = int(np.ravel(i)[0])  # branch decisions: the closed form batches iterations alike
    s, s_next = sig[i], sig[i + 1]
    m = kit.model(x, s)  # at the predicted (uncorrected) x_i
    if i0 > 0:  # UniC: correct x_i from last_sample = corrected x_{i-1}
        last, m_prev = history[0], history[1]
        order_c = _unipc_orders(n_steps, i0 - 1)
        h = np.log(sig[i - 1]) - np.log(s)  # lambda_i - lambda_{i-1}
        h_phi_1, b_h, b = _unipc_b(h, order_c)
        if order_c == 1:
            corr = (m - m_prev) * 0.5
        else:  # solve [[1, 1], [r1, 1]] rho = b
            r1 = (np.log(sig[i - 1]) - np.log(sig[i - 2])) / h  # (lambda_{i-2} - lambda_{i-1})/h
            rho_0 = (b[0] - b[1]) / (1.0 - r1)
            rho_1 = b[0] - rho_0
            corr = (history[2] - m_prev) * (rho_0 / r1) + (m - m_prev) * rho_1
        x = last * (s / sig[i - 1]) - m_prev * h_phi_1 - corr * b_h
    order_p = _unipc_orders(n_steps, i0)
    new_history = (x, m, *history[1:2])
    if _is_zero(s_next):  # sigma_t = 0, alpha_t = 1: h_phi_1 = B_h = -1, order 1
        return m, new_history
    h = np.log(s) - np.log(s_next)  # lambda_{i+1} - lambda_i
    h_phi_1, b_h, _ = _unipc_b(h, order_p)
    x_next = x * (s_next / s) - m * h_phi_1
    if order_p == 2:  # rhos_p = 0.5, D1 = (m_{i-1} - m_i) / r1
        r1 = (np.log(s) - np.log(sig[i - 1])) / h
        x_next = x_next - (history[1] - m) * (0.5 / r1 * b_h)
    return x_next, new_history


# ----------------------------------------------------------------------------------- registry

def _one_per_step(n_steps: int) -> int:
    return n_steps


def _two_but_last(n_steps: int) -> int:
    return 2 * n_steps - 1


@dataclass(frozen=True)
class KSampler:
    """A k-diffusion sampler: its step, options, noise and cost.

    Attributes
    ----------
    name : str
        Command-line name (k-diffusion's function without ``sample_``, ``_`` as ``-``).
    function : str
        The k-diffusion function it reproduces (``sample_dpmpp_2m``, ...).
    step : callable
        ``step(kit, i, x, history) -> (x, history)`` (module docstring).
    stencil : tuple of int
        Offsets ``o`` such that iteration ``i`` reads ``sigmas[i + o]`` (for the gradient).
    defaults : dict
        Options of the function with their default values (``eta``, ``s_noise``, ``r``,
        ``solver_type``, ``order``); only these are accepted.
    noise : {"none", "iid", "brownian"}
        What ``kit.noise`` draws (module docstring).
    nfe_rule : str
        How many network evaluations S steps cost, in words.
    nfe : callable
        ``nfe(n_steps) -> int``.
    description : str
    param : {"ve", "vp"}
        The library's states: ``"ve"`` (k-diffusion's; start ``x ~ N(0, sigma_0^2)``) or
        ``"vp"`` (diffusers' ``unipc``: ``x_vp = x / sqrt(1 + sigma^2)``, start ``x_vp ~
        N(0, 1)``, i.e. ``N(0, 1 + sigma_0^2)`` for the VE state the step runs on). The step
        itself always runs on VE states (module docstring).
    library : {"k-diffusion", "diffusers"}
        Whose code ``function`` names (k-diffusion 0.1.1.post1's ``sampling.py``, or a
        diffusers 0.42 scheduler class), the specification the tests prove it against.
    warmup : int
        Leading iterations whose branches differ from the later ones' (a multistep history
        still growing: 0 for one-step samplers, 1 for the 2M samplers, up to 3); the closed
        form runs each alone, the last iteration (onto sigma = 0) alone and all others as
        one batch.
    calls : int
        Denoiser calls one step makes at most (1, or 2 for the two-stage samplers): the
        compiled closed form traces a step on the ``2^calls`` corners of their gains.
    """

    name: str
    function: str
    step: Callable
    stencil: tuple
    defaults: dict = field(default_factory=dict)
    noise: str = "none"
    nfe_rule: str = "one per step"
    nfe: Callable = _one_per_step
    description: str = ""
    param: str = "ve"
    library: str = "k-diffusion"
    warmup: int = 0
    calls: int = 1

    def start_std(self, sigma_0):
        """Standard deviation of the VE start ``x`` at ``sigma_0``: ``sigma_0`` (``"ve"``) or
        ``sqrt(1 + sigma_0^2)`` (``"vp"``: diffusers' ``N(0, 1)`` over ``alpha_0``)."""
        return np.sqrt(1.0 + sigma_0 * sigma_0) if self.param == "vp" else sigma_0

    @property
    def stochastic(self) -> bool:
        """Whether the sampler draws noise with its default options."""
        return self.noise != "none" and self.defaults.get("eta", 0.0) != 0.0


_ANCESTRAL = {"eta": 1.0, "s_noise": 1.0}
_TWO = "two per step (the second at the next level), one on the last step (onto sigma = 0)"

KSAMPLERS: dict[str, KSampler] = {k.name: k for k in (
    KSampler("euler", "sample_euler", _euler, (0, 1), {},
             description="Euler on the probability-flow ODE in sigma (Karras et al. 2022 Alg. 2)"),
    KSampler("euler-ancestral", "sample_euler_ancestral", _euler_ancestral, (0, 1),
             dict(_ANCESTRAL), "iid", description="Euler to sigma_down plus noise sigma_up"),
    KSampler("heun", "sample_heun", _heun, (0, 1), {}, nfe_rule=_TWO, nfe=_two_but_last,
             description="Heun (2nd order) on the ODE, Euler onto sigma = 0", calls=2),
    KSampler("dpm-2", "sample_dpm_2", _dpm_2, (0, 1), {}, nfe_rule=_TWO.replace(
        "at the next level", "at the log-midpoint"), nfe=_two_but_last,
        description="DPM-Solver-2 (midpoint in log sigma), Euler onto sigma = 0", calls=2),
    KSampler("dpm-2-ancestral", "sample_dpm_2_ancestral", _dpm_2_ancestral, (0, 1),
             dict(_ANCESTRAL), "iid", _TWO.replace("at the next level", "at the log-midpoint"),
             _two_but_last, "DPM-Solver-2 to sigma_down plus noise sigma_up", calls=2),
    KSampler("lms", "sample_lms", _lms, (-3, -2, -1, 0, 1), {"order": 4},
             description="linear multistep (Adams-Bashforth in sigma, order 4)", warmup=3),
    KSampler("dpmpp-2s-ancestral", "sample_dpmpp_2s_ancestral", _dpmpp_2s_ancestral, (0, 1),
             dict(_ANCESTRAL), "iid", _TWO.replace("at the next level", "at the log-midpoint"),
             _two_but_last, "DPM-Solver++(2S) to sigma_down plus noise sigma_up", calls=2),
    KSampler("dpmpp-sde", "sample_dpmpp_sde", _dpmpp_sde, (0, 1),
             {"eta": 1.0, "s_noise": 1.0, "r": 0.5}, "brownian",
             _TWO.replace("at the next level", "at t + r h"), _two_but_last,
             "DPM-Solver++ SDE (two stages, Brownian-tree noise)", calls=2),
    KSampler("dpmpp-2m", "sample_dpmpp_2m", _dpmpp_2m, (-1, 0, 1), {},
             description="DPM-Solver++(2M), first order at the first step and onto sigma = 0",
             warmup=1),
    KSampler("dpmpp-2m-sde", "sample_dpmpp_2m_sde", _dpmpp_2m_sde, (-1, 0, 1),
             {"eta": 1.0, "s_noise": 1.0, "solver_type": "midpoint"}, "brownian",
             description="DPM-Solver++(2M) SDE (Brownian-tree noise)", warmup=1),
    KSampler("dpmpp-3m-sde", "sample_dpmpp_3m_sde", _dpmpp_3m_sde, (-2, -1, 0, 1),
             {"eta": 1.0, "s_noise": 1.0}, "brownian",
             description="DPM-Solver++(3M) SDE (Brownian-tree noise)", warmup=2),
    KSampler("unipc", "UniPCMultistepScheduler", _unipc, (-2, -1, 0, 1), {},
             nfe_rule="one per step (the corrector reuses the next step's evaluation)",
             description="diffusers' UniPC (bh2, order 2, predictor-corrector; default "
                         "config) on exported timesteps, start N(0, 1) in VP",
             param="vp", library="diffusers", warmup=3),
)}


def get_ksampler(name: str) -> KSampler:
    """The :class:`~specsched.theory.ksolvers.KSampler` called ``name``; InputError otherwise."""
    try:
        return KSAMPLERS[name]
    except (KeyError, TypeError):
        raise InputError(f"sampler: expected one of {list(KSAMPLERS)}, got {name!r}") from None


def resolve_options(sampler: str, eta=None, **options) -> dict:
    """The options of a k-diffusion sampler: its defaults updated by those given (not None).

    Parameters
    ----------
    sampler : str
        A name of :data:`~specsched.theory.ksolvers.KSAMPLERS`.
    eta : float or None
        Ancestral / SDE noise scale, ``>= 0`` (k-diffusion's ``eta``).
    **options
        ``s_noise`` (>= 0), ``r`` (in (0, 1), ``dpmpp-sde``), ``solver_type``
        (``"midpoint"`` or ``"heun"``, ``dpmpp-2m-sde``); None entries are ignored.

    Returns
    -------
    dict
        Every option of the sampler, resolved.

    Raises
    ------
    InputError
        An option the sampler's k-diffusion function does not take, or a value out of
        range (``param`` the option's name).
    """
    spec = get_ksampler(sampler)
    given = {k: v for k, v in dict(options, eta=eta).items() if v is not None}
    out = dict(spec.defaults)
    for key, value in given.items():
        if key not in spec.defaults:
            takes = [k for k, s in KSAMPLERS.items() if key in s.defaults]
            raise InputError(f"{key}: sampler {sampler!r} ({spec.function}) has no {key}; "
                             f"{key} applies to {', '.join(takes) or 'no k-diffusion sampler'}",
                             param=key)
        if key == "order":
            if isinstance(value, bool) or value not in (1, 2, 3, 4):
                raise InputError(f"order: expected an integer 1 to 4 (k-diffusion's lms), got "
                                 f"{value!r}", param=key)
            value = int(value)
        elif key == "solver_type":
            if value not in ("midpoint", "heun"):
                raise InputError(f"{key}: expected 'midpoint' or 'heun', got {value!r}",
                                 param=key)
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{key}: expected a number, got {value!r}",
                                 param=key) from None
            low_ok = value > 0.0 if key == "r" else value >= 0.0
            if not (np.isfinite(value) and low_ok and (key != "r" or value < 1.0)):
                want = "a number in (0, 1)" if key == "r" else "a finite number >= 0"
                raise InputError(f"{key}: expected {want}, got {value!r}", param=key)
        out[key] = value
    return out
