r"""Coloured forward noise for image networks, drawn by FFT (docs/theory.md section 9).

Notation: images of ``H x W`` pixels, one channel; ``F`` the unitary 2-D DFT
(``norm="ortho"``), ``P(f) = E|F(x - mu)_f|^2`` the data's power per DFT frequency
(:func:`specsched.spectrum.fourier_power`, DC first, not shifted). The forward noise has
covariance ``C = F^H diag(c_f) F`` and is drawn as

    colour(z) = irfft2(sqrt(c_f) * rfft2(z)),   z ~ N(0, I),

exactly ``C^(1/2) z`` (``c_f`` is symmetric, ``c_f = c_{-f}``, so ``C^(1/2)`` is real and
symmetric and ``cov(colour(z)) = C``). ``c_f`` follows the rule of
:func:`specsched.theory.noise.noise_spectrum` applied per frequency: ``equal-snr``:
``c_f`` proportional to ``P(f)``, ``power:GAMMA``: to ``P(f) ** GAMMA``, powers below
``1e-12 max P`` floored, normalised to ``mean(c) = 1``; sorted descending, ``c`` is the
NoiseSpectrum's ``variances`` for the Fourier model's eigenvalues (the sorted ``P``).

The time-varying FANS shape and ``.npy`` files (variances in eigenvalue order, which does not
say which frequency is which) are not offered for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.spectrum import FourierEstimator
from specsched.theory.noise import noise_spectrum

__all__ = ["TRAINABLE", "FourierColour", "check_trainable_noise", "fourier_colour"]

#: What a network can be trained with (``--noise-spectrum`` of ``train-unet``).
TRAINABLE = "white, equal-snr or power:GAMMA"


def check_trainable_noise(spec: str) -> str:
    """``spec`` if a network can be trained with it, else InputError naming ``noise_spectrum``.

    Parameters
    ----------
    spec : str
        ``"white"``, ``"equal-snr"`` or ``"power:GAMMA"`` (GAMMA in [0, 2]).

    Raises
    ------
    InputError
        Another name (FANS, a file) or a bad GAMMA (message of
        :func:`specsched.theory.noise.noise_spectrum`).
    """
    if not isinstance(spec, str) or not (spec in ("white", "equal-snr")
                                         or spec.startswith("power:")):
        raise InputError(f"noise_spectrum: a network trains with {TRAINABLE} forward noise, "
                         f"got {spec!r} (FANS changes with the level and a .npy file gives "
                         "variances in eigenvalue order, not per frequency)",
                         param="noise_spectrum")
    noise_spectrum(spec, np.ones(1))  # checks GAMMA
    return spec


@dataclass(frozen=True, eq=False)
class FourierColour:
    """A constant forward-noise spectrum on the DFT grid of ``H x W`` images.

    Attributes
    ----------
    label : str
        :attr:`specsched.theory.noise.NoiseSpectrum.label` (``"equal-snr"``, ``"power:0.5"``):
        what a schedule file made for this noise records.
    variances : ndarray of shape (H, W), float64
        ``c_f`` per DFT frequency (DC first), symmetric, mean 1, all > 0.
    """

    label: str
    variances: np.ndarray

    @property
    def sorted_variances(self) -> np.ndarray:
        """``c_f`` sorted descending (d,): the variances of the NoiseSpectrum of the Fourier
        model's (sorted) eigenvalues."""
        return np.sort(self.variances.ravel())[::-1]

    def half_std(self) -> np.ndarray:
        """``sqrt(c_f)`` on the rfft2 half-plane, shape (H, W // 2 + 1), float64."""
        return np.sqrt(self.variances[:, : self.variances.shape[1] // 2 + 1])

    def colour(self, z: np.ndarray, axes=(1, 2)) -> np.ndarray:
        """``C^(1/2) z`` by FFT (module docstring), float64, the shape of ``z``.

        Parameters
        ----------
        z : ndarray of shape (..., H, W, ...), float
            White noise; ``axes`` are its two image axes (NHWC: (1, 2)).
        """
        h, w = self.variances.shape
        m = self.half_std().reshape(
            [h if i == axes[0] % z.ndim else (w // 2 + 1 if i == axes[1] % z.ndim else 1)
             for i in range(z.ndim)])
        f = np.fft.rfft2(np.asarray(z, dtype=np.float64), axes=axes, norm="ortho")
        return np.fft.irfft2(m * f, s=(h, w), axes=axes, norm="ortho")

    def colour_torch(self, z):
        """``C^(1/2) z`` of a torch tensor ``z`` (N, C, H, W), float32 (training)."""
        import torch

        m = torch.from_numpy(self.half_std()).to(z.dtype)
        f = torch.fft.rfft2(z, norm="ortho")
        return torch.fft.irfft2(f * m, s=tuple(self.variances.shape), norm="ortho")


def fourier_colour(spec: str, images: np.ndarray) -> FourierColour | None:
    """The :class:`FourierColour` of ``spec`` for training images; None for white.

    Parameters
    ----------
    spec : str
        ``"white"``, ``"equal-snr"`` or ``"power:GAMMA"`` (:func:`check_trainable_noise`).
    images : ndarray of shape (N, H, W) or (N, H, W, 1), float
        The data whose per-frequency power ``P(f)`` shapes the noise (N >= 2).

    Returns
    -------
    FourierColour or None
        ``c_f`` from the symmetrised power ``(P(f) + P(-f)) / 2`` (equal for real data up to
        round-off), by the rule of :func:`specsched.theory.noise.noise_spectrum`.

    Raises
    ------
    InputError
        A spec that cannot be trained, or images with more than one channel.
    """
    check_trainable_noise(spec)
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[3] != 1 or x.ndim not in (3, 4):
        raise InputError(f"images: coloured noise is defined for single-channel images "
                         f"(N, H, W[, 1]), got shape {x.shape}", param="noise_spectrum")
    power = FourierEstimator().fit(x.reshape(x.shape[:3])).power_
    mirror = power[(-np.arange(power.shape[0])) % power.shape[0]][
        :, (-np.arange(power.shape[1])) % power.shape[1]]
    power = 0.5 * (power + mirror)
    noise = noise_spectrum(spec, power.ravel())  # the same rule, frequency by frequency
    if noise.is_white:
        return None
    return FourierColour(noise.label, noise.variances.reshape(power.shape))
