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
from specsched.theory.samplers import SAMPLERS, resolve_eta, step_gains, step_scalars

__all__ = ["diffusers_ddim_levels", "evaluate_unchained", "unchained_closed_form"]


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
    wt = w2_terms(lam, v, err)
    kt = kl_terms(lam, v, err, kl_floor)
    rt = kl_data_gen_terms(lam, v, err, kl_floor)
    return LossReport(
        w2=float(np.sqrt(wt.sum())), kl=float(kt.sum()), kl_data_gen=float(rt.sum()),
        w2_terms=wt, kl_terms=kt, kl_data_gen_terms=rt,
        kl_excluded=int(lam.size - kl_mask(lam, kl_floor).sum()), transfer=H, variance=v,
    )
