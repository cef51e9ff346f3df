"""Block-moment estimators: the shift-invariant (Fourier) model and per-coordinate variances.

Notation (docs/theory.md section 6)
-----------------------------------
A sample ``x`` of shape ``(L,)``, ``(H, W)`` or ``(H, W, C)`` is transformed by the unitary
DFT ``F`` (``norm="ortho"``) over its spatial axes; the model keeps, per frequency ``f``, the
``C x C`` Hermitian cross-power ``P_f = E[(F x - F mu)_f (F x - F mu)_f^H]`` (the diagonal
blocks of ``Sigma`` in the Fourier basis, which diagonalises every block-circulant
covariance). Its ``d = prod(spatial) x C`` eigenvalues are those of every ``P_f``. The mean
entry of frequency ``f`` and channel eigenvector ``v`` is ``|v^H (F mu)_f|``, a magnitude;
real Fourier eigenvectors pair ``f`` with ``-f`` (same eigenvalue) and the pair's squared
mean components sum to ``|z_f|^2 + |z_-f|^2``, so the losses are exact. No ``d x d`` matrix
is formed.

:class:`DiagonalVariance` is the same machinery with blocks of one coordinate: the means and
variances of the coordinates, whose sum is the trace of ``Sigma`` (randomized PCA's first
pass). Both accumulate :class:`specsched.spectrum.moments.Moments` with the Chan et al.
update, in any array-API namespace.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError
from specsched.spectrum.chunked import ChunkedEstimator, clip_roundoff
from specsched.spectrum.moments import (
    Moments,
    as_blocks,
    chunk_moments,
    merge_moments,
    moments_to_numpy,
    to_numpy,
)
from specsched.spectrum.spectrum import Spectrum

__all__ = ["DiagonalVariance", "FourierEstimator", "fourier_power"]


class _BlockMoments(ChunkedEstimator):
    """Moments in the block layout ``layout`` of :func:`~specsched.spectrum.moments.as_blocks`."""

    layout = ""

    def _reset_state(self) -> None:
        self.moments_: Moments | None = None

    def _update(self, X, n: int) -> None:
        xp = self._ns()
        m = chunk_moments(as_blocks(xp.astype(X, xp.float64), self.layout, xp), xp)
        self.moments_ = merge_moments(self.moments_, m, xp)

    def _merge_state(self, other) -> None:
        xp = self._ns()
        m = other.moments_
        self.moments_ = merge_moments(
            self.moments_, Moments(m.n, xp.asarray(to_numpy(m.mean)), xp.asarray(to_numpy(m.m2))),
            xp)

    def _largest_second_moment(self) -> float:
        if self.moments_ is None:
            return 0.0
        xp = self._ns()
        return float(xp.max(xp.real(xp.linalg.diagonal(self.moments_.m2))))

    def host_moments(self) -> Moments:
        """The accumulated :class:`~specsched.spectrum.moments.Moments` as NumPy arrays.

        Raises
        ------
        InputError
            If no sample was seen.
        """
        if self.moments_ is None:
            raise InputError("no samples were seen")
        return moments_to_numpy(self.moments_)


class FourierEstimator(_BlockMoments):
    """Shift-invariant (Fourier) model of the covariance, accumulated chunk by chunk.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    xp : module, optional
        As :class:`specsched.spectrum.chunked.ChunkedEstimator`.

    Attributes
    ----------
    moments_ : Moments or None
        Fourier-layout summary: mean (P, C), m2 (P, C, C), complex128, in the namespace of
        the device (``P`` frequencies, ``C`` channels).
    n_samples_seen_, sample_shape_, n_features_in_, data_min_, data_max_
        As :class:`~specsched.spectrum.chunked.ChunkedEstimator`.
    """

    layout = "fourier"

    def _check_sample_shape(self, shape, name):
        if len(shape) not in (1, 2, 3):
            raise InputError(
                f"{name}: the Fourier model needs samples of shape (L,), (H, W) or "
                f"(H, W, C); got {shape}"
            )

    @property
    def power_(self) -> np.ndarray:
        """Per-frequency power of the centred data (see :func:`fourier_power`)."""
        return fourier_power(self.host_moments(), self.sample_shape_)

    def to_spectrum(self, source: str = "samples") -> Spectrum:
        """The Fourier-model :class:`Spectrum` (module docstring).

        Returns
        -------
        Spectrum
            ``d`` eigenvalues, mean magnitudes, no eigenvectors, ``method="fourier"``.

        Raises
        ------
        InputError
            Fewer than 2 samples, overflow or underflow of float64, no variance.
        """
        if self.n_samples_seen_ < 2:
            raise InputError(f"{source}: needs at least 2 samples, got {self.n_samples_seen_}")
        self.check_range(source)
        m = self.host_moments()
        blocks = m.m2 / (m.n - 1)
        blocks = 0.5 * (blocks + np.conj(np.swapaxes(blocks, 1, 2)))  # exact Hermitian
        lam, V = np.linalg.eigh(blocks)  # (P, C), (P, C, C)
        mean = np.abs(np.einsum("pcj,pc->pj", np.conj(V), m.mean))
        return Spectrum(
            eigenvalues=clip_roundoff(lam.ravel()),
            mean=mean.ravel(),
            n_samples=m.n,
            source=source,
            method="fourier",
            sample_shape=self.sample_shape_,
        )


class DiagonalVariance(_BlockMoments):
    """Per-coordinate means and variances, accumulated chunk by chunk.

    Attributes
    ----------
    mean_ : ndarray of shape (d,), float64
        Host copy of the coordinate means.
    variances_ : ndarray of shape (d,), float64
        Unbiased per-coordinate variances; their sum is ``tr Sigma``.
    """

    layout = "diag"

    @property
    def mean_(self) -> np.ndarray:
        """Coordinate means, ndarray of shape (d,), float64 (host copy)."""
        return np.real(self.host_moments().mean[:, 0])

    @property
    def variances_(self) -> np.ndarray:
        """Unbiased coordinate variances ``M2_jj / (n - 1)``, ndarray of shape (d,), float64.

        Raises
        ------
        InputError
            If fewer than 2 samples were seen.
        """
        m = self.host_moments()
        if m.n < 2:
            raise InputError(f"variances: needs at least 2 samples, got {m.n}")
        return np.real(m.m2[:, 0, 0]) / (m.n - 1)


def fourier_power(m: Moments, sample_shape) -> np.ndarray:
    """Per-frequency power of the centred data from Fourier moments.

    Parameters
    ----------
    m : Moments
        Fourier-layout moments (NumPy), mean (P, C), m2 (P, C, C).
    sample_shape : tuple of int
        ``(L,)``, ``(H, W)`` or ``(H, W, C)``.

    Returns
    -------
    ndarray of shape (L,) or (H, W), float64
        ``E|F(x - mu)_f|^2`` summed over channels (trace of the C x C block), in
        :func:`numpy.fft.fftfreq` order (DC first, not shifted); sums to the total variance
        ``tr Sigma`` (Parseval, unitary DFT).
    """
    spatial = tuple(sample_shape[:2]) if len(sample_shape) == 3 else tuple(sample_shape)
    power = np.real(np.trace(m.m2, axis1=1, axis2=2)) / (m.n - 1)
    return power.reshape(spatial)
