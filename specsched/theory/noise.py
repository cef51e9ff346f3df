r"""Coloured forward noise: the spectrum ``c_k`` of ``x_t = sqrt(ab) x0 + sqrt(1-ab) C^(1/2) eps``.

docs/theory.md section 9. ``C = diag(c_k)`` in the data's eigenbasis (the Fourier basis under
the stationary model), in the order of the spectrum's eigenvalues (largest first); the reverse
process starts from ``N(0, C)``. The noise spectra, by their command-line names
(``--noise-spectrum``):

- ``white``: ``c_k = 1``, the usual process (every result bit for bit as without the option);
- ``equal-snr``: ``c_k`` proportional to ``lambda_k`` (Falck et al. 2025): every direction has
  the same SNR ``ab / (1 - ab) * mean(lambda)`` at every level;
- ``power:GAMMA``: ``c_k`` proportional to ``lambda_k ** GAMMA``, GAMMA in
  [:data:`GAMMA_MIN`, :data:`GAMMA_MAX`] (0 is white, 1 EqualSNR);
- ``FILE.npy``: d positive finite variances, used as given (not normalised), recorded by the
  sha256 of their float64 bytes;
- ``fans`` / ``fans:GAMMA``: a FANS-style noise shape that changes with the level
  (docs/theory.md section 9, "FANS as read here"): the band shape
  ``chat_k`` proportional to ``(mean lambda of k's band) ** GAMMA`` (GAMMA default 1) over
  :data:`FANS_BANDS` radial bands, annealed linearly in ``ab`` to white,
  ``c_k(ab) = (1 - ab) chat_k + ab``.

The named shapes are normalised to ``mean(c) = 1``, the total noise power of white noise
(FANS: at every level). Eigenvalues below ``EIGENVALUE_FLOOR * max(lambda)`` (exact zeros of an
empirical covariance) are raised to that floor before the power, so every ``c_k > 0``.

Constant spectra reduce to the white process in ``y = x / sqrt(c)`` (data variance
``lambda / c``, mean ``m / sqrt(c)``): :meth:`NoiseSpectrum.to_white`. FANS needs per-direction
schedules (:mod:`specsched.theory.varying`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError

__all__ = ["EIGENVALUE_FLOOR", "FANS_BANDS", "GAMMA_MAX", "GAMMA_MIN", "NAMED", "NoiseSpectrum",
           "fans_bands", "noise_spectrum", "noise_spectrum_label", "WHITE"]

#: Relative floor of the eigenvalues raised to a power (zeros of an empirical covariance).
EIGENVALUE_FLOOR = 1e-12
#: Allowed exponents of ``power:GAMMA`` and ``fans:GAMMA``.
GAMMA_MIN, GAMMA_MAX = 0.0, 2.0
#: Number of radial bands of the FANS shape.
FANS_BANDS = 8
#: The names of the named noise spectra (besides ``power:GAMMA``, ``fans:GAMMA`` and files).
NAMED = ("white", "equal-snr", "fans")
#: What ``--noise-spectrum`` accepts, for messages.
ACCEPTED = "white, equal-snr, power:GAMMA, fans, fans:GAMMA or a .npy file of variances"


@dataclass(frozen=True, eq=False)
class NoiseSpectrum:
    """A forward-noise spectrum for one data spectrum (module docstring).

    Attributes
    ----------
    label : str
        What schedule files record: ``"white"``, ``"equal-snr"``, ``"power:GAMMA"``
        (GAMMA as ``repr`` of the float), ``"fans:GAMMA"`` or ``"file:sha256:HEX"``.
    variances : ndarray of shape (d,), float64, or None
        ``c_k`` (constant spectra), or FANS' band shape ``chat_k`` (its value at ``ab = 0``);
        None for white. In the order of the spectrum's eigenvalues (largest first).
    time_varying : bool
        Whether ``c`` depends on the level (FANS).
    """

    label: str
    variances: np.ndarray | None
    time_varying: bool = False

    @property
    def is_white(self) -> bool:
        """Whether this is the white process (``c = 1``)."""
        return self.variances is None

    def at(self, alphas_cumprod):
        """``c_k`` at levels ``ab``.

        Parameters
        ----------
        alphas_cumprod : float or ndarray of shape (n,), float64 or complex
            VP levels in [0, 1] (complex-safe, for complex-step derivatives).

        Returns
        -------
        ndarray of shape (d,) for a scalar level, (n, d) for n levels
            Constant spectra return ``c`` at every level; FANS
            ``(1 - ab) chat + ab`` (module docstring). White: ones.

        Raises
        ------
        ValueError
            White noise has no dimension: ask :attr:`is_white` first.
        """
        if self.variances is None:
            raise ValueError("white noise: c = 1 in every direction")
        ab = np.asarray(alphas_cumprod)
        c = self.variances
        if not self.time_varying:
            return np.broadcast_to(c, (*ab.shape, c.size))
        ab = ab[..., None]
        return (1.0 - ab) * c + ab

    def check_dimension(self, d: int) -> None:
        """InputError unless the spectrum has ``d`` directions (white fits any)."""
        if self.variances is not None and self.variances.size != d:
            raise InputError(f"noise spectrum {self.label}: has {self.variances.size} "
                             f"variances, the data spectrum {d} directions",
                             param="noise_spectrum")

    def to_white(self, eigenvalues, mean):
        """The constant-colour reduction (docs/theory.md section 9): the white problem in ``y``.

        Parameters
        ----------
        eigenvalues : ndarray of shape (d,), float64
            Data variances ``lambda_k`` in x.
        mean : ndarray of shape (d,), float64
            Data mean in the eigenbasis, in x.

        Returns
        -------
        eigenvalues_y, mean_y, c : ndarray of shape (d,), float64
            ``lambda / c``, ``m / sqrt(c)`` and ``c``: ``W2^2`` in x is the c-weighted sum of
            the per-direction ``W2^2`` terms in y; KL is the same in x and y.

        Raises
        ------
        InputError
            A time-varying spectrum (FANS has no constant reduction) or the wrong dimension.
        """
        if self.time_varying:
            raise InputError(f"noise spectrum {self.label}: changes with the level, so it has "
                             "no constant-colour reduction", param="noise_spectrum")
        lam = np.asarray(eigenvalues, dtype=np.float64)
        self.check_dimension(lam.size)
        c = self.variances
        return lam / c, np.asarray(mean, dtype=np.float64) / np.sqrt(c), c


#: The white process.
WHITE = NoiseSpectrum("white", None)


def _floored(eigenvalues) -> np.ndarray:
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return np.maximum(lam, EIGENVALUE_FLOOR * lam.max())


def _gamma(text: str, kind: str) -> float:
    try:
        gamma = float(text)
    except ValueError:
        gamma = np.nan
    if not np.isfinite(gamma) or not GAMMA_MIN <= gamma <= GAMMA_MAX:
        raise InputError(f"noise spectrum {kind}:{text}: GAMMA must be a number in "
                         f"[{GAMMA_MIN:g}, {GAMMA_MAX:g}] (0 white, 1 EqualSNR)",
                         param="noise_spectrum")
    return gamma


def fans_bands(d: int, n_bands: int = FANS_BANDS) -> np.ndarray:
    """Band index (d,) int of each eigen-direction, largest eigenvalue first.

    Bands of equal width in radial frequency over a disc: band b holds the ranks
    ``[d (b/B)^2, d ((b+1)/B)^2)`` (a ring's share of the disc's area). For a spectrum
    whose power decreases with radial frequency (an isotropic power law), rank order is
    frequency order, so these are FANS' radial bands (docs/theory.md section 9).
    """
    ranks = np.arange(d)
    return np.minimum((np.sqrt((ranks + 0.5) / d) * n_bands).astype(int), n_bands - 1)


def _fans_shape(eigenvalues, gamma: float) -> np.ndarray:
    lam = _floored(eigenvalues)
    order = np.argsort(-lam, kind="stable")
    bands = np.empty(lam.size, dtype=int)
    bands[order] = fans_bands(lam.size)
    counts = np.bincount(bands)  # a band may be empty when d < FANS_BANDS^2
    band_mean = np.bincount(bands, weights=lam) / np.maximum(counts, 1)
    shape = band_mean[bands] ** gamma
    return shape / shape.mean()


def _from_file(path: str, d: int) -> NoiseSpectrum:
    try:
        c = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such noise-spectrum file (expected a .npy of {d} "
                         f"variances, or one of {ACCEPTED})", param="noise_spectrum") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array of variances ({exc})",
                         param="noise_spectrum") from None
    if not isinstance(c, np.ndarray) or c.dtype.kind not in "biuf":
        raise InputError(f"{path}: expected a real numeric .npy array, got dtype "
                         f"{getattr(c, 'dtype', type(c).__name__)}", param="noise_spectrum")
    if c.ndim != 1 or c.size != d:
        raise InputError(f"{path}: expected {d} noise variances (one per eigenvalue of the "
                         f"spectrum, largest first), got shape {c.shape}",
                         param="noise_spectrum")
    c = c.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}: noise variances must be finite and > 0; entry {i} is "
                         f"{float(c[i])!r} ({bad.size} bad entries)", param="noise_spectrum")
    digest = hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest()
    return NoiseSpectrum(f"file:sha256:{digest}", c)


def noise_spectrum(spec, eigenvalues) -> NoiseSpectrum:
    """The :class:`NoiseSpectrum` named by ``spec`` for a data spectrum.

    Parameters
    ----------
    spec : str, NoiseSpectrum or None
        ``"white"`` (or None), ``"equal-snr"``, ``"power:GAMMA"``, ``"fans"``,
        ``"fans:GAMMA"`` or the path of a ``.npy`` file (module docstring); a NoiseSpectrum
        is checked against the dimension and returned.
    eigenvalues : ndarray of shape (d,), float64
        The data spectrum (largest first, as :class:`specsched.spectrum.Spectrum` stores it).

    Returns
    -------
    NoiseSpectrum

    Raises
    ------
    InputError
        An unknown name, GAMMA outside [0, 2] or not a number, a file that is missing,
        unreadable, of the wrong length, or with a variance that is not finite and > 0
        (``param="noise_spectrum"``).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if isinstance(spec, NoiseSpectrum):
        spec.check_dimension(lam.size)
        return spec
    if spec is None or spec == "white":
        return WHITE
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(f"noise spectrum: expected one of {ACCEPTED}, got {spec!r}",
                         param="noise_spectrum")
    spec = os.fspath(spec)
    if spec == "equal-snr":
        c = _floored(lam)
        return NoiseSpectrum("equal-snr", c / c.mean())
    kind, sep, arg = spec.partition(":")
    if kind == "power" and sep:
        gamma = _gamma(arg, kind)
        if gamma == 0.0:
            return WHITE
        if gamma == 1.0:
            return noise_spectrum("equal-snr", lam)
        c = _floored(lam) ** gamma
        return NoiseSpectrum(f"power:{gamma!r}", c / c.mean())
    if kind == "fans":
        gamma = _gamma(arg, kind) if sep else 1.0
        return NoiseSpectrum(f"fans:{gamma!r}", _fans_shape(lam, gamma), time_varying=True)
    if spec.endswith(".npy") or os.path.exists(spec):
        return _from_file(spec, lam.size)
    raise InputError(f"noise spectrum: expected one of {ACCEPTED}, got {spec!r}",
                     param="noise_spectrum")


def noise_spectrum_label(noise) -> str:
    """The label a schedule file records for ``noise`` (None is ``"white"``)."""
    return "white" if noise is None else noise.label
