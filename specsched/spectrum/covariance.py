"""Streaming estimate of the mean and covariance of samples, and its eigen-decomposition.

Notation (docs/theory.md section 6)
------------------------------
Samples ``x_i`` in ``R^d`` (flattened), ``i = 1..n``. Each chunk is summarised by its count
``n``, mean ``xbar`` and centred second moment ``M2 = sum_i (x_i - xbar)(x_i - xbar)^T``
(``Xc^T Xc``), accumulated in float64. Two summaries ``A``, ``B`` merge exactly with the
pairwise update of Chan, Golub & LeVeque (1979), with ``delta = xbar_B - xbar_A``::

    n    = n_A + n_B
    xbar = xbar_A + delta * n_B / n
    M2   = M2_A + M2_B + outer(delta, delta) * n_A * n_B / n

Never forming ``sum x x^T`` keeps it accurate for data far from the origin, where the naive
``E[x x^T] - xbar xbar^T`` cancels catastrophically. The covariance is ``M2 / (n - 1)``
(unbiased, as :func:`numpy.cov`); :func:`scipy.linalg.eigh` then gives
``Sigma = U diag(lam) U^T``.

References
----------
T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for
computing sample variances", Stanford CS report STAN-CS-79-773, 1979.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg

from specsched.data.arrays import check_samples
from specsched.errors import InputError
from specsched.spectrum.moments import Moments, chunk_moments, merge_moments
from specsched.spectrum.spectrum import Spectrum

__all__ = ["StreamingCovariance", "spectrum_from_samples"]

#: Eigenvalues of the estimated covariance above ``-_ROUNDOFF * max`` are round-off of a
#: positive semi-definite matrix and are set to 0 without a warning.
_ROUNDOFF = 1e-6


def _check_chunk_size(chunk_size) -> int:
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or (chunk_size < 1)
    ):
        raise InputError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _chunks(X, chunk_size: int):
    """Yield consecutive slices ``X[start:start + chunk_size]`` along axis 0."""
    for start in range(0, X.shape[0], chunk_size):
        yield X[start : start + chunk_size]


def _numpy_xp():
    from specsched.spectrum.moments import get_namespace

    return get_namespace("cpu")


class StreamingCovariance:
    """Mean and covariance accumulated chunk by chunk (float64, Chan et al. update).

    Shaped like a scikit-learn estimator: :meth:`partial_fit`, :meth:`fit` and :meth:`merge`
    return ``self``; learned values end in an underscore.

    Attributes
    ----------
    n_samples_seen_ : int
        Number of samples accumulated so far (0 before any data).
    mean_ : ndarray of shape (n_features,), float64
        Mean of the flattened samples; ``None`` before any data.
    covariance_ : ndarray of shape (n_features, n_features), float64
        Unbiased covariance ``M2 / (n - 1)`` (property, as :func:`numpy.cov`).
    n_features_ : int or None
        Flattened sample dimension ``d``, fixed by the first data seen.
    sample_shape_ : tuple of int or None
        Shape of one sample in the first chunk seen (before flattening).

    Examples
    --------
    >>> est = StreamingCovariance()
    >>> for chunk in chunks:                       # doctest: +SKIP
    ...     est.partial_fit(chunk)
    >>> spectrum = est.to_spectrum(source="my data")  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.n_samples_seen_ = 0
        self.n_features_: int | None = None
        self.sample_shape_: tuple[int, ...] | None = None
        self.mean_: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Merge the summary ``(n_b, mean_b, m2_b)`` into ``self`` (Chan et al. update).

        The update itself is :func:`specsched.spectrum.moments.merge_moments` (one block of
        ``d`` coordinates), shared with the chunked estimators.
        """
        if n_b == 0:
            return
        mine = None
        if self.n_samples_seen_:
            mine = Moments(self.n_samples_seen_, self.mean_[None, :], self._m2[None])
        merged = merge_moments(mine, Moments(n_b, mean_b[None, :], m2_b[None]), _numpy_xp())
        self.n_samples_seen_ = merged.n
        self.mean_, self._m2 = np.array(merged.mean[0]), np.array(merged.m2[0])

    def _check_features(self, d: int, shape: tuple[int, ...], what: str) -> None:
        if self.n_features_ is None:
            self.n_features_, self.sample_shape_ = d, shape
        elif d != self.n_features_:
            raise InputError(
                f"{what}: samples have {d} values each, earlier ones had {self.n_features_} "
                f"(sample shape {shape} vs {self.sample_shape_}); all samples must match"
            )

    def partial_fit(self, X) -> StreamingCovariance:
        """Add a chunk of samples.

        Parameters
        ----------
        X : array_like of shape (n, ...)
            ``n`` samples along axis 0, each flattened to ``d = prod(X.shape[1:])`` values;
            a 1-D array is ``n`` scalar samples (``d = 1``). Converted to float64; ``n = 0``
            is allowed and changes nothing.

        Returns
        -------
        self

        Raises
        ------
        InputError
            If ``X`` is not a finite real array or ``d`` differs from earlier chunks.
        """
        X = np.asarray(X)
        if X.ndim >= 1 and X.shape[0] == 0:  # empty chunk: only the shape is checked
            self._check_features(int(np.prod(X.shape[1:])), X.shape[1:], "X")
            return self
        X = check_samples(X, "X")
        self._check_features(int(np.prod(X.shape[1:])), X.shape[1:], "X")
        m = chunk_moments(X.reshape(X.shape[0], 1, -1), _numpy_xp())
        self._combine(m.n, m.mean[0], m.m2[0])
        return self

    def merge(self, other: StreamingCovariance) -> StreamingCovariance:
        """Add the samples summarised by another estimator (e.g. fitted in another process).

        Parameters
        ----------
        other : StreamingCovariance
            Unchanged by the call.

        Returns
        -------
        self

        Raises
        ------
        InputError
            If ``other`` is not a StreamingCovariance or its ``d`` differs from ``self``'s.
        """
        if not isinstance(other, StreamingCovariance):
            raise InputError(f"other: expected a StreamingCovariance, got {type(other).__name__}")
        if other.n_features_ is not None:
            self._check_features(other.n_features_, other.sample_shape_, "other")
        if other.n_samples_seen_:
            self._combine(other.n_samples_seen_, other.mean_, other._m2)
        return self

    def fit(self, X, chunk_size: int = 4096) -> StreamingCovariance:
        """Estimate from scratch on ``X``, ``chunk_size`` samples at a time.

        Parameters
        ----------
        X : array_like of shape (n, ...)
            Samples along axis 0 (a :func:`numpy.memmap` works: only one chunk at a time is
            converted to float64).
        chunk_size : int
            Samples per chunk; memory is ``O(chunk_size * d + d^2)``.

        Returns
        -------
        self

        Raises
        ------
        InputError
            As :meth:`partial_fit`, or if ``chunk_size`` is not a positive integer.
        """
        chunk_size = _check_chunk_size(chunk_size)
        self._reset()
        X = X if hasattr(X, "shape") else np.asarray(X)
        for chunk in _chunks(X, chunk_size):
            self.partial_fit(chunk)
        return self

    @property
    def covariance_(self) -> np.ndarray:
        """Unbiased covariance ``M2 / (n - 1)``, ndarray of shape (d, d), float64.

        Raises
        ------
        InputError
            If fewer than 2 samples were seen.
        """
        if self.n_samples_seen_ < 2:
            raise InputError(f"covariance: needs at least 2 samples, got {self.n_samples_seen_}")
        return self._m2 / (self.n_samples_seen_ - 1)

    def to_spectrum(self, source: str = "samples", sample_shape=None) -> Spectrum:
        """Eigen-decompose the covariance into a :class:`Spectrum`.

        Parameters
        ----------
        source : str
            Provenance label stored in the spectrum.
        sample_shape : tuple of int, optional
            Shape of one sample; defaults to :attr:`sample_shape_`.

        Returns
        -------
        Spectrum
            ``eigenvalues`` (d,) descending, ``eigenvectors`` ``U`` (d, d) with
            ``covariance_ = U diag(eigenvalues) U^T``, ``mean = U^T mean_``,
            ``n_samples = n_samples_seen_``, ``method = "full"``. Eigenvalues that
            :func:`scipy.linalg.eigh` returns slightly negative (above ``-1e-6 x max``,
            round-off of a semi-definite matrix) are set to 0 silently.

        Raises
        ------
        InputError
            If fewer than 2 samples were seen, or the data have no variance at all.
        """
        cov = self.covariance_
        lam, U = scipy.linalg.eigh(cov, check_finite=False)  # ascending
        lam, U = lam[::-1].copy(), np.ascontiguousarray(U[:, ::-1])
        lam[(lam < 0) & (lam >= -_ROUNDOFF * max(float(lam[0]), 0.0))] = 0.0
        return Spectrum(
            eigenvalues=lam,
            mean=U.T @ self.mean_,
            eigenvectors=U,
            n_samples=self.n_samples_seen_,
            source=source,
            method="full",
            sample_shape=self.sample_shape_ if sample_shape is None else sample_shape,
        )


def spectrum_from_samples(X, *, chunk_size: int = 4096, source: str = "samples") -> Spectrum:
    """Spectrum of the empirical covariance of samples (full covariance + eigh).

    Parameters
    ----------
    X : array_like of shape (n_samples, ...)
        Samples along axis 0, ``n_samples >= 2``; each is flattened to
        ``d = prod(X.shape[1:])`` values. Memory ``O(chunk_size * d + d^2)``, time
        ``O(n_samples d^2 + d^3)``.
    chunk_size : int
        Samples accumulated at a time. A tqdm progress bar is shown when there are more
        than 8 chunks (hidden when stderr is not a terminal).
    source : str
        Provenance label.

    Returns
    -------
    Spectrum
        As :meth:`StreamingCovariance.to_spectrum`, with ``sample_shape = X.shape[1:]``.

    Raises
    ------
    InputError
        If ``X`` is not a finite real array of at least 2 samples, or has no variance.
    """
    chunk_size = _check_chunk_size(chunk_size)
    X = X if hasattr(X, "shape") else np.asarray(X)
    n_chunks = -(-X.shape[0] // chunk_size) if X.ndim else 0
    if X.ndim == 0 or X.shape[0] < 2:
        raise InputError(
            f"{source}: needs at least 2 samples of shape (N, ...), got shape {X.shape}"
        )
    from tqdm.auto import tqdm

    est = StreamingCovariance()
    bar = tqdm(
        _chunks(X, chunk_size),
        total=n_chunks,
        desc="covariance",
        unit="chunk",
        disable=None if n_chunks > 8 else True,
    )
    for chunk in bar:
        est.partial_fit(chunk)
    return est.to_spectrum(source=source)
