"""Spectrum estimators over chunked data: full covariance, PCA and the Fourier model.

Notation (docs/theory.md section 6)
-----------------------------------
Samples ``x_i`` in ``R^d``, ``i = 1..N``, with mean ``mu`` and unbiased covariance
``Sigma = sum_i (x_i - mu)(x_i - mu)^T / (N - 1)``; eigenvalues ``lam`` descending.

- ``"full"``: ``Sigma`` accumulated chunk by chunk (Chan et al. merge), then ``eigh``.
  Memory ``O(d^2 + chunk_size x d)`` whatever ``N``.
- ``"pca"``: the top ``rank`` eigenpairs of ``Sigma`` exactly (``eigh`` with an index subset
  when ``d <= PCA_DENSE_MAX``, else randomized subspace iteration over passes through the
  data, Halko, Martinsson & Tropp 2011, Alg. 4.4 + Rayleigh-Ritz: memory
  ``O(d x (rank + oversampling) + chunk_size x d)``). The other ``d - rank`` eigenvalues are
  all set to the tail's mean variance ``(tr Sigma - sum_{k<rank} lam_k) / (d - rank)``, the
  trace coming from the streaming per-coordinate variances, so losses still count the tail
  (docs/theory.md section 6).
- ``"fourier"``: the shift-invariant (circulant) model. The unitary DFT ``F`` (norm
  "ortho") over the spatial axes diagonalises every (block-)circulant covariance; the model
  keeps the diagonal C x C blocks ``P_f = E[(F x - F mu)_f (F x - F mu)_f^H]`` of ``Sigma``
  in the Fourier basis and its eigenvalues are those of every ``P_f`` (``d = prod(spatial) x
  C`` in all). No d x d matrix is formed. For exactly circulant ``Sigma`` it equals
  ``"full"`` to round-off.

Means in the eigenbasis (the ``Spectrum.mean`` field, ``m = U^T mu``) follow the losses'
needs: ``"full"`` exactly; ``"pca"`` exactly on the top ``rank`` directions, and the tail's
part ``|mu_tail|^2`` spread evenly over the ``d - rank`` tail entries (the tail shares one
eigenvalue, so every loss sees the same mean term); ``"fourier"``: ``m`` entry of frequency
``f`` and channel eigenvector ``v`` is ``|v^H (F mu)_f|``, a magnitude. Real Fourier
eigenvectors pair ``f`` with ``-f`` (same eigenvalue); the pair's squared mean components sum
to ``|z_f|^2 + |z_-f|^2``, so the loss is exact. For stationary data the mean is constant per
channel and only the DC term (``f = 0``) is non-zero: it carries ``sqrt(H W)`` times the
channel mean.

References
----------
N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness", SIAM Review
53(2), 2011. R. M. Gray, "Toeplitz and circulant matrices: a review", 2006.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from specsched.data.sources import DataSource, check_stored, checked_chunks, source_from_array
from specsched.errors import InputError
from specsched.spectrum.chunked import check_chunk_size
from specsched.spectrum.cluster import Executor
from specsched.spectrum.covariance import StreamingCovariance
from specsched.spectrum.fourier import DiagonalVariance, FourierEstimator
from specsched.spectrum.memory import check_memory, plan_memory
from specsched.spectrum.moments import get_namespace, to_numpy
from specsched.spectrum.spectrum import Spectrum

__all__ = [
    "METHODS",
    "PCA_DENSE_MAX",
    "check_estimate",
    "estimate_spectrum",
    "randomized_eigh",
]

#: Spectrum estimation methods.
METHODS = ("full", "pca", "fourier")
#: Largest ``d`` for which PCA eigen-decomposes the accumulated d x d covariance.
PCA_DENSE_MAX = 4096


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def randomized_eigh(matmat, d: int, rank: int, *, n_oversamples: int = 10, n_iter: int = 4,
                    rng: np.random.Generator | None = None):
    """Top eigenpairs of a symmetric PSD operator by randomized subspace iteration.

    Parameters
    ----------
    matmat : callable
        ``matmat(Q)`` returns ``Sigma @ Q`` for ``Q`` of shape (d, l), float64 (one pass
        over the data when ``Sigma`` is a covariance that is not stored).
    d : int
        Dimension.
    rank : int
        Number of eigenpairs ``k``.
    n_oversamples : int
        Extra columns ``p``; ``l = min(k + p, d)``.
    n_iter : int
        Power iterations ``q`` (``q + 2`` calls of ``matmat`` in all).
    rng : numpy.random.Generator, optional
        Source of the Gaussian test matrix; default ``default_rng(0)``.

    Returns
    -------
    eigenvalues : ndarray of shape (k,), float64, descending
    eigenvectors : ndarray of shape (d, k), float64, orthonormal columns

    Notes
    -----
    Halko, Martinsson & Tropp (2011), Algorithm 4.4 (QR between products) followed by
    the Rayleigh-Ritz step ``B = Q^T Sigma Q`` (their section 5.3).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    ell = min(rank + n_oversamples, d)
    Q, _ = np.linalg.qr(matmat(rng.standard_normal((d, ell))))
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(matmat(Q))
    B = Q.T @ matmat(Q)
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    order = np.argsort(w)[::-1][:rank]
    return w[order], Q @ V[:, order]


# ---------------------------------------------------------------- map-reduce over parts

def _fit_part(prev, part, cls, sample_shape, chunk_size):
    """``prev`` (an estimator, or None) updated with one part's chunks, as a new estimator
    (a dask task; NumPy on the worker; ``prev`` is left untouched, dask may hold it)."""
    est = cls() if prev is None else copy.deepcopy(prev)
    for chunk in checked_chunks(part, sample_shape, chunk_size):
        est.partial_fit(chunk, part.label)
    return est


def _merged(a, b):
    """``a`` merged with ``b``, leaving both untouched (dask may reuse a task's result)."""
    return copy.deepcopy(a).merge(b)


def _part_covariance_product(prev, part, sample_shape, mean, Q, chunk_size):
    """``prev + sum_i (x_i - mu)(x_i - mu)^T Q`` over one part: (d, l) float64 (``prev``
    None: zero; left untouched)."""
    Y = np.zeros_like(Q) if prev is None else prev.copy()
    for chunk in checked_chunks(part, sample_shape, chunk_size):
        Xc = np.subtract(chunk.reshape(chunk.shape[0], -1), mean, dtype=np.float64)
        Y += Xc.T @ (Xc @ Q)
    return Y


def _add(a, b):
    return a + b


def _fit(cls, source: DataSource, chunk_size, device, xp, executor):
    """An estimator of class ``cls`` fitted on every chunk of ``source``."""
    if executor.client is None:
        est = cls(device=device, xp=xp).fit(source, chunk_size)
    else:
        if device != "cpu" or xp is not None:
            raise InputError("--dask: the dask path runs NumPy on the workers; use --device cpu")
        est = executor.map_reduce(_fit_part, source, _merged, cls, source.sample_shape,
                                  chunk_size)
    if est.n_samples_seen_ < 2:
        raise InputError(f"{source.name}: needs at least 2 samples, got {est.n_samples_seen_}")
    return est


def _pca(source, rank, chunk_size, device, xp, executor, rng, n_iter, n_oversamples, dense):
    d = source.dimension
    if dense:
        est = _fit(StreamingCovariance, source, chunk_size, device, xp, executor)
        lam, V = est.eigh(rank, source=source.name)  # on the device of the estimator
        trace, mu, n = float(est.variances_.sum()), to_numpy(est.mean_), est.n_samples_seen_
    else:
        est = _fit(DiagonalVariance, source, chunk_size, device, xp, executor)
        est.check_range(source.name)
        n, mu = est.n_samples_seen_, est.mean_
        trace = float(est.variances_.sum())

        def matmat(Q):
            Y = executor.map_reduce(_part_covariance_product, source, _add,
                                    source.sample_shape, mu, np.ascontiguousarray(Q),
                                    chunk_size)
            return Y / (n - 1)

        lam, V = randomized_eigh(matmat, d, rank, n_oversamples=n_oversamples, n_iter=n_iter,
                                 rng=rng)
    lam = np.maximum(lam, 0.0)
    m_top = V.T @ mu
    if rank < d:
        tail = max(trace - float(lam.sum()), 0.0) / (d - rank)
        tail_mean = np.sqrt(max(float(mu @ mu - m_top @ m_top), 0.0) / (d - rank))
        lam = np.concatenate([lam, np.full(d - rank, tail)])
        mean = np.concatenate([m_top, np.full(d - rank, tail_mean)])
    else:
        mean = m_top
    return Spectrum(eigenvalues=lam, mean=mean, n_samples=n, source=source.name, method="pca",
                    sample_shape=source.sample_shape, rank=rank)


def check_estimate(source: DataSource, method: str = "full", *, rank: int | None = None,
                   chunk_size: int = 4096, device: str = "cpu", xp=None,
                   n_oversamples: int = 10, pca_solver: str = "auto") -> tuple[int, int | None]:
    """Every check of :func:`estimate_spectrum` that needs no data: run before reading any.

    Parameters
    ----------
    source : DataSource
        Opened (headers only).
    method, rank, chunk_size, device, xp, n_oversamples, pca_solver :
        As :func:`estimate_spectrum`.

    Returns
    -------
    chunk_size : int
    rank : int or None

    Raises
    ------
    InputError
        Unknown method or solver, bad ``chunk_size``, ``rank`` missing or above ``d``,
        Fourier model on samples that are not ``(L,)``, ``(H, W)`` or ``(H, W, C)``,
        ``device="cuda"`` without CuPy/CUDA, or an estimate that does not fit in the memory
        available (the message gives the sizes and the ways out:
        :func:`specsched.spectrum.memory.check_memory`).
    """
    if method not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    chunk_size = check_chunk_size(chunk_size)
    get_namespace(device, xp)  # fail early on a missing CUDA
    d = source.dimension
    if method == "pca":
        if rank is None:
            raise InputError("--rank: required with --method pca")
        rank = _check_int(rank, "--rank")
        if rank > d:
            raise InputError(f"--rank: must be at most d = {d} (the values per sample of "
                             f"{source.name}, shape {source.sample_shape}), got {rank}")
    if pca_solver not in ("auto", "dense", "randomized"):
        raise InputError(f"pca_solver: expected auto, dense or randomized, got {pca_solver!r}")
    shape = source.sample_shape
    if method == "fourier" and len(shape) not in (1, 2, 3):
        raise InputError(
            f"{source.name}: the Fourier model needs samples of shape (L,), (H, W) or "
            f"(H, W, C); got {shape}"
        )
    kind = method
    if method == "pca":
        kind = "pca-dense" if _dense(pca_solver, d) else "pca-randomized"
    chunk = min(chunk_size, max(source.n_samples, 1))
    plan = plan_memory(kind, d, chunk, source.itemsize, rank=rank, n_oversamples=n_oversamples,
                       channels=shape[-1] if len(shape) == 3 else 1)
    check_memory(plan, source.name, images=source.kind == "images")
    return chunk_size, rank


def _dense(pca_solver: str, d: int) -> bool:
    return pca_solver == "dense" or (pca_solver == "auto" and d <= PCA_DENSE_MAX)


def estimate_spectrum(
    source,
    method: str = "full",
    *,
    rank: int | None = None,
    chunk_size: int = 4096,
    device: str = "cpu",
    xp=None,
    dask=None,
    rng: np.random.Generator | None = None,
    n_iter: int = 4,
    n_oversamples: int = 10,
    pca_solver: str = "auto",
    return_power: bool = False,
):
    """Estimate the spectrum of a dataset read chunk by chunk.

    The one route from samples to a spectrum: :func:`specsched.spectrum.load_spectrum` and
    every command that reads samples call it. Every check that needs no data
    (:func:`check_estimate`: arguments, ``rank`` against ``d`` from the headers, memory)
    runs before the first sample is read.

    Parameters
    ----------
    source : DataSource or array of shape (N, ...)
        The samples (see :func:`specsched.data.sources.open_source`); an array is wrapped
        (values as given).
    method : {"full", "pca", "fourier"}
        Estimator (module docstring): :class:`~specsched.spectrum.StreamingCovariance`,
        PCA on it (or randomized), :class:`~specsched.spectrum.FourierEstimator`.
    rank : int, optional
        Number of exact eigenpairs for ``"pca"`` (required there, ``1 <= rank <= d``).
    chunk_size : int
        Samples per chunk: memory ``O(chunk_size x d)`` for the data.
    device : {"cpu", "cuda"}
        Accumulate on the CPU or with CuPy on a GPU (``"full"`` and dense ``"pca"``
        eigendecompose there too).
    xp : module, optional
        Array-API namespace on the CPU (tests use :mod:`array_api_strict`).
    dask : None, True, str or distributed.Client
        Run the chunked accumulation on a dask cluster: ``True`` starts a local in-process
        cluster (2 workers), a string is a scheduler address (``tcp://host:8786``), a
        Client is used as is (:class:`specsched.spectrum.cluster.Executor`). Each worker
        reads its own parts (files, zarr rows) at the paths the client sees, checked on every
        worker first, and returns only the estimator's state; in-memory samples are
        scattered once, with a warning. None: in-process.
    rng : numpy.random.Generator, optional
        Randomness of the randomized PCA (large ``d`` only); default ``default_rng(0)``.
    n_iter, n_oversamples : int
        Power iterations and oversampling of the randomized PCA.
    pca_solver : {"auto", "dense", "randomized"}
        PCA eigensolver: ``"dense"`` accumulates the d x d covariance and calls
        :func:`scipy.linalg.eigh` on the top ``rank`` indices (exact; off NumPy,
        ``xp.linalg.eigh`` of the whole matrix on the device, see
        :meth:`~specsched.spectrum.StreamingCovariance.eigh`); ``"randomized"`` runs
        :func:`randomized_eigh` with one pass over the data per product; ``"auto"`` picks
        dense when ``d <= PCA_DENSE_MAX``.
    return_power : bool
        With ``method="fourier"``, also return the per-frequency power (see
        :func:`specsched.spectrum.fourier_power`).

    Returns
    -------
    Spectrum
        ``method`` as asked (``rank`` set for PCA), ``n_samples`` as read, ``sample_shape``
        of the source. With ``return_power``: ``(Spectrum, ndarray)``.

    Raises
    ------
    InputError
        As :func:`check_estimate` (before reading); fewer than 2 samples, a chunk whose
        dimension differs (naming its file), float64 overflow or underflow (saying how to
        rescale), a ``.npy`` file shorter than its header says (before reading), an
        unreachable dask scheduler or one without workers, a file a dask worker does not
        see.
    ResourceError
        A dask worker died while it read a part (naming the part), or the cluster lost every
        worker for :data:`specsched.spectrum.cluster.NO_WORKER_TIMEOUT` s.
    """
    if not isinstance(source, DataSource):
        source = source_from_array(source)
    if return_power and method != "fourier":
        raise InputError("return_power: only with method='fourier'")
    chunk_size, rank = check_estimate(source, method, rank=rank, chunk_size=chunk_size,
                                      device=device, xp=xp, n_oversamples=n_oversamples,
                                      pca_solver=pca_solver)
    check_stored(source)
    executor = Executor(dask)
    try:
        if method == "pca":
            return _pca(source, rank, chunk_size, device, xp, executor, rng, n_iter,
                        n_oversamples, _dense(pca_solver, source.dimension))
        cls = StreamingCovariance if method == "full" else FourierEstimator
        est = _fit(cls, source, chunk_size, device, xp, executor)
        spectrum = est.to_spectrum(source=source.name)
        if return_power:
            return spectrum, est.power_
        return spectrum
    finally:
        executor.close()
