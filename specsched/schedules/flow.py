"""Flow-matching baseline schedules: the uniform grid, SD3's and Flux's shifts, shifted cosine.

Notation (docs/theory.md section 10): a flow-matching schedule is ``t_1 < ... < t_S`` in
(0, 1], step 1 (least noisy) first, ``x_t = (1 - t) x_0 + t eps``; models released since 2024
(Stable Diffusion 3, Flux) start at ``t_S = 1``, pure noise. Every function returns the times
``t`` (step 1 first); :func:`fm_baseline_alphas_cumprod` returns the same points as VP
alphas_cumprod, ``ab_S = 0`` for ``t_S = 1``.

Sources:

- ``fm-uniform``: ``t = 1/S, 2/S, ..., 1``, the grid Flux's diffusers pipeline passes as
  ``sigmas = np.linspace(1.0, 1 / S, S)`` to ``FlowMatchEulerDiscreteScheduler`` (which
  appends the final 0);
- ``sd3-shift``: that grid through ``t' = s t / (1 + (s - 1) t)`` (Esser et al. 2024; diffusers'
  ``shift``, 3.0 for SD3), :func:`specsched.schedules.conversions.sd3_shift`;
- ``flux-shift``: the same map with ``s = exp(mu)``, ``mu`` linear in the number of image
  tokens, 0.5 at 256 tokens and 1.15 at 4096 (diffusers' ``calculate_shift`` with Flux's
  defaults, extrapolated linearly outside that range as diffusers does, and
  ``FlowMatchEulerDiscreteScheduler.time_shift`` of type "exponential" with sigma = 1);
- ``shifted-cosine``: Hoogeboom, Heek, Salimans 2023 ("simple diffusion"): the cosine
  schedule's ``logSNR(u) = -2 log tan(pi u / 2)`` shifted by ``2 log(64 / resolution)`` at
  ``u = 1/S, ..., 1``; ``t = sigma / (1 + sigma)`` with ``sigma = exp(-logSNR / 2)``.
"""

from __future__ import annotations

import math

import numpy as np

from specsched.errors import InputError
from specsched.schedules.conversions import _fm_alphas_cumprod, check_int, sd3_shift

__all__ = [
    "FLUX_BASE_SEQ_LEN",
    "FLUX_MAX_SEQ_LEN",
    "FM_BASELINES",
    "SD3_SHIFT",
    "flux_mu",
    "flux_image_seq_len",
    "fm_baseline_alphas_cumprod",
    "fm_baseline_times",
    "fm_uniform_times",
    "shifted_cosine_times",
]

#: Names accepted by :func:`fm_baseline_times`.
FM_BASELINES = ("fm-uniform", "sd3-shift", "flux-shift", "shifted-cosine")
#: Stable Diffusion 3's shift (its scheduler config, ``shift=3.0``).
SD3_SHIFT = 3.0
#: Flux's ``calculate_shift`` defaults: ``mu`` runs from ``base_shift`` at ``base_seq_len``
#: image tokens to ``max_shift`` at ``max_seq_len``.
FLUX_BASE_SEQ_LEN, FLUX_MAX_SEQ_LEN = 256, 4096
FLUX_BASE_SHIFT, FLUX_MAX_SHIFT = 0.5, 1.15
#: The resolution of Hoogeboom et al.'s reference (no shift at 64 x 64).
SHIFTED_COSINE_BASE = 64


def fm_uniform_times(num_steps: int) -> np.ndarray:
    """``t = 1/S, 2/S, ..., 1``: the uniform flow-matching grid, step 1 first.

    Returns
    -------
    ndarray of shape (num_steps,), float64
        Increasing times in (0, 1], ``t_S = 1``.

    Raises
    ------
    InputError
        ``num_steps`` not an integer >= 1.
    """
    S = check_int(num_steps, "num_steps", 1)
    return np.arange(1, S + 1, dtype=np.float64) / S


def flux_mu(image_seq_len) -> float:
    """Flux's ``mu`` for ``image_seq_len`` image tokens (diffusers' ``calculate_shift``).

    ``mu = base_shift + (image_seq_len - 256) (max_shift - base_shift) / (4096 - 256)``,
    linear (not clipped) in the token count; the shift is ``exp(mu)``.

    Returns
    -------
    float
        ``mu`` (natural log of the shift).

    Raises
    ------
    InputError
        ``image_seq_len`` not a number >= 1 (named ``tokens``).
    """
    try:
        n = float(image_seq_len)
    except (TypeError, ValueError):
        raise InputError(f"tokens: expected a number of image tokens >= 1, got "
                         f"{image_seq_len!r}", param="tokens") from None
    if not (math.isfinite(n) and n >= 1.0):
        raise InputError(f"tokens: expected a number of image tokens >= 1, got "
                         f"{image_seq_len!r}", param="tokens")
    slope = (FLUX_MAX_SHIFT - FLUX_BASE_SHIFT) / (FLUX_MAX_SEQ_LEN - FLUX_BASE_SEQ_LEN)
    return FLUX_BASE_SHIFT + (n - FLUX_BASE_SEQ_LEN) * slope


def flux_image_seq_len(resolution: int) -> int:
    """Image tokens of a square ``resolution`` x ``resolution`` image in Flux: its latent is 8x
    smaller per side and packed in 2 x 2 patches, ``(resolution / 16)^2`` (at least 1).

    Raises
    ------
    InputError
        ``resolution`` not an integer >= 1.
    """
    r = check_int(resolution, "resolution", 1)
    return max(1, (r // 16) ** 2)


def shifted_cosine_times(num_steps: int, resolution: int) -> np.ndarray:
    """Hoogeboom et al.'s shifted cosine as flow-matching times (module docstring).

    ``logSNR(u) = -2 log tan(pi u / 2) + 2 log(64 / resolution)``, so ``t = sin(pi u / 2) /
    (sin(pi u / 2) + (64 / resolution) cos(pi u / 2))`` at ``u = 1/S, ..., 1`` (``t_S = 1``).

    Returns
    -------
    ndarray of shape (num_steps,), float64
        Increasing times in (0, 1], step 1 first.

    Raises
    ------
    InputError
        ``num_steps`` or ``resolution`` not an integer >= 1.
    """
    u = fm_uniform_times(num_steps)
    r = check_int(resolution, "resolution", 1)
    k = SHIFTED_COSINE_BASE / r
    sin, cos = np.sin(0.5 * np.pi * u), np.cos(0.5 * np.pi * u)
    t = sin / (sin + k * cos)
    t[-1] = 1.0  # cos(pi / 2) rounds to 6e-17, not 0
    return t


def fm_baseline_times(name: str, num_steps: int, *, shift: float = SD3_SHIFT,
                      resolution: int | None = None, tokens: int | None = None) -> np.ndarray:
    """A flow-matching baseline's times ``t_1 < ... < t_S = 1`` (module docstring).

    Parameters
    ----------
    name : {"fm-uniform", "sd3-shift", "flux-shift", "shifted-cosine"}
    num_steps : int
        S >= 1.
    shift : float
        ``s > 0`` of ``sd3-shift`` (default 3.0, SD3's).
    resolution : int or None
        Image side in pixels: ``shifted-cosine``'s resolution (default 64, no shift) and,
        when ``tokens`` is None, Flux's token count ``(resolution / 16)^2``
        (:func:`flux_image_seq_len`).
    tokens : int or None
        Flux's image tokens; None: from ``resolution``, else 256 (``mu = 0.5``).

    Returns
    -------
    ndarray of shape (num_steps,), float64, step 1 first, strictly increasing, ``t_S = 1``.

    Raises
    ------
    InputError
        Unknown name (listing :data:`FM_BASELINES`), bad S, a shift <= 0, a resolution or
        token count < 1.
    """
    if name not in FM_BASELINES:
        raise InputError(f"name: expected one of {', '.join(FM_BASELINES)}; got {name!r}")
    t = fm_uniform_times(num_steps)
    if name == "sd3-shift":
        return sd3_shift(t, shift)
    if name == "flux-shift":
        n = tokens if tokens is not None else (
            flux_image_seq_len(resolution) if resolution is not None else FLUX_BASE_SEQ_LEN)
        return sd3_shift(t, math.exp(flux_mu(n)))
    if name == "shifted-cosine":
        return shifted_cosine_times(num_steps, SHIFTED_COSINE_BASE if resolution is None
                                    else resolution)
    return t


def fm_baseline_alphas_cumprod(name: str, num_steps: int, **kwargs) -> np.ndarray:
    """:func:`fm_baseline_times` as VP alphas_cumprod, ``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``:
    step 1 first, decreasing, ``ab_S = 0`` (docs/theory.md section 10)."""
    return _fm_alphas_cumprod(fm_baseline_times(name, num_steps, **kwargs))
