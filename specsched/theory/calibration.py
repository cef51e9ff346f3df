r"""A denoiser's measured per-direction linear filter, as the closed form consumes it.

:class:`LinearCalibration` holds ``D(x, sigma) - m = a(sigma) (x - m) + b(sigma) + e``,
``Var(e) = r(sigma)`` per eigen-direction on a grid of VE noise levels (docs/theory.md
section 3, "A measured denoiser in place of the Wiener filter"); it is measured by
:func:`specsched.sampling.calibration.calibrate_denoiser` and read by
:func:`specsched.theory.kclosed.kclosed_form` (``calibration=``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError

__all__ = ["LinearCalibration"]


@dataclass(frozen=True)
class LinearCalibration:
    """A denoiser's per-direction linear fit on a grid of noise levels (module docstring).

    Attributes
    ----------
    sigmas : ndarray of shape (G,), float64
        VE noise levels of the grid, strictly increasing, > 0.
    gain : ndarray of shape (G, d), float64
        Effective gains ``a_k(sigma)``.
    bias : ndarray of shape (G, d), float64
        ``b_k(sigma)``: mean deviation of the output from the data mean not explained by the
        gain (data units, eigenbasis).
    residual_variance : ndarray of shape (G, d), float64
        ``r_k(sigma) >= 0``.
    n_samples : int
        Samples per noise level.
    """

    sigmas: np.ndarray
    gain: np.ndarray
    bias: np.ndarray
    residual_variance: np.ndarray
    n_samples: int

    def interpolate(self, sigma, name: str = "sigma"):
        """``(gain, bias, residual_variance)`` at the levels ``sigma``, each (n, d).

        Linear interpolation in ``log sigma`` between the grid's levels (exact on them);
        complex-step safe (a complex ``sigma`` is located by its real part), so the closed
        form differentiates through it.

        Parameters
        ----------
        sigma : float or array-like of n levels (any shape; flattened), float or complex
        name : str
            The argument named in the error.

        Raises
        ------
        InputError
            A level outside ``[sigmas[0], sigmas[-1]]`` (no extrapolation) or not finite.
        """
        s = np.atleast_1d(np.asarray(sigma)).reshape(-1)
        lo, hi = float(self.sigmas[0]), float(self.sigmas[-1])
        real = np.real(s)
        if not self.covers(real):
            raise InputError(f"{name}: levels from {real.min():.4g} to {real.max():.4g} reach "
                             f"outside the calibrated range [{lo:.4g}, {hi:.4g}]", param=name)
        rows = (self.gain, self.bias, self.residual_variance)
        if self.sigmas.size == 1:
            return tuple(np.broadcast_to(a[0], (s.size, a.shape[1])) for a in rows)
        t = np.log(self.sigmas)
        ls = np.log(s)
        j = np.clip(np.searchsorted(t, np.real(ls)), 1, t.size - 1)
        w = ((ls - t[j - 1]) / (t[j] - t[j - 1]))[:, None]
        return tuple((1.0 - w) * a[j - 1] + w * a[j] for a in rows)

    def covers(self, sigma) -> bool:
        """Whether every level of ``sigma`` (real, any shape) is finite and inside the grid
        ``[sigmas[0], sigmas[-1]]`` (relative tolerance 1e-12): what :meth:`interpolate`
        accepts."""
        s = np.asarray(sigma, dtype=np.float64)
        return bool(np.all(np.isfinite(s)) and np.all(s >= self.sigmas[0] * (1.0 - 1e-12))
                    and np.all(s <= self.sigmas[-1] * (1.0 + 1e-12)))

    def at(self, sigma):
        """``(gain, bias, residual_variance)`` at one level ``sigma``, each of shape (d,)
        (:meth:`interpolate`)."""
        return tuple(a[0] for a in self.interpolate(float(sigma)))
