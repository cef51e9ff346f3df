"""What every chunked moment estimator shares: chunks in, checks, fit, the float64 range.

The estimators (:class:`specsched.spectrum.covariance.StreamingCovariance`,
:class:`specsched.spectrum.fourier.FourierEstimator`,
:class:`specsched.spectrum.fourier.DiagonalVariance`) are shaped like scikit-learn's
incremental estimators: :meth:`ChunkedEstimator.partial_fit`, :meth:`ChunkedEstimator.fit` and
:meth:`ChunkedEstimator.merge` return ``self``; constructor arguments are stored as given;
learned values end in an underscore. This base class keeps the bookkeeping they share: the
array namespace of the device, the sample shape, the count, the per-coordinate range of the
data (``data_min_``, ``data_max_``), and the check that the second moments are representable
in float64 (docs/theory.md section 6): squares of values above ``1.3e154`` overflow to
infinity, squares of deviations below ``1.5e-154`` underflow to (sub)normal numbers that have
lost their digits, and either would otherwise be reported as data "with no variance".
"""

from __future__ import annotations

import abc
import copy
import math
import numbers

import numpy as np

from specsched.data.arrays import check_samples
from specsched.data.sources import DataSource, checked_chunks, source_from_array
from specsched.errors import InputError
from specsched.spectrum.moments import get_namespace, to_numpy

__all__ = ["ChunkedEstimator", "check_chunk_size", "clip_roundoff"]

#: Eigenvalues of an estimated covariance above ``-ROUNDOFF * max`` are round-off of a
#: positive semi-definite matrix and are set to 0 without a warning.
ROUNDOFF = 1e-6
_FINFO = np.finfo(np.float64)
#: Largest variance below which float64 squares have lost digits (subnormal range).
_TINY_VARIANCE = float(_FINFO.tiny / _FINFO.eps)


def check_chunk_size(chunk_size) -> int:
    """``chunk_size`` as an int, or an InputError naming it."""
    if (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
            or chunk_size < 1):
        raise InputError(f"chunk_size (--chunk-size): expected an integer >= 1, got "
                         f"{chunk_size!r}")
    return int(chunk_size)


def clip_roundoff(lam: np.ndarray) -> np.ndarray:
    """Set the negatives within ``ROUNDOFF x max`` of a PSD matrix's eigenvalues to 0 (copy)."""
    top = max(float(np.max(lam)), 0.0)
    lam = np.array(lam, dtype=np.float64)
    lam[(lam < 0) & (lam >= -ROUNDOFF * top)] = 0.0
    return lam


def _power_of_ten(x: float) -> float:
    return 10.0 ** round(math.log10(x)) if x > 0 and math.isfinite(x) else 1.0


class ChunkedEstimator(abc.ABC):
    """Base of the chunked moment estimators (not used on its own).

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the sums are accumulated (CuPy for ``"cuda"``).
    xp : module, optional
        Array-API namespace on the CPU (e.g. :mod:`array_api_strict`); default NumPy.

    Attributes
    ----------
    n_samples_seen_ : int
        Number of samples accumulated (0 before any data).
    sample_shape_ : tuple of int or None
        Shape of one sample, fixed by the first data seen.
    n_features_in_ : int or None
        ``d = prod(sample_shape_)``.
    data_min_, data_max_ : array of shape (d,) or None
        Per-coordinate range of the samples seen (in the namespace of the device).
    """

    def __init__(self, *, device: str = "cpu", xp=None) -> None:
        self.device = device
        self.xp = xp
        self._ns()  # fail early on a missing CUDA
        self._reset()

    # -------------------------------------------------------------- subclass interface
    @abc.abstractmethod
    def _reset_state(self) -> None:
        """Empty the accumulated state (before any data)."""

    @abc.abstractmethod
    def _update(self, X, n: int) -> None:
        """Fold a checked float chunk ``X`` of ``n`` samples (namespace array) into the state.

        Called before ``n_samples_seen_`` is increased (it is still the count before ``X``).
        """

    @abc.abstractmethod
    def _merge_state(self, other) -> None:
        """Fold another estimator's state in (``n_samples_seen_`` not yet increased)."""

    @abc.abstractmethod
    def _largest_second_moment(self) -> float:
        """Largest diagonal entry of the centred second moments (a float, may be inf/nan)."""

    def _check_sample_shape(self, shape: tuple[int, ...], name: str) -> None:  # noqa: B027
        """Refuse sample shapes the estimator cannot read (override; every shape by default)."""

    #: Attributes that are scratch space: neither pickled (dask) nor deep-copied.
    _SCRATCH: tuple[str, ...] = ()

    def _fold_chunk(self, X, n: int, name: str) -> None:
        """Check ``X`` (n samples, namespace array) for non-finite values, extend the range,
        fold it in (override to do all three in fewer passes over the chunk).

        The one finiteness check of a chunk (:meth:`_as_array` does not scan): NaN
        propagates through the minima and maxima, which the range needs anyway, on the
        device of the estimator; only a failing chunk is scanned again, on the host, for the
        message.
        """
        xp = self._ns()
        flat = xp.reshape(X, (n, -1))
        lo, hi = xp.min(flat, axis=0), xp.max(flat, axis=0)
        if not bool(xp.all(xp.isfinite(lo)) and xp.all(xp.isfinite(hi))):
            check_samples(to_numpy(flat), name)  # raises, with the count and first sample
        self._extend_range(lo, hi)
        self._update(X, n)

    def _extend_range(self, lo, hi) -> None:
        """``data_min_``, ``data_max_`` extended by per-coordinate minima ``lo``, maxima ``hi``."""
        if self.data_min_ is None:
            self.data_min_, self.data_max_ = lo, hi
        else:
            xp = self._ns()
            self.data_min_ = xp.minimum(self.data_min_, lo)
            self.data_max_ = xp.maximum(self.data_max_, hi)

    # -------------------------------------------------------------- shared machinery
    @property
    def _on_host(self) -> bool:
        """NumPy arrays on the CPU (the in-place BLAS paths apply)."""
        return self.device == "cpu" and self.xp is None

    def _ns(self):
        ns = self.__dict__.get("_namespace")
        if ns is None:
            ns = get_namespace(self.device, self.xp)
            self.__dict__["_namespace"] = ns
        return ns

    def __getstate__(self):  # picklable for dask: the namespace module is resolved again
        state = self.__dict__.copy()
        for key in ("_namespace",) + self._SCRATCH:
            state.pop(key, None)
        return state

    def __deepcopy__(self, memo):  # modules (xp, the namespace) are shared, arrays copied
        new = object.__new__(type(self))
        for key, value in self.__dict__.items():
            if key in self._SCRATCH:
                continue
            shared = key in ("xp", "_namespace")
            new.__dict__[key] = value if shared else copy.deepcopy(value, memo)
        return new

    def _reset(self) -> None:
        self.n_samples_seen_ = 0
        self.sample_shape_: tuple[int, ...] | None = None
        self.n_features_in_: int | None = None
        self.data_min_ = None
        self.data_max_ = None
        self._reset_state()

    def _check_shape(self, shape: tuple[int, ...], name: str) -> None:
        if self.sample_shape_ is None:
            self._check_sample_shape(shape, name)
            self.sample_shape_ = shape
            self.n_features_in_ = int(np.prod(shape, dtype=np.int64))
        elif shape != self.sample_shape_:
            raise InputError(
                f"{name}: samples of shape {shape} ({int(np.prod(shape))} values), earlier "
                f"ones {self.sample_shape_} ({self.n_features_in_} values); all chunks must "
                "match"
            )

    def _as_array(self, X, name: str):
        """``X`` as a real floating array of the namespace (host arrays are checked)."""
        xp = self._ns()
        if isinstance(X, np.ndarray) or not hasattr(X, "shape"):
            X = np.asarray(X)
            if X.ndim == 0:
                raise InputError(f"{name}: expected samples of shape (n, ...), got a scalar")
            if X.shape[0] == 0:
                return X
            X = check_samples(X, name, finite=False)  # _fold_chunk finds NaN and Inf
            return X if self._on_host else xp.asarray(X)
        if not xp.isdtype(X.dtype, "real floating"):
            X = xp.astype(X, xp.float64)
        return X

    def partial_fit(self, X, name: str = "X"):
        """Add a chunk of samples.

        Parameters
        ----------
        X : array of shape (n, *sample_shape)
            A NumPy array (checked: real, finite; integers used as numbers; moved to the
            device) or an array of the estimator's namespace. Float32 chunks are converted
            to float64 one chunk at a time. ``n = 0`` checks the shape only.
        name : str
            Label (file name) quoted in errors.

        Returns
        -------
        self

        Raises
        ------
        InputError
            If ``X`` is not a finite real array, its sample shape differs from earlier chunks
            (naming ``name``), or the sums overflow float64.
        """
        X = self._as_array(X, name)
        self._check_shape(tuple(int(s) for s in X.shape[1:]), name)
        n = int(X.shape[0])
        if n == 0:
            return self
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
                self._fold_chunk(X, n, name)
        except InputError:
            if self.n_samples_seen_ == 0:  # a refused first chunk fixes no sample shape
                self._reset()
            raise
        self.n_samples_seen_ += n
        if not math.isfinite(self._largest_second_moment()):
            self.check_range(name)
        return self

    def merge(self, other):
        """Add the samples summarised by another estimator of the same kind.

        Parameters
        ----------
        other : same class as ``self``
            Fitted elsewhere (another process, a dask worker); unchanged by the call.

        Returns
        -------
        self

        Raises
        ------
        InputError
            If ``other`` is of another class or its sample shape differs.
        """
        if type(other) is not type(self):
            raise InputError(f"other: expected a {type(self).__name__}, got "
                             f"{type(other).__name__}")
        if other.sample_shape_ is not None:
            self._check_shape(other.sample_shape_, "other")
        if other.n_samples_seen_ == 0:
            return self
        xp = self._ns()
        self._extend_range(*(xp.asarray(to_numpy(a)) for a in (other.data_min_, other.data_max_)))
        with np.errstate(over="ignore", invalid="ignore"):
            self._merge_state(other)
        self.n_samples_seen_ += other.n_samples_seen_
        return self

    def fit(self, X, chunk_size: int = 4096):
        """Estimate from scratch, ``chunk_size`` samples at a time.

        Parameters
        ----------
        X : DataSource or array of shape (n_samples, ...)
            A :class:`specsched.data.sources.DataSource` (read part by part, chunk by chunk:
            memory ``O(chunk_size x d)`` for the data), or an array (a
            :func:`numpy.memmap` works: one chunk at a time is converted to float64).
        chunk_size : int
            Samples per chunk. A tqdm progress bar is shown for more than 8 chunks (hidden
            when stderr is not a terminal).

        Returns
        -------
        self

        Raises
        ------
        InputError
            As :meth:`partial_fit`, or if ``chunk_size`` is not a positive integer.
        """
        from tqdm.auto import tqdm

        chunk_size = check_chunk_size(chunk_size)
        self._reset()
        if isinstance(X, DataSource) or isinstance(X, np.ndarray) or not hasattr(X, "shape"):
            source = X if isinstance(X, DataSource) else source_from_array(X, "X")
            chunks = ((chunk, part.label) for part in source.parts
                      for chunk in checked_chunks(part, source.sample_shape, chunk_size))
            total = sum(-(-p.n // chunk_size) for p in source.parts)
        else:  # an array of the namespace (CuPy, array-api-strict)
            n = int(X.shape[0])
            total = -(-n // chunk_size)
            chunks = ((X[a : min(a + chunk_size, n), ...], "X")  # the array API has no
                      for a in range(0, n, chunk_size))           # out-of-bounds stops
        name = type(self).__name__
        with tqdm(total=total, desc=name, unit="chunk",
                  disable=None if total > 8 else True) as bar:
            for chunk, label in chunks:
                self.partial_fit(chunk, label)
                bar.update()
        self._drop_scratch()
        return self

    def _drop_scratch(self) -> None:
        """Free the scratch space (:attr:`_SCRATCH`); it is made again when needed."""
        for key in self._SCRATCH:
            self.__dict__.pop(key, None)

    def check_range(self, name: str) -> None:
        """Refuse second moments that float64 cannot hold (docs/theory.md section 6).

        Parameters
        ----------
        name : str
            The source, quoted in the message.

        Raises
        ------
        InputError
            If the sums of squares overflowed (the message gives the largest ``|x|`` and a
            factor to divide the data by), or if the samples vary but their variances
            underflowed below ``1e-292`` (the message gives the largest deviation and a
            factor to multiply by).
        """
        top = self._largest_second_moment()
        lo, hi = to_numpy(self.data_min_), to_numpy(self.data_max_)
        if not math.isfinite(top):
            big = float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))
            raise InputError(
                f"{name}: the second moments overflowed float64: samples reach |x| = {big:.3g}"
                f" and sums of their squares exceed {_FINFO.max:.3g}; rescale the data, e.g. "
                f"divide it by {_power_of_ten(big):g} (the eigenvalues scale by the square of "
                "the factor)"
            )
        spread = float(np.max(hi - lo))
        if spread > 0 and top / max(self.n_samples_seen_ - 1, 1) < _TINY_VARIANCE:
            raise InputError(
                f"{name}: the variances underflowed float64: the samples vary by at most "
                f"{spread:.3g}, and squares below {_FINFO.tiny:.3g} lose their digits; rescale "
                f"the data, e.g. multiply it by {1 / _power_of_ten(spread):g} (the eigenvalues "
                "scale by the square of the factor)"
            )
