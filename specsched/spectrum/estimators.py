"""Spectrum estimators over chunked data: full covariance, PCA and the Fourier model.

Notation (docs/theory.md section 6)
------------------------------
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

import numbers

import numpy as np
import scipy.linalg

from specsched.data.sources import DataSource, checked_chunks, source_from_array
from specsched.errors import InputError
from specsched.spectrum.moments import (
    Moments,
    as_blocks,
    chunk_moments,
    get_namespace,
    merge_moments,
    moments_to_numpy,
    to_numpy,
)
from specsched.spectrum.spectrum import Spectrum

__all__ = [
    "METHODS",
    "PCA_DENSE_MAX",
    "SpectrumEstimator",
    "estimate_spectrum",
    "fourier_power",
    "randomized_eigh",
    "spectrum_from_moments",
]

#: Spectrum estimation methods.
METHODS = ("full", "pca", "fourier")
#: Largest ``d`` for which PCA eigen-decomposes the accumulated d x d covariance.
PCA_DENSE_MAX = 4096
_ROUNDOFF = 1e-6


def _clip_roundoff(lam: np.ndarray) -> np.ndarray:
    top = max(float(lam.max()), 0.0)
    lam = lam.copy()
    lam[(lam < 0) & (lam >= -_ROUNDOFF * top)] = 0.0
    return lam


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


class SpectrumEstimator:
    """Accumulate samples chunk by chunk, then eigen-decompose (full or Fourier model).

    Shaped like a scikit-learn estimator: :meth:`partial_fit` and :meth:`merge` return
    ``self``; learned values end in an underscore.

    Parameters
    ----------
    method : {"full", "fourier", "diag"}
        Block layout of :func:`specsched.spectrum.moments.as_blocks`: full covariance, the
        Fourier model, or per-coordinate variances (PCA's first pass).
    device : {"cpu", "cuda"}
        Where the sums are accumulated (CuPy for ``"cuda"``).
    xp : module, optional
        Array-API namespace on the CPU (e.g. :mod:`array_api_strict`); default NumPy.

    Attributes
    ----------
    moments_ : Moments or None
        Accumulated summary, arrays in ``xp`` on the device.
    n_samples_seen_ : int
    sample_shape_ : tuple of int or None
    """

    def __init__(self, method: str = "full", device: str = "cpu", xp=None) -> None:
        if method not in ("full", "fourier", "diag"):
            raise InputError(f"method: expected 'full', 'fourier' or 'diag', got {method!r}")
        self.method = method
        self.device = device
        self.xp = get_namespace(device, xp)
        self.moments_: Moments | None = None
        self.sample_shape_: tuple[int, ...] | None = None

    @property
    def n_samples_seen_(self) -> int:
        return 0 if self.moments_ is None else self.moments_.n

    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if self.sample_shape_ is None:
            if self.method == "fourier" and len(shape) not in (1, 2, 3):
                raise InputError(
                    f"{what}: the Fourier model needs samples of shape (L,), (H, W) or "
                    f"(H, W, C); got {shape}"
                )
            self.sample_shape_ = shape
        elif shape != self.sample_shape_:
            raise InputError(
                f"{what}: samples of shape {shape} ({int(np.prod(shape))} values), earlier "
                f"ones {self.sample_shape_} ({int(np.prod(self.sample_shape_))} values); all "
                "chunks must match"
            )

    def partial_fit(self, X, name: str = "X") -> SpectrumEstimator:
        """Add a chunk of samples.

        Parameters
        ----------
        X : array of shape (n, *sample_shape), float64
            A NumPy array (moved to the device) or an array of ``xp``; finite values
            (check loaded data with the loaders first).
        name : str
            Label (file name) quoted in errors.

        Returns
        -------
        self

        Raises
        ------
        InputError
            If the sample shape differs from earlier chunks (naming ``name``).
        """
        xp = self.xp
        X = xp.asarray(X) if isinstance(X, np.ndarray) else X
        self._check_shape(tuple(X.shape[1:]), name)
        if X.shape[0] == 0:
            return self
        X = xp.astype(X, xp.float64)
        m = chunk_moments(as_blocks(X, self.method, xp), xp)
        self.moments_ = merge_moments(self.moments_, m, xp)
        return self

    def merge(self, other: SpectrumEstimator | Moments, sample_shape=None) -> SpectrumEstimator:
        """Add the samples summarised by another estimator or a :class:`Moments` summary."""
        if isinstance(other, SpectrumEstimator):
            if other.sample_shape_ is not None:
                self._check_shape(other.sample_shape_, "other")
            other = other.moments_
        elif sample_shape is not None:
            self._check_shape(tuple(sample_shape), "other")
        if other is not None:
            xp = self.xp
            other = Moments(other.n, xp.asarray(other.mean), xp.asarray(other.m2))
            self.moments_ = merge_moments(self.moments_, other, xp)
        return self

    def to_spectrum(self, source: str = "samples") -> Spectrum:
        """The :class:`Spectrum` of the accumulated samples (see :func:`spectrum_from_moments`)."""
        if self.moments_ is None:
            raise InputError(f"{source}: no samples were seen")
        return spectrum_from_moments(moments_to_numpy(self.moments_), self.method,
                                     self.sample_shape_, source)


def spectrum_from_moments(m: Moments, method: str, sample_shape, source: str) -> Spectrum:
    """Eigen-decompose accumulated moments (NumPy arrays) into a :class:`Spectrum`.

    Parameters
    ----------
    m : Moments
        ``"full"``: mean (1, d), m2 (1, d, d); ``"fourier"``: mean (P, C), m2 (P, C, C).
    method : {"full", "fourier"}
    sample_shape : tuple of int
    source : str

    Returns
    -------
    Spectrum
        ``"full"``: eigenvalues, eigenvectors and ``m = U^T mu`` (as
        :meth:`StreamingCovariance.to_spectrum`); ``"fourier"``: d eigenvalues, mean
        magnitudes (module docstring), no eigenvectors.

    Raises
    ------
    InputError
        Fewer than 2 samples or no variance.
    """
    if m.n < 2:
        raise InputError(f"{source}: needs at least 2 samples, got {m.n}")
    if method == "full":
        from specsched.spectrum.covariance import StreamingCovariance

        est = StreamingCovariance()
        est._check_features(int(m.mean.size), tuple(sample_shape), "moments")
        est._combine(m.n, np.asarray(m.mean[0], np.float64), np.asarray(m.m2[0], np.float64))
        return est.to_spectrum(source=source, sample_shape=tuple(sample_shape))
    if method != "fourier":
        raise InputError(f"method: expected 'full' or 'fourier', got {method!r}")
    blocks = m.m2 / (m.n - 1)
    blocks = 0.5 * (blocks + np.conj(np.swapaxes(blocks, 1, 2)))  # exact Hermitian
    lam, V = np.linalg.eigh(blocks)  # (P, C), (P, C, C)
    mean = np.abs(np.einsum("pcj,pc->pj", np.conj(V), m.mean))
    return Spectrum(
        eigenvalues=_clip_roundoff(lam.ravel()),
        mean=mean.ravel(),
        n_samples=m.n,
        source=source,
        method="fourier",
        sample_shape=tuple(sample_shape),
    )


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

def _part_moments(part, sample_shape, layout, chunk_size, device="cpu", xp=None) -> Moments:
    """Moments of one part (a dask task): NumPy arrays on the host."""
    est = SpectrumEstimator(layout, device, xp)
    for chunk in checked_chunks(part, sample_shape, chunk_size):
        est.partial_fit(chunk, part.label)
    if est.moments_ is None:
        return None
    return moments_to_numpy(est.moments_)


def _merge_np(a: Moments | None, b: Moments | None) -> Moments | None:
    import array_api_compat.numpy as xnp

    if b is None:
        return a
    return merge_moments(a, b, xnp)


def _part_covariance_product(part, sample_shape, mean, Q, chunk_size):
    """``sum_i (x_i - mu)(x_i - mu)^T Q`` over one part: (d, l) float64."""
    Y = np.zeros_like(Q)
    for chunk in checked_chunks(part, sample_shape, chunk_size):
        Xc = chunk.reshape(chunk.shape[0], -1) - mean
        Y += Xc.T @ (Xc @ Q)
    return Y


def _add(a, b):
    return a + b


class _Executor:
    """Map a function over the parts and reduce the results, in-process or on dask."""

    def __init__(self, dask=None):
        self.client = None
        self._own = []
        if dask is None or dask is False:
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise InputError(
                "--dask: dask.distributed is not installed; pip install 'specsched[distributed]'"
            ) from exc
        if isinstance(dask, Client):
            self.client = dask
        elif dask is True or dask == "local":
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                   dashboard_address=None)
            self.client = Client(cluster)
            self._own = [self.client, cluster]
        else:
            try:
                self.client = Client(str(dask), timeout="20s")
            except OSError as exc:
                raise InputError(f"--dask: cannot reach the scheduler {dask!r} ({exc})") from exc
            self._own = [self.client]

    def map_reduce(self, fn, parts, combine, *args):
        if self.client is None:
            out = None
            for part in parts:
                r = fn(part, *args)
                out = r if out is None else combine(out, r)
            return out
        c = self.client
        shared = [c.scatter(a, broadcast=True, hash=False) if isinstance(a, np.ndarray) else a
                  for a in args]
        futures = [c.submit(fn, p, *shared, pure=False) for p in parts]
        while len(futures) > 1:  # pairwise tree reduction on the cluster
            nxt = [c.submit(combine, a, b) for a, b in zip(futures[::2], futures[1::2],
                                                          strict=False)]
            if len(futures) % 2:
                nxt.append(futures[-1])
            futures = nxt
        return futures[0].result()

    def close(self):
        for obj in self._own:
            obj.close()


def _accumulate(source: DataSource, layout, chunk_size, device, xp, executor) -> Moments:
    if executor.client is None:
        est = SpectrumEstimator(layout, device, xp)
        n_chunks = sum(-(-p.n // chunk_size) for p in source.parts)
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks, desc=f"{layout} moments", unit="chunk",
                   disable=None if n_chunks > 8 else True)
        for part in source.parts:
            for chunk in checked_chunks(part, source.sample_shape, chunk_size):
                est.partial_fit(chunk, part.label)
                bar.update()
        bar.close()
        m = est.moments_
        return None if m is None else moments_to_numpy(m)
    if device != "cpu" or xp is not None:
        raise InputError("--dask: the dask path runs NumPy on the workers; use --device cpu")
    return executor.map_reduce(_part_moments, source.parts, _merge_np, source.sample_shape,
                               layout, chunk_size)


def _pca(source, rank, chunk_size, device, xp, executor, rng, n_iter, n_oversamples, solver):
    d = source.dimension
    if solver == "dense" or (solver == "auto" and d <= PCA_DENSE_MAX):
        m = _accumulate(source, "full", chunk_size, device, xp, executor)
        if m is None or m.n < 2:
            raise InputError(f"{source.name}: needs at least 2 samples")
        cov = m.m2[0] / (m.n - 1)
        lam, V = scipy.linalg.eigh(cov, subset_by_index=[d - rank, d - 1], check_finite=False)
        lam, V = lam[::-1], V[:, ::-1]
        trace, mu = float(np.trace(cov)), m.mean[0]
        n = m.n
    else:
        m = _accumulate(source, "diag", chunk_size, device, xp, executor)
        if m is None or m.n < 2:
            raise InputError(f"{source.name}: needs at least 2 samples")
        n, mu = m.n, m.mean[:, 0]
        trace = float(np.real(m.m2).sum()) / (n - 1)

        def matmat(Q):
            Y = executor.map_reduce(_part_covariance_product, source.parts, _add,
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

    Parameters
    ----------
    source : DataSource or array of shape (N, ...)
        The samples (see :func:`specsched.data.sources.open_source`); an array is wrapped.
    method : {"full", "pca", "fourier"}
        Estimator (module docstring).
    rank : int, optional
        Number of exact eigenpairs for ``"pca"`` (required there, ``1 <= rank <= d``).
    chunk_size : int
        Samples per chunk: memory ``O(chunk_size x d)`` for the data.
    device : {"cpu", "cuda"}
        Accumulate on the CPU or with CuPy on a GPU.
    xp : module, optional
        Array-API namespace on the CPU (tests use :mod:`array_api_strict`).
    dask : None, True, str or distributed.Client
        Run the chunked accumulation on a dask cluster: ``True`` starts a local in-process
        cluster (2 workers), a string is a scheduler address (``tcp://host:8786``), a
        Client is used as is. The parts (files) must be readable by the workers at the same
        paths. None: in-process.
    rng : numpy.random.Generator, optional
        Randomness of the randomized PCA (large ``d`` only); default ``default_rng(0)``.
    n_iter, n_oversamples : int
        Power iterations and oversampling of the randomized PCA.
    pca_solver : {"auto", "dense", "randomized"}
        PCA eigensolver: ``"dense"`` accumulates the d x d covariance and calls
        :func:`scipy.linalg.eigh` on the top ``rank`` indices (exact); ``"randomized"`` runs
        :func:`randomized_eigh` with one pass over the data per product; ``"auto"`` picks
        dense when ``d <= PCA_DENSE_MAX``.
    return_power : bool
        With ``method="fourier"``, also return the per-frequency power (see
        :func:`fourier_power`).

    Returns
    -------
    Spectrum
        ``method`` as asked (``rank`` set for PCA), ``n_samples`` as read, ``sample_shape``
        of the source. With ``return_power``: ``(Spectrum, ndarray)``.

    Raises
    ------
    InputError
        Unknown method, bad ``rank`` / ``chunk_size``, fewer than 2 samples, a chunk whose
        dimension differs (naming its file), Fourier model on samples that are not
        ``(L,)``, ``(H, W)`` or ``(H, W, C)``, ``device="cuda"`` without CuPy/CUDA, an
        unreachable dask scheduler.
    """
    if method not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    chunk_size = _check_int(chunk_size, "chunk_size")
    if not isinstance(source, DataSource):
        source = source_from_array(source)
    get_namespace(device, xp)  # fail early on a missing CUDA
    d = source.dimension
    if method == "pca":
        if rank is None:
            raise InputError("--rank: required with --method pca")
        rank = _check_int(rank, "--rank")
        if rank > d:
            raise InputError(f"--rank: must be at most d = {d}, got {rank}")
    if pca_solver not in ("auto", "dense", "randomized"):
        raise InputError(f"pca_solver: expected auto, dense or randomized, got {pca_solver!r}")
    if method == "fourier" and len(source.sample_shape) not in (1, 2, 3):
        raise InputError(
            f"{source.name}: the Fourier model needs samples of shape (L,), (H, W) or "
            f"(H, W, C); got {source.sample_shape}"
        )
    executor = _Executor(dask)
    try:
        if method == "pca":
            return _pca(source, rank, chunk_size, device, xp, executor, rng, n_iter,
                        n_oversamples, pca_solver)
        m = _accumulate(source, method, chunk_size, device, xp, executor)
        if m is None:
            raise InputError(f"{source.name}: no samples were read")
        spectrum = spectrum_from_moments(m, method, source.sample_shape, source.name)
        if return_power:
            if method != "fourier":
                raise InputError("return_power: only with method='fourier'")
            return spectrum, fourier_power(m, source.sample_shape)
        return spectrum
    finally:
        executor.close()


__all__ += ["to_numpy"]
