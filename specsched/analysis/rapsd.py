"""Radially averaged power spectral density (RAPSD), following pysteps.

Notation
--------
``P(f)``: power at the DFT frequency ``f`` (cycles per pixel, or cycles per sample for
signals), ``E|F(x - mu)_f|^2`` with the unitary DFT. The RAPSD averages ``P`` over rings of
integer radius ``r = round(|k|)`` around the centre of the fftshifted spectrum, ``k`` the
integer frequency index, and reports the frequency ``r / L`` (``L = max(H, W)``), as
``pysteps.utils.spectral.rapsd``.

References
----------
pysteps (Pulkkinen et al. 2019), ``pysteps/utils/spectral.py``, function ``rapsd``.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError

__all__ = ["rapsd", "rapsd_of_field"]


def _centred_index(m: int) -> np.ndarray:
    """Integer frequency indices of the fftshifted axis of length ``m`` (pysteps' ogrid)."""
    return np.arange(-(m // 2), m // 2 + (m % 2))


def rapsd(power, d: float = 1.0):
    """Radially average a power spectrum given in :func:`numpy.fft.fftfreq` order.

    Parameters
    ----------
    power : ndarray of shape (L,) or (H, W), float64
        Power per DFT frequency, DC first (not shifted), e.g. from
        :func:`specsched.spectrum.fourier_power`. 1-D spectra are folded (``|k|``).
    d : float
        Sample spacing (pixels, or seconds for signals); frequencies are in cycles per unit
        of ``d``.

    Returns
    -------
    radial : ndarray of shape (L // 2 + L % 2,), float64
        Mean power over the ring ``round(|k|) = r`` for ``r = 0 .. len - 1``,
        ``L = max(power.shape)`` (pysteps' output length).
    freq : ndarray of the same shape, float64
        ``numpy.fft.fftfreq(L, d)[r]``: ring frequencies in cycles per pixel (per ``d``),
        ``0 <= freq < 0.5 / d``.

    Raises
    ------
    InputError
        If ``power`` is not 1-D or 2-D, or holds non-finite values.
    """
    power = np.asarray(power, dtype=np.float64)
    if power.ndim not in (1, 2) or power.size == 0:
        raise InputError(f"power: expected a 1-D or 2-D spectrum, got shape {power.shape}")
    if not np.isfinite(power).all():
        raise InputError("power: non-finite values (NaN or Inf)")
    psd = np.fft.fftshift(power)
    grids = np.meshgrid(*[_centred_index(m) for m in psd.shape], indexing="ij")
    r_grid = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids)).round().astype(int)
    L = max(psd.shape)
    r_range = np.arange(0, L // 2 + (L % 2))
    sums = np.bincount(r_grid.ravel(), weights=psd.ravel(), minlength=r_range.size)
    counts = np.bincount(r_grid.ravel(), minlength=r_range.size)
    radial = sums[: r_range.size] / np.maximum(counts[: r_range.size], 1)
    freq = np.fft.fftfreq(L, d=d)[r_range]
    return radial, freq


def rapsd_of_field(field, d: float = 1.0, normalize: bool = False):
    """RAPSD of one 2-D field, as ``pysteps.utils.spectral.rapsd``.

    Parameters
    ----------
    field : ndarray of shape (H, W) or (L,)
        Real values (a single image channel or signal).
    d : float
        Sample spacing; frequencies in cycles per unit of ``d``.
    normalize : bool
        Divide the result by its sum (pysteps' option).

    Returns
    -------
    radial, freq : ndarray
        As :func:`rapsd`, with ``P = |FFT(field)|^2 / field.size``.
    """
    field = np.asarray(field, dtype=np.float64)
    power = np.abs(np.fft.fftn(field)) ** 2 / field.size
    radial, freq = rapsd(power, d)
    if normalize:
        radial = radial / radial.sum()
    return radial, freq
