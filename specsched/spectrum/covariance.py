"""Streaming estimate of the mean and covariance of samples, and its eigen-decomposition.

Notation (docs/theory.md section 6)
-----------------------------------
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

One product per chunk carries both terms of the update. Centring chunk ``B`` on
``c = xbar_B - u`` instead of its mean, the cross terms vanish (``sum_i (x_i - xbar_B) = 0``)::

    sum_i (x_i - c)(x_i - c)^T = M2_B + n_B u u^T,   and with u = delta sqrt(n_A / n):
                               = M2_B + outer(delta, delta) n_A n_B / n,

exactly what Chan's update adds to ``M2_A`` (docs/theory.md section 6). The first chunk
(``n_A = 0``) is centred on its own mean.

Implementation: on the CPU with NumPy, ``M2`` is one Fortran-ordered ``d x d`` float64 array
updated in place by BLAS. A chunk is read twice: once by
:func:`specsched.spectrum.colstats.column_stats` (column means, minima, maxima, and the proof
that every value is finite, in one compiled pass), once by the subtraction of ``c`` that
writes the centred float64 copy (converting float32 on the way) into a buffer kept from chunk
to chunk; then one ``dsyrk`` (``M2 += Xc^T Xc``, upper triangle): no ``d x d`` temporary, no
rank-one update of its own. Other array-API namespaces (CuPy, array-api-strict) run the same
algebra as array expressions (``M2 += matmul(Xc^T, Xc)``), and
:meth:`StreamingCovariance.eigh` decomposes on the device with ``xp.linalg.eigh``
(:func:`scipy.linalg.eigh` on the NumPy path).

References
----------
T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for
computing sample variances", Stanford CS report STAN-CS-79-773, 1979.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsyr, dsyrk

from specsched.data.arrays import check_samples
from specsched.data.sources import DataSource, source_from_array
from specsched.errors import InputError
from specsched.spectrum.chunked import ChunkedEstimator, check_chunk_size, clip_roundoff
from specsched.spectrum.memory import check_memory, plan_memory
from specsched.spectrum.moments import Moments, merge_moments, to_numpy
from specsched.spectrum.spectrum import Spectrum

__all__ = ["StreamingCovariance", "spectrum_from_samples"]


class StreamingCovariance(ChunkedEstimator):
    """Mean and covariance accumulated chunk by chunk (float64, Chan et al. update).

    The one full-covariance estimator of specsched: :func:`spectrum_from_samples`,
    :func:`specsched.spectrum.estimate_spectrum` (``method="full"`` and dense PCA), the dask
    path and :func:`specsched.spectrum.load_spectrum` all use it. Shaped like a scikit-learn
    incremental estimator: :meth:`partial_fit`, :meth:`fit` and :meth:`merge` return
    ``self``; learned values end in an underscore.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the sums are accumulated (CuPy for ``"cuda"``).
    xp : module, optional
        Array-API namespace on the CPU (e.g. :mod:`array_api_strict`); default NumPy, with
        the in-place BLAS update of the module docstring.

    Attributes
    ----------
    n_samples_seen_ : int
        Number of samples accumulated so far (0 before any data).
    mean_ : array of shape (n_features,), float64
        Mean of the flattened samples (namespace of the device); ``None`` before any data.
    covariance_ : array of shape (n_features, n_features), float64
        Unbiased covariance ``M2 / (n - 1)`` (property, as :func:`numpy.cov`; a new array).
    n_features_in_ : int or None
        Flattened sample dimension ``d``, fixed by the first data seen.
    sample_shape_ : tuple of int or None
        Shape of one sample (before flattening).
    data_min_, data_max_ : array of shape (n_features,)
        Per-coordinate range of the samples seen.

    Examples
    --------
    >>> est = StreamingCovariance()
    >>> for chunk in chunks:                       # doctest: +SKIP
    ...     est.partial_fit(chunk)
    >>> spectrum = est.to_spectrum(source="my data")  # doctest: +SKIP
    """

    _SCRATCH = ("_chunk_buffer",)

    def _reset_state(self) -> None:
        self.mean_ = None
        self._m2 = None  # host: Fortran order, upper triangle valid; else full symmetric

    def _allocate(self, d: int) -> None:
        check_memory(plan_memory("full", d, 0), "covariance")
        xp = self._ns()
        if self._on_host:
            self._m2 = np.zeros((d, d), dtype=np.float64, order="F")
        else:
            self._m2 = xp.zeros((d, d), dtype=xp.float64)

    def _rows(self, n: int, d: int) -> np.ndarray:
        """A C-ordered (n, d) float64 view of the buffer kept between chunks (grown as
        needed). Its transpose is the Fortran-ordered operand ``dsyrk`` reads without a copy."""
        buf = self.__dict__.get("_chunk_buffer")
        if buf is None or buf.shape[0] < n or buf.shape[1] != d:
            buf = self._chunk_buffer = np.empty((n, d), dtype=np.float64)
        return buf[:n]

    def _centre(self, mean_b, n: int):
        """The centre ``c`` of a chunk of ``n`` samples of mean ``mean_b`` and the mean of
        all samples after it (module docstring: ``c = xbar_B - delta sqrt(n_A / n)``)."""
        n_a = self.n_samples_seen_
        if n_a == 0:
            return mean_b, mean_b
        delta = mean_b - self.mean_
        return mean_b - delta * math.sqrt(n_a / (n_a + n)), self.mean_ + delta * (n / (n_a + n))

    def _fold_chunk(self, X, n: int, name: str) -> None:
        if not self._on_host:
            super()._fold_chunk(X, n, name)
            return
        from specsched.spectrum.colstats import column_stats  # numba: imported on first use

        d = self.n_features_in_
        flat = X.reshape(n, d)
        stats = column_stats(flat)  # read 1: means, range, finiteness
        if not np.all(np.isfinite(stats.sums)):
            check_samples(flat, name)  # a NaN or Inf: raises, with its count and first sample
            # else finite values whose sums overflowed: check_range reports it after the update
        if self._m2 is None:
            self._allocate(d)
        self._extend_range(stats.low, stats.high)
        centre, self.mean_ = self._centre(stats.mean, n)
        Xc = self._rows(n, d)
        np.subtract(flat, centre, out=Xc, dtype=np.float64)  # read 2: the centred copy
        self._m2 = dsyrk(1.0, Xc.T, beta=1.0, c=self._m2, lower=0, overwrite_c=1)

    def _update(self, X, n: int) -> None:
        """Namespace path (CuPy, array-api-strict): the host algebra as array expressions."""
        xp = self._ns()
        d = self.n_features_in_
        if self._m2 is None:
            self._allocate(d)
        flat = xp.astype(xp.reshape(X, (n, d)), xp.float64)
        first = flat[0, :]
        mean_b = first + xp.mean(flat - first, axis=0)  # about the first row, as column_stats
        centre, self.mean_ = self._centre(mean_b, n)
        Xc = flat - centre
        self._m2 += xp.matmul(xp.matrix_transpose(Xc), Xc)  # the state owns _m2: no alias

    def _rank_one(self, n_a: int, n_b: int, mean_b: np.ndarray) -> None:
        """Host path: ``M2 += outer(delta, delta) n_a n_b / n``, ``mean`` update (Chan)."""
        if n_a == 0:
            self.mean_ = np.array(mean_b, dtype=np.float64)
            return
        n = n_a + n_b
        delta = mean_b - self.mean_
        self._m2 = dsyr(n_a * n_b / n, delta, lower=0, a=self._m2, overwrite_a=1)
        self.mean_ = self.mean_ + delta * (n_b / n)

    def _fold(self, m: Moments) -> None:
        """Namespace path: merge a (1, d) block summary with the state."""
        xp = self._ns()
        mine = None
        if self.n_samples_seen_:
            mine = Moments(self.n_samples_seen_, self.mean_[None, :], self._m2[None, ...])
        merged = merge_moments(mine, m, xp)
        self.mean_, self._m2 = merged.mean[0, :], merged.m2[0, ...]

    def _merge_state(self, other: StreamingCovariance) -> None:
        xp = self._ns()
        if self._m2 is None:
            self._allocate(self.n_features_in_)
        if self._on_host:
            m2 = to_numpy(other._m2)  # upper triangle valid in both layouts
            if self.n_samples_seen_ == 0:
                self._m2[...] = m2
                self.mean_ = np.array(to_numpy(other.mean_), dtype=np.float64)
                return
            self._m2 += m2
            self._rank_one(self.n_samples_seen_, other.n_samples_seen_, to_numpy(other.mean_))
            return
        m2 = xp.asarray(to_numpy(other._full_m2()), copy=True)  # owned: updated in place later
        mean = xp.asarray(to_numpy(other.mean_), copy=True)
        self._fold(Moments(other.n_samples_seen_, mean[None, :], m2[None, ...]))

    def _full_m2(self):
        """``M2`` with both triangles (a new array on the host path)."""
        if not self._on_host:
            return self._m2
        upper = np.triu(self._m2)
        upper += np.triu(self._m2, 1).T
        return upper

    def _diagonal(self):
        """``diag(M2)`` (a view on the host, an array of the namespace otherwise)."""
        if self._on_host:
            return np.diagonal(self._m2)
        return self._ns().linalg.diagonal(self._m2)

    def _largest_second_moment(self) -> float:
        if self._m2 is None:
            return 0.0
        return float(self._ns().max(self._diagonal()))

    def _denominator(self, name: str) -> int:
        """``n - 1`` of the unbiased estimates, or an InputError naming ``name``."""
        if self.n_samples_seen_ < 2:
            raise InputError(f"{name}: needs at least 2 samples, got {self.n_samples_seen_}")
        return self.n_samples_seen_ - 1

    @property
    def covariance_(self):
        """Unbiased covariance ``M2 / (n - 1)``, array of shape (d, d), float64 (a new array).

        Raises
        ------
        InputError
            If fewer than 2 samples were seen.
        """
        return self._full_m2() / self._denominator("covariance")

    @property
    def variances_(self) -> np.ndarray:
        """Unbiased per-coordinate variances ``diag(M2) / (n - 1)``, ndarray of shape (d,),
        float64 (host copy); their sum is ``tr Sigma``.

        Raises
        ------
        InputError
            If fewer than 2 samples were seen.
        """
        n1 = self._denominator("variances")
        return np.array(to_numpy(self._diagonal()), dtype=np.float64) / n1

    def eigh(self, rank: int | None = None, source: str = "samples"):
        """Eigenpairs of :attr:`covariance_`, largest first, on the device of the estimator.

        NumPy: :func:`scipy.linalg.eigh` on a Fortran copy of the upper triangle, overwritten
        by the eigenvectors (LAPACK ``syevd``, divide and conquer; ``syevr`` on the index
        subset of the top ``rank`` when ``rank < d``). Other namespaces (CuPy on a GPU,
        array-api-strict): ``xp.linalg.eigh`` of the whole matrix there (cuSOLVER ``syevd``
        for CuPy), then the top ``rank``; only the results come to the host.

        Parameters
        ----------
        rank : int, optional
            Number of eigenpairs ``k``, ``1 <= k <= d``; default all ``d``.
        source : str
            Provenance label quoted in errors.

        Returns
        -------
        eigenvalues : ndarray of shape (k,), float64, descending
            Not clipped (round-off may leave tiny negatives; see :func:`clip_roundoff`).
        eigenvectors : ndarray of shape (d, k), float64
            Orthonormal columns, column ``j`` for eigenvalue ``j`` (signs as the solver's).

        Raises
        ------
        InputError
            If fewer than 2 samples were seen, or the sums overflowed or the variances
            underflowed float64 (the message says how to rescale).
        """
        n1 = self._denominator(source)
        self.check_range(source)
        self._drop_scratch()
        d = self.n_features_in_
        k = d if rank is None else int(rank)
        if self._on_host:
            cov = np.empty((d, d), dtype=np.float64, order="F")
            np.divide(self._m2, n1, out=cov)
            # the upper triangle is valid; the eigenvectors overwrite cov (a 2 d^2 workspace)
            subset = None if k == d else [d - k, d - 1]
            lam, U = scipy.linalg.eigh(cov, lower=False, overwrite_a=True, check_finite=False,
                                       driver="evd" if subset is None else None,
                                       subset_by_index=subset)
        else:
            xp = self._ns()
            lam, U = xp.linalg.eigh(self._m2 / n1)
            lam, U = to_numpy(lam[d - k:]), to_numpy(U[:, d - k:])
        return lam[::-1], U[:, ::-1]

    def to_spectrum(self, source: str = "samples", sample_shape=None) -> Spectrum:
        """Eigen-decompose the covariance into a :class:`Spectrum` (with :meth:`eigh`).

        Parameters
        ----------
        source : str
            Provenance label stored in the spectrum (and quoted in errors).
        sample_shape : tuple of int, optional
            Shape of one sample; defaults to :attr:`sample_shape_`.

        Returns
        -------
        Spectrum
            ``eigenvalues`` (d,) descending, ``eigenvectors`` ``U`` (d, d) with
            ``covariance_ = U diag(eigenvalues) U^T``, ``mean = U^T mean_``,
            ``n_samples = n_samples_seen_``, ``method = "full"``. Eigenvalues that the
            solver returns slightly negative (above ``-1e-6 x max``, round-off of a
            semi-definite matrix) are set to 0 silently. Memory on the host: the
            accumulated ``M2`` plus four ``d x d`` float64 arrays at the peak (the
            covariance overwritten by its eigenvectors, LAPACK's workspace of two, the copy
            in the Spectrum; :mod:`specsched.spectrum.memory`); on a GPU, the eigenvectors
            are copied to the host once.

        Raises
        ------
        InputError
            If fewer than 2 samples were seen, if the sums overflowed or the variances
            underflowed float64 (the message says how to rescale), or the data have no
            variance at all.
        """
        lam, U = self.eigh(source=source)
        return Spectrum(
            eigenvalues=clip_roundoff(lam),
            mean=U.T @ to_numpy(self.mean_),
            eigenvectors=U,
            n_samples=self.n_samples_seen_,
            source=source,
            method="full",
            sample_shape=self.sample_shape_ if sample_shape is None else sample_shape,
        )


def spectrum_from_samples(X, *, chunk_size: int = 4096, source: str = "samples") -> Spectrum:
    """Spectrum of the empirical covariance of samples (full covariance + eigh).

    The pure-function front of :class:`StreamingCovariance`:
    ``StreamingCovariance().fit(X, chunk_size).to_spectrum(source)``.

    Parameters
    ----------
    X : array_like of shape (n_samples, ...) or DataSource
        Samples along axis 0, ``n_samples >= 2``; each is flattened to
        ``d = prod(X.shape[1:])`` values, used as given (see
        :mod:`specsched.data.scaling` for how files are read). Memory
        ``O(chunk_size * d + d^2)``, time ``O(n_samples d^2 + d^3)``.
    chunk_size : int
        Samples accumulated at a time (a progress bar for more than 8 chunks).
    source : str
        Provenance label.

    Returns
    -------
    Spectrum
        As :meth:`StreamingCovariance.to_spectrum`, with ``sample_shape = X.shape[1:]``.

    Raises
    ------
    InputError
        If ``X`` is not a finite real array of at least 2 samples, does not fit in memory
        (the message gives the sizes), overflows or underflows float64, or has no variance.
    """
    chunk_size = check_chunk_size(chunk_size)
    if not isinstance(X, DataSource):
        X = X if hasattr(X, "shape") else np.asarray(X)
        if X.ndim == 0 or X.shape[0] < 2:
            raise InputError(
                f"{source}: needs at least 2 samples of shape (N, ...), got shape {X.shape}"
            )
        X = source_from_array(X, source)
    check_memory(plan_memory("full", X.dimension, min(chunk_size, X.n_samples), X.itemsize),
                 source)
    return StreamingCovariance().fit(X, chunk_size).to_spectrum(source=source)
