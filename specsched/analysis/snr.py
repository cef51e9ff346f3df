"""Signal-to-noise ratio per frequency over diffusion time, and the detectable band.

Notation
--------
At noise level ``ab`` (alphas_cumprod) the noisy sample is ``sqrt(ab) x + sqrt(1 - ab) eps``;
along a direction of data variance ``lam`` (an eigenvalue, or the power ``P(f)`` of a
frequency in the shift-invariant model) the SNR is ``ab lam / (1 - ab)`` (Falck et al. 2025,
"A Fourier space perspective on diffusion models"). The maximal detectable frequency
``f_max(t)`` is the largest frequency whose SNR is at least a threshold ``tau`` (Dieleman
2024, "Diffusion is spectral autoregression"): coarse structure is decided at high noise,
fine detail only once ``f_max`` reaches it.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError

__all__ = ["snr_map", "max_detectable_frequency"]


def snr_map(variances, alphas_cumprod) -> np.ndarray:
    """``SNR[t, k] = ab_t lam_k / (1 - ab_t)``.

    Parameters
    ----------
    variances : ndarray of shape (n_directions,)
        ``lam_k >= 0``: eigenvalues or per-frequency powers (variance units).
    alphas_cumprod : ndarray of shape (n_times,)
        ``ab_t`` in ``(0, 1)``.

    Returns
    -------
    ndarray of shape (n_times, n_directions), float64
        Signal-to-noise ratios (variance ratio, not dB).

    Raises
    ------
    InputError
        Negative variances or ``ab`` outside ``(0, 1)``.
    """
    lam = np.asarray(variances, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    if (lam < 0).any():
        raise InputError("variances: expected values >= 0")
    if not ((ab > 0) & (ab < 1)).all():
        raise InputError("alphas_cumprod: expected values in (0, 1)")
    return (ab / (1.0 - ab))[:, None] * lam[None, :]


def max_detectable_frequency(freq, power, alphas_cumprod, tau: float = 1.0) -> np.ndarray:
    """Largest frequency with ``SNR >= tau`` at each noise level.

    Parameters
    ----------
    freq : ndarray of shape (n_freqs,)
        Frequencies (cycles per pixel), e.g. RAPSD ring frequencies.
    power : ndarray of shape (n_freqs,)
        Power at ``freq`` (variance units).
    alphas_cumprod : ndarray of shape (n_times,)
        ``ab_t`` in ``(0, 1)``.
    tau : float
        SNR threshold ``> 0``.

    Returns
    -------
    ndarray of shape (n_times,), float64
        ``max {f : ab_t P(f) / (1 - ab_t) >= tau}``, or 0 when no frequency qualifies.

    Raises
    ------
    InputError
        Bad ``tau``, shapes, or the errors of :func:`snr_map`.
    """
    f = np.asarray(freq, dtype=np.float64)
    if f.shape != np.shape(power) or f.ndim != 1:
        raise InputError("freq, power: expected 1-D arrays of one shape")
    if not tau > 0:
        raise InputError(f"tau: expected a threshold > 0, got {tau!r}")
    ok = snr_map(power, alphas_cumprod) >= tau
    return np.where(ok, f[None, :], 0.0).max(axis=1)
