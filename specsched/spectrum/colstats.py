"""One read of a chunk for its column sums, minima and maxima (compiled with numba).

Notation (docs/theory.md section 6)
-----------------------------------
A chunk ``X`` of ``n`` samples (rows) and ``d`` coordinates (columns). Its column means are
taken about the first row, ``xbar = x_0 + (1/n) sum_i (x_i - x_0)``: the sum then holds the
spread of the data, not its offset, and keeps its digits for data far from the origin (the
sum of ``n`` values near ``1e6`` would round each partial sum to ``ulp(n 1e6)``).

:func:`column_stats` computes the sums of ``x_i - x_0``, the minima and the maxima of every
column in one pass over ``X`` read row by row (four rows at a time, the columns in the inner,
vectorised loop), in float64 whatever the chunk's dtype (float32 or float64). It is the first
of the two passes :class:`specsched.spectrum.covariance.StreamingCovariance` makes over a
chunk on the CPU (the second writes the centred float64 copy that BLAS reads).

Non-finite values are found without a separate scan: a NaN anywhere in a column makes its sum
NaN, an infinity makes it infinite or NaN (``inf - inf``), and ``x_0`` itself is part of the
differences. A finite sum therefore proves the column finite; a non-finite one is either a
non-finite value or finite values near ``1.8e308`` whose sum overflowed (the caller tells them
apart with :func:`specsched.data.arrays.check_samples`, only then).

numba is imported when this module is; the compiled code is cached on disk after the first call
of each dtype (:func:`specsched.caches.numba_cache_enabled`).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from specsched.caches import numba_cache_enabled

__all__ = ["ColumnStats", "column_stats"]

#: The dtypes the compiled pass reads as they are (native byte order, C order); others are
#: converted to float64 first.
NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CACHE = numba_cache_enabled(__file__)


class ColumnStats(NamedTuple):
    """Per-column summary of a chunk ``X`` of shape (n, d), every field float64 of shape (d,).

    Attributes
    ----------
    n : int
        Number of rows.
    first : ndarray
        The first row ``x_0``.
    sums : ndarray
        ``sum_i (x_i - x_0)``; non-finite where the column holds a NaN or an infinity (or
        where finite values overflowed the sum).
    low, high : ndarray
        Column minima and maxima (NaNs skipped: the sums report them).
    """

    n: int
    first: np.ndarray
    sums: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Column means ``x_0 + sums / n``, ndarray of shape (d,), float64 (a new array)."""
        return self.first + self.sums / self.n


@nb.njit(inline="always")
def _min(a, b):  # pragma: no cover - compiled
    """``min(a, b)`` as a select (vectorises; a NaN ``a`` yields ``b``)."""
    return a if a < b else b


@nb.njit(inline="always")
def _max(a, b):  # pragma: no cover - compiled
    """``max(a, b)`` as a select (vectorises; a NaN ``a`` yields ``b``)."""
    return a if a > b else b


@nb.njit(cache=_CACHE, nogil=True, error_model="numpy")
def _column_stats(X):  # pragma: no cover - compiled; tested against NumPy in test_spectrum.py
    n, d = X.shape
    first = np.empty(d)
    for j in range(d):
        first[j] = np.float64(X[0, j])
    sums = np.zeros(d)
    low = first.copy()
    high = first.copy()
    n4 = n - n % 4
    for i in range(0, n4, 4):
        r0, r1, r2, r3 = X[i], X[i + 1], X[i + 2], X[i + 3]
        for j in range(d):
            a, b = np.float64(r0[j]), np.float64(r1[j])
            c, e = np.float64(r2[j]), np.float64(r3[j])
            z = first[j]
            sums[j] += ((a - z) + (b - z)) + ((c - z) + (e - z))
            lo = _min(_min(a, b), _min(c, e))
            hi = _max(_max(a, b), _max(c, e))
            low[j] = _min(lo, low[j])
            high[j] = _max(hi, high[j])
    for i in range(n4, n):
        r0 = X[i]
        for j in range(d):
            a = np.float64(r0[j])
            sums[j] += a - first[j]
            low[j] = _min(a, low[j])
            high[j] = _max(a, high[j])
    return first, sums, low, high


def column_stats(X: np.ndarray) -> ColumnStats:
    """Column sums about the first row, minima and maxima of a chunk, in one pass.

    Parameters
    ----------
    X : ndarray of shape (n, d), n >= 1
        float32 or float64 in native byte order and C order (other arrays are converted to
        float64 first, a copy).

    Returns
    -------
    ColumnStats
        float64 arrays of shape (d,) (module docstring) and ``n``; the column means are
        its ``mean``.
    """
    if X.dtype not in NATIVE_DTYPES or not X.dtype.isnative or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float64)
    return ColumnStats(int(X.shape[0]), *_column_stats(X))
