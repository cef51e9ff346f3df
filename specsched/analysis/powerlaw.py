"""Power-law fit of a radially averaged spectrum, ``P(f) ~ A f^(-alpha)``.

Following Dieleman (2024), "Diffusion is spectral autoregression": the RAPSD is resampled
at log-spaced frequencies (linear interpolation in log-log space) so that high frequencies,
which are far more numerous, do not dominate, and a straight line is fitted by least squares
to ``log P`` against ``log f``. Natural photographs give ``alpha`` near 2 (van der Schaaf &
van Hateren 1996).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError

__all__ = ["PowerLawFit", "fit_power_law"]


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    exponent : float
        ``alpha`` in ``P(f) = A f^(-alpha)`` (positive for decaying spectra).
    amplitude : float
        ``A`` (power at ``f = 1`` cycle per pixel, extrapolated).
    freq : ndarray of shape (n_points,)
        Log-spaced frequencies used in the fit (cycles per pixel).
    power : ndarray of shape (n_points,)
        Resampled RAPSD values at ``freq``.
    r2 : float
        Coefficient of determination of the fit in log-log space.
    """

    exponent: float
    amplitude: float
    freq: np.ndarray
    power: np.ndarray
    r2: float

    def predict(self, freq) -> np.ndarray:
        """``A f^(-alpha)`` at ``freq`` (cycles per pixel)."""
        return self.amplitude * np.asarray(freq, dtype=np.float64) ** (-self.exponent)


def fit_power_law(freq, power, n_points: int = 32, fmin: float | None = None,
                  fmax: float | None = None) -> PowerLawFit:
    """Fit ``P(f) = A f^(-alpha)`` on log-spaced resampled points.

    Parameters
    ----------
    freq : ndarray of shape (n,)
        Increasing frequencies (cycles per pixel), e.g. from :func:`specsched.analysis.rapsd`;
        ``f <= 0`` (the DC term) is left out.
    power : ndarray of shape (n,)
        RAPSD values; non-positive values are left out.
    n_points : int
        Number of log-spaced resampling points (>= 2).
    fmin, fmax : float, optional
        Fit range; default the smallest and largest positive frequency.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    InputError
        Fewer than 2 usable frequencies, or a bad ``n_points`` / range.
    """
    f = np.asarray(freq, dtype=np.float64)
    p = np.asarray(power, dtype=np.float64)
    if f.shape != p.shape or f.ndim != 1:
        raise InputError(f"freq, power: expected 1-D arrays of one shape, got {f.shape}, {p.shape}")
    keep = (f > 0) & (p > 0) & np.isfinite(p)
    f, p = f[keep], p[keep]
    if f.size < 2:
        raise InputError("power: fewer than 2 positive frequencies with positive power to fit")
    if int(n_points) < 2:
        raise InputError(f"n_points: expected >= 2, got {n_points}")
    lo = f[0] if fmin is None else float(fmin)
    hi = f[-1] if fmax is None else float(fmax)
    if not (0 < lo < hi):
        raise InputError(f"fmin, fmax: expected 0 < fmin < fmax, got {lo}, {hi}")
    grid = np.geomspace(lo, hi, int(n_points))
    logp = np.interp(np.log(grid), np.log(f), np.log(p))
    slope, intercept = np.polyfit(np.log(grid), logp, 1)
    resid = logp - (slope * np.log(grid) + intercept)
    ss = float(((logp - logp.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
    return PowerLawFit(float(-slope), float(np.exp(intercept)), grid, np.exp(logp), r2)
