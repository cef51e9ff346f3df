r"""DDIM-eta when the denoised level and the landing level do not chain (diffusers' DDIM).

Notation (docs/theory.md sections 1-3). A chained sampler denoises step s at ``ab_s`` and lands
on ``ab_{s-1}``, the level the next step denoises at. diffusers' ``DDIMScheduler.step``
instead lands on ``alphas_cumprod[t - T // S]`` (``prev_timestep = timestep -
num_train_timesteps // num_inference_steps``), which for ``linspace`` spacing (and
``trailing`` when S does not divide T) is not the next grid timestep (diffusers issues
11347, 12633). The next step then tells the denoiser a level ``a_{s-1}`` that differs from
the level ``ap_s`` x actually sits at.

Here step s is any pair ``(a_s, ap_s)``: the Wiener denoiser is evaluated at ``a_s`` and the
DDIM-eta update (Song et al. 2021, eq. 12; docs/theory.md section 3) lands on ``ap_s``. In each
eigen-direction, with ``g_s = sqrt(a) lam / (a lam + 1 - a)`` and
``c_s = sqrt((1 - ap - sig_s^2) / (1 - a))``:

    x0_hat  = g_s x + (1 - g_s sqrt(a)) m
    x_new   = (sqrt(ap) - c_s sqrt(a)) x0_hat + c_s x + sig_s z
            = A_s x + B_s m + sig_s z,
    A_s     = (sqrt(ap a) lam + c_s (1 - a)) / (a lam + 1 - a)
    B_s     = (sqrt(ap) - c_s sqrt(a)) (1 - g_s sqrt(a)),

the DDIM-eta update of :mod:`specsched.theory.samplers` with the Wiener denoiser substituted:
``A_s``, ``B_s`` and ``sig_s^2`` come from its :func:`~specsched.theory.samplers.step_scalars`
(given the landing levels) and :func:`~specsched.theory.samplers.step_gains`.

From ``x_S ~ N(0, 1)`` the generated mean is ``M_0 m`` with ``M <- A_s M + B_s`` from
``M = 0`` (step S first), and the variance ``v <- A_s^2 v + sig_s^2`` from ``v = 1``. The
chained identity ``M_0 = 1 - sqrt(ab_S) H`` holds only when ``ap_s = a_{s-1}``.

diffusers' ``DDPMScheduler`` chains its steps (``previous_timestep`` is the next timestep of
the list), but its noise differs from Ho et al.'s on the final step. ``step`` adds
``sqrt(variance) z`` whenever ``t > 0``, and on the final step (``prev_t = -1``,
``alpha_prod_t_prev = 1``) ``variance_type="fixed_large"`` gives ``variance = current_beta_t =
1 - ab_1``, where Ho et al. (and specsched's ``ddpm-large``) add none; ``"fixed_small"`` gives
``beta-tilde = 0`` there (clamped to 1e-20), specsched's ``ddpm``. With ``prod_{j<1} A_j = 1``
the final step's noise reaches the output undamped, so (docs/theory.md section 3)

    var_gen(diffusers fixed_large) = var_gen(ddpm-large) + (1 - ab_1)   if t_1 > 0,

with the transfer function and the mean unchanged; ``t_1 = 0`` (the last timestep 0) adds
nothing. :func:`diffusers_ddpm_levels` gives the levels ``set_timesteps(S)`` runs.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError
from specsched.schedules import SPACINGS, training_alphas_cumprod
from specsched.schedules.conversions import check_int
from specsched.schedules.families import diffusers_timesteps
from specsched.theory.losses import (
    KL_FLOOR,
    LossReport,
    kl_data_gen_terms,
    kl_mask,
    kl_terms,
    w2_terms,
)
from specsched.theory.samplers import (
    SAMPLERS,
    GeneratedGaussian,
    closed_form,
    resolve_eta,
    step_gains,
    step_scalars,
)

__all__ = [
    "DDPM_VARIANCE_TYPES",
    "diffusers_ddim_levels",
    "diffusers_ddpm_closed_form",
    "diffusers_ddpm_levels",
    "evaluate_diffusers_ddpm",
    "evaluate_unchained",
    "unchained_closed_form",
]

#: ``DDPMScheduler(variance_type=...)`` values modelled here, with specsched's sampler of the
#: same steps (the final step aside).
DDPM_VARIANCE_TYPES = {"fixed_small": "ddpm", "fixed_large": "ddpm-large"}


def diffusers_ddim_levels(
    spacing: str,
    num_steps: int,
    num_train_timesteps: int = 1000,
    family: str = "linear",
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
):
    """The (denoise, landing) levels of diffusers' ``DDIMScheduler``, step 1 first.

    Reproduces ``DDIMScheduler.set_timesteps`` and ``step`` (diffusers 0.42,
    ``scheduling_ddim.py``):

    - timesteps (descending, as diffusers): ``linspace``:
      ``round(linspace(0, T-1, S))[::-1]``; ``leading``: ``(arange(S) * (T // S))[::-1] +
      steps_offset``; ``trailing``: ``round(arange(T, 0, -T/S)) - 1`` (numpy's float arange:
      for some S it has S + 1 points, the last being -1, which torch indexing wraps to T-1;
      reproduced as is);
    - ``prev_timestep = t - T // S``; the landing level is ``alphas_cumprod[prev_timestep]``
      if ``prev_timestep >= 0``, else ``final_alpha_cumprod`` (1 when ``set_alpha_to_one``,
      ``alphas_cumprod[0]`` otherwise).

    Parameters
    ----------
    spacing : {"linspace", "leading", "trailing"}
    num_steps : int
        S, 1 <= S <= T.
    num_train_timesteps : int
        T.
    family : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Training beta schedule (:func:`specsched.schedules.training_alphas_cumprod`,
        float64 where diffusers uses float32).
    steps_offset : int
        Added to ``leading`` timesteps (Stable Diffusion uses 1).
    set_alpha_to_one : bool

    Returns
    -------
    a_denoise : ndarray of shape (n_steps,), float64
        Level the denoiser is told at each step, step 1 (the last one run) first.
    a_land : ndarray of shape (n_steps,), float64
        Level the step lands on.
    timesteps : ndarray of shape (n_steps,), int64
        diffusers' timesteps, in diffusers' (descending, run) order.

    Raises
    ------
    InputError
        Unknown spacing or family, bad S or T.
    """
    if spacing not in SPACINGS:
        raise InputError(f"spacing: expected one of {', '.join(SPACINGS)}; got {spacing!r}")
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    S = check_int(num_steps, "num_steps", 1, T)
    offset = check_int(steps_offset, "steps_offset", 0)
    ab = training_alphas_cumprod(family, T)
    ts = diffusers_timesteps(spacing, S, T, offset)
    final = 1.0 if set_alpha_to_one else float(ab[0])
    prev = ts - T // S
    a_denoise = ab[ts]  # negative t wraps as torch indexing does
    a_land = np.where(prev >= 0, ab[np.clip(prev, 0, T - 1)], final)
    return a_denoise[::-1].copy(), a_land[::-1].copy(), ts


def _check_levels(eigenvalues, mean, a_denoise, a_land, eta):
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise InputError("eigenvalues: expected a non-empty 1-D array of finite values >= 0")
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    if m.shape != lam.shape:
        raise InputError(f"mean: expected shape {lam.shape}, got {m.shape}")
    a = np.asarray(a_denoise, dtype=np.float64)
    ap = np.asarray(a_land, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or a.shape != ap.shape:
        raise InputError(f"a_denoise, a_land: expected equal non-empty 1-D shapes, got "
                         f"{a.shape}, {ap.shape}")
    if not np.all((a > 0) & (a < 1)):
        raise InputError("a_denoise: expected values in the open interval (0, 1)")
    if not np.all((ap > 0) & (ap <= 1)):
        raise InputError("a_land: expected values in (0, 1]")
    eta = resolve_eta("ddim", eta)
    if eta > 0 and np.any(ap < a):
        s = int(np.argmax(ap < a))
        raise InputError(f"a_land[{s}]: {ap[s]!r} below a_denoise[{s}] = {a[s]!r}: the "
                         "DDIM-eta noise variance would be negative (needs ap >= a when eta > 0)")
    return lam, m, a, ap, eta


def unchained_closed_form(eigenvalues, mean, a_denoise, a_land, eta: float = 0.0):
    """Generated mean and variance of DDIM-eta on arbitrary (denoise, landing) level pairs.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lam_k >= 0``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis (zeros when None).
    a_denoise : ndarray of shape (n_steps,)
        ``a_s``: the level the Wiener denoiser is evaluated at, step 1 (run last) first.
    a_land : ndarray of shape (n_steps,)
        ``ap_s``: the level step s lands on (1 for a step landing on clean data).
    eta : float
        DDIM-eta stochasticity in [0, 1].

    Returns
    -------
    transfer : ndarray of shape (n_directions,)
        ``H = prod_s A_s``.
    variance : ndarray of shape (n_directions,)
        Generated variance, start ``x_S ~ N(0, 1)``.
    mean_error : ndarray of shape (n_directions,)
        ``mean_gen - m = (M_0 - 1) m`` (module docstring).

    Raises
    ------
    InputError
        Bad shapes or levels, eta outside [0, 1], or ``a_land < a_denoise`` with eta > 0.
    """
    lam, m, a, ap, eta = _check_levels(eigenvalues, mean, a_denoise, a_land, eta)
    A, B, sig2 = step_gains(lam, step_scalars(SAMPLERS["ddim"], a, eta, ap=ap))
    v = np.ones_like(lam)
    M = np.zeros_like(lam)
    for s in range(a.size - 1, -1, -1):  # reverse time: step S first
        v = A[s] * A[s] * v + sig2[s]
        M = A[s] * M + B[s]
    return np.prod(A, axis=0), v, (M - 1.0) * m


def evaluate_unchained(
    eigenvalues, mean, a_denoise, a_land, eta: float = 0.0, kl_floor: float = KL_FLOOR
) -> LossReport:
    """W2 and both KLs of DDIM-eta on unchained (denoise, landing) levels.

    Parameters
    ----------
    eigenvalues, mean, a_denoise, a_land, eta
        As in :func:`unchained_closed_form`; e.g. the levels of
        :func:`diffusers_ddim_levels`.
    kl_floor : float
        Relative eigenvalue floor of KL (:mod:`specsched.theory.losses`).

    Returns
    -------
    LossReport
        Equal to :func:`specsched.theory.evaluate_schedule` (sampler "ddim", init "normal")
        when ``a_land = (1, a_1, ..., a_{S-1})``.

    Notes
    -----
    docs/theory.md sections 3-4; diffusers issues 11347 and 12633 for the unchained steps.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    H, v, err = unchained_closed_form(lam, mean, a_denoise, a_land, eta)
    return _report(lam, H, v, err, kl_floor)


def _report(lam, H, v, err, kl_floor) -> LossReport:
    """LossReport of a generated Gaussian: variance ``v`` and mean error ``err`` per direction."""
    wt = w2_terms(lam, v, err)
    kt = kl_terms(lam, v, err, kl_floor)
    rt = kl_data_gen_terms(lam, v, err, kl_floor)
    return LossReport(
        w2=float(np.sqrt(wt.sum())), kl=float(kt.sum()), kl_data_gen=float(rt.sum()),
        w2_terms=wt, kl_terms=kt, kl_data_gen_terms=rt,
        kl_excluded=int(lam.size - kl_mask(lam, kl_floor).sum()), transfer=H, variance=v,
    )


def diffusers_ddpm_levels(spacing: str, num_steps: int, num_train_timesteps: int = 1000,
                          family: str = "linear", steps_offset: int = 0):
    """The levels and timesteps of ``DDPMScheduler.set_timesteps(num_steps)``, step 1 first.

    ``DDPMScheduler`` (diffusers 0.42, ``scheduling_ddpm.py``) spaces its timesteps as
    ``DDIMScheduler`` does (:func:`specsched.schedules.families.diffusers_timesteps`) and
    chains them: each step lands on the next timestep of the list, the last on clean data.

    Parameters
    ----------
    spacing : {"linspace", "leading", "trailing"}
    num_steps : int
        S, 1 <= S <= T.
    num_train_timesteps : int
        T.
    family : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Training beta schedule (float64 here, float32 in diffusers).
    steps_offset : int
        Added to ``leading`` timesteps.

    Returns
    -------
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``alphas_cumprod[t]`` of the training grid, step 1 (the last one run) first.
    timesteps : ndarray of shape (n_steps,), int64
        diffusers' timesteps, descending (run order); ``timesteps[-1]`` is ``t_1``.

    Raises
    ------
    InputError
        Unknown spacing or family, bad S or T, or a ``trailing`` S for which diffusers makes
        S + 1 timesteps ending in -1 (its step then indexes ``alphas_cumprod[-1]``, the
        noisiest level, on the final step; not modelled).
    """
    if spacing not in SPACINGS:
        raise InputError(f"spacing: expected one of {', '.join(SPACINGS)}; got {spacing!r}")
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    S = check_int(num_steps, "num_steps", 1, T)
    ts = diffusers_timesteps(spacing, S, T, check_int(steps_offset, "steps_offset", 0))
    if ts.size != S:
        raise InputError(
            f"spacing: diffusers' 'trailing' spacing makes {ts.size} timesteps for S = {S} "
            f"(the last one -1, which indexes the noisiest training level); choose another S "
            "or spacing")
    return training_alphas_cumprod(family, T)[ts[::-1]], ts


def diffusers_ddpm_closed_form(eigenvalues, alphas_cumprod, final_timestep: int,
                               variance_type: str = "fixed_large") -> GeneratedGaussian:
    """Generated Gaussian of diffusers' ``DDPMScheduler`` with the exact Wiener denoiser.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lam_k >= 0``.
    alphas_cumprod : ndarray of shape (n_steps,), float64
        The training ``alphas_cumprod[t]`` the scheduler runs, step 1 (the last one run)
        first, strictly decreasing in (0, 1) (trusted: validate at the boundary).
    final_timestep : int
        ``t_1``, the last timestep run (``scheduler.timesteps[-1]``): the final step adds
        noise when it is > 0.
    variance_type : {"fixed_large", "fixed_small"}
        The scheduler's ``variance_type``.

    Returns
    -------
    GeneratedGaussian
        Start ``x_S ~ N(0, 1)`` (``randn``, as diffusers' pipelines). For ``fixed_large``
        the variance of specsched's ``ddpm-large`` plus ``1 - ab_1`` when ``t_1 > 0``
        (module docstring); for ``fixed_small`` that of ``ddpm`` (eta = 1).

    Raises
    ------
    InputError
        Unknown ``variance_type``.

    Notes
    -----
    docs/theory.md section 3; Ho, Jain, Abbeel (2020) eqs. 6-7; diffusers 0.42
    ``DDPMScheduler.step`` and ``_get_variance``. ``clip_sample`` (diffusers' default True)
    and thresholding are not modelled: pass ``clip_sample=False``.
    """
    if variance_type not in DDPM_VARIANCE_TYPES:
        raise InputError(f"variance_type: expected one of {', '.join(DDPM_VARIANCE_TYPES)}; "
                         f"got {variance_type!r}")
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    gen = closed_form(eigenvalues, ab, sampler=DDPM_VARIANCE_TYPES[variance_type])
    if variance_type == "fixed_large" and int(final_timestep) > 0:
        gen = GeneratedGaussian(gen.transfer, gen.variance + (1.0 - ab[0]), gen.mean_gain)
    return gen


def evaluate_diffusers_ddpm(eigenvalues, mean, alphas_cumprod, final_timestep: int,
                            variance_type: str = "fixed_large",
                            kl_floor: float = KL_FLOOR) -> LossReport:
    """W2 and both KLs of diffusers' ``DDPMScheduler`` as it behaves.

    Parameters
    ----------
    eigenvalues, alphas_cumprod, final_timestep, variance_type
        As in :func:`diffusers_ddpm_closed_form` (e.g. the levels of
        :func:`diffusers_ddpm_levels`, or ``alphas_cumprod_run`` and the last of the
        ``timesteps`` of a diffusers export).
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis (zeros when None).
    kl_floor : float
        Relative eigenvalue floor of KL (:mod:`specsched.theory.losses`).

    Returns
    -------
    LossReport
        Equal to :func:`specsched.theory.evaluate_schedule` with ``sampler="ddpm-large"``
        when ``final_timestep == 0``; larger variance otherwise.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    gen = diffusers_ddpm_closed_form(lam, alphas_cumprod, final_timestep, variance_type)
    return _report(lam, gen.transfer, gen.variance, gen.mean_error(m), kl_floor)
