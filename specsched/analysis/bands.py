"""Normalised band powers ``pi_b``: the share of the variance in each radial frequency band.

``pi_b = sum_{f in band b} P(f) / sum_f P(f)`` over the full DFT grid (not the radial
average), bands of equal width in radial frequency ``|f|`` (cycles per pixel) from 0 to the
largest ``|f|`` of the grid (``sqrt(2) / 2`` for square images, ``1 / 2`` for signals).
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError

__all__ = ["band_powers", "radial_frequency"]


def radial_frequency(shape, d: float = 1.0) -> np.ndarray:
    """``|f|`` of every DFT frequency of a grid, in :func:`numpy.fft.fftfreq` order.

    Parameters
    ----------
    shape : tuple of int
        ``(L,)`` or ``(H, W)``.
    d : float
        Sample spacing; cycles per unit of ``d``.

    Returns
    -------
    ndarray of shape ``shape``, float64
        ``sqrt(fy^2 + fx^2)`` in cycles per pixel.
    """
    grids = np.meshgrid(*[np.fft.fftfreq(m, d=d) for m in shape], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def band_powers(power, n_bands: int = 8, d: float = 1.0):
    """Normalised power in ``n_bands`` equal-width radial frequency bands.

    Parameters
    ----------
    power : ndarray of shape (L,) or (H, W), float64
        Power per DFT frequency, unshifted (DC first).
    n_bands : int
        Number of bands ``B >= 1``.
    d : float
        Sample spacing.

    Returns
    -------
    edges : ndarray of shape (B + 1,)
        Band edges in cycles per pixel; band ``b`` is ``[edges[b], edges[b+1])`` (the last
        one closed).
    pi : ndarray of shape (B,)
        ``pi_b >= 0``, summing to 1.

    Raises
    ------
    InputError
        Bad ``n_bands``, or a spectrum with no positive power.
    """
    power = np.asarray(power, dtype=np.float64)
    if isinstance(n_bands, bool) or int(n_bands) != n_bands or n_bands < 1:
        raise InputError(f"n_bands: expected an integer >= 1, got {n_bands!r}")
    total = float(power.sum())
    if not total > 0:
        raise InputError("power: the spectrum has no positive power")
    r = radial_frequency(power.shape, d)
    edges = np.linspace(0.0, float(r.max()), int(n_bands) + 1)
    idx = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, int(n_bands) - 1)
    pi = np.bincount(idx.ravel(), weights=power.ravel(), minlength=int(n_bands)) / total
    return edges, pi
