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

Under a coloured forward noise ``sqrt(ab) x + sqrt(1 - ab) C^(1/2) eps`` with ``C = diag(c_k)``
in the same basis (docs/theory.md section 9), the noise variance of direction ``k`` is
``(1 - ab) c_k(ab)`` and the SNR ``ab lam_k / ((1 - ab) c_k(ab))``; ``c_k`` may depend on the
level (FANS). :func:`frequency_noise` gives ``c`` per DFT frequency for the Fourier model.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError

__all__ = ["frequency_noise", "max_detectable_frequency", "snr_map"]


def snr_map(variances, alphas_cumprod, noise=None) -> np.ndarray:
    """``SNR[t, k] = ab_t lam_k / ((1 - ab_t) c_k(ab_t))`` (``c = 1``: white noise).

    Parameters
    ----------
    variances : ndarray of shape (n_directions,)
        ``lam_k >= 0``: eigenvalues or per-frequency powers (variance units).
    alphas_cumprod : ndarray of shape (n_times,)
        ``ab_t`` in ``(0, 1)``.
    noise : NoiseSpectrum, optional
        The forward noise spectrum (:class:`specsched.theory.noise.NoiseSpectrum`) with one
        variance per entry of ``variances``, in their order: ``c_k(ab)`` is its
        :meth:`~specsched.theory.noise.NoiseSpectrum.at`. None (or white) is ``c = 1``.

    Returns
    -------
    ndarray of shape (n_times, n_directions), float64
        Signal-to-noise ratios (variance ratio, not dB).

    Raises
    ------
    InputError
        Negative variances, ``ab`` outside ``(0, 1)`` or a noise spectrum of another length.
    """
    lam = np.asarray(variances, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    if (lam < 0).any():
        raise InputError("variances: expected values >= 0")
    if not ((ab > 0) & (ab < 1)).all():
        raise InputError("alphas_cumprod: expected values in (0, 1)")
    snr = (ab / (1.0 - ab))[:, None] * lam[None, :]
    if noise is None or noise.is_white:
        return snr
    noise.check_dimension(lam.size)
    return snr / noise.at(ab)


def frequency_noise(noise, power, eigenvalues):
    """The forward noise of each DFT frequency of the Fourier model, for the per-frequency maps.

    A :class:`~specsched.theory.noise.NoiseSpectrum` is indexed like the sorted eigenvalues of
    the spectrum (largest first); the maps of :mod:`specsched.analysis` are per frequency.

    - A named spectrum (equal-snr, power:GAMMA, fans[:GAMMA]) is built again by the same rule
      (:func:`specsched.theory.noise.noise_spectrum`) on the per-frequency power: ``c``
      proportional to the power (floored at ``1e-12`` of its maximum) to the GAMMA, mean 1
      over the frequencies; FANS' bands by the rank of the power. With one channel the
      frequencies' powers are the eigenvalues, so this is the noise the theory uses; with
      ``C`` channels it is the same rule on their summed power.
    - A file's variances are mapped by rank: the frequency of the ``r``-th largest power
      gets the mean of the variances at ranks ``r C .. r C + C - 1`` (exact for one channel:
      the ``r``-th eigenvalue is that frequency's power).

    Parameters
    ----------
    noise : NoiseSpectrum
        The noise spectrum of the analysed spectrum (not white).
    power : ndarray of shape (L,) or (H, W), float64
        Per-frequency power, summed over channels (:func:`specsched.spectrum.fourier_power`).
    eigenvalues : ndarray of shape (d,), float64
        The Fourier model's eigenvalues, ``d = power.size x C``.

    Returns
    -------
    NoiseSpectrum
        Of ``power.size`` variances in the layout of ``power.ravel()``, with ``noise``'s label
        and level dependence.

    Raises
    ------
    InputError
        A file's variances that do not split into ``power.size`` groups of ``C``.
    """
    from specsched.theory.noise import NoiseSpectrum, noise_spectrum

    p = np.asarray(power, dtype=np.float64).ravel()
    if not noise.label.startswith("file:"):
        return noise_spectrum(noise.label, p)  # a named label is its own spec
    c = noise.variances
    if c.size % p.size:
        raise InputError(f"noise spectrum {noise.label}: {c.size} variances do not split "
                         f"into the {p.size} frequencies of the Fourier model",
                         param="noise_spectrum")
    per_rank = c.reshape(p.size, c.size // p.size).mean(axis=1)
    per_freq = np.empty_like(p)
    per_freq[np.argsort(-p, kind="stable")] = per_rank
    return NoiseSpectrum(noise.label, per_freq, noise.time_varying)


def max_detectable_frequency(freq, power, alphas_cumprod, tau: float = 1.0,
                             noise=None) -> np.ndarray:
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
    noise : NoiseSpectrum, optional
        Forward noise variances at ``freq`` (as in :func:`snr_map`); None is white.

    Returns
    -------
    ndarray of shape (n_times,), float64
        ``max {f : ab_t P(f) / ((1 - ab_t) c_f(ab_t)) >= tau}``, or 0 when no frequency
        qualifies.

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
    ok = snr_map(power, alphas_cumprod, noise) >= tau
    return np.where(ok, f[None, :], 0.0).max(axis=1)
