"""Turn any spectrum source named by the user into a :class:`Spectrum`.

Sources, tried in this order:

1. a built-in name (:data:`specsched.data.BUILTIN_DATASETS`): ``"cifar10"`` (packaged
   eigenvalues), ``"natural-patches"`` and ``"digits"`` (covariance of the built-in samples);
2. a folder: images (:func:`specsched.data.load_image_folder`);
3. a ``.npz`` with a ``format`` key: a spectrum written by :meth:`Spectrum.save`;
4. a ``.npy``/``.npz`` array: 1-D means eigenvalues (``--spectrum`` only); ``(N, ...)`` with
   ``N >= 2`` means samples, whose full covariance is eigen-decomposed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from specsched.data import (
    BUILTIN_DATASETS,
    cifar10_eigenvalues,
    load_samples,
    unknown_source_error,
)
from specsched.data.arrays import check_samples, read_array
from specsched.data.sources import source_from_array
from specsched.errors import InputError
from specsched.spectrum.covariance import spectrum_from_samples
from specsched.spectrum.spectrum import SPECTRUM_FORMAT, Spectrum

__all__ = ["load_spectrum"]


@functools.cache  # = lru_cache(maxsize=None)
def _builtin_spectrum(name: str) -> Spectrum:
    """Spectrum of a built-in dataset, computed once per process (Spectrum is immutable)."""
    if name == "cifar10":
        return Spectrum.from_eigenvalues(cifar10_eigenvalues(), source="cifar10")
    samples, source = load_samples(name)
    return spectrum_from_samples(samples, source=source)


def _is_spectrum_file(path: Path) -> bool:
    """Whether ``path`` is a ``.npz`` holding a ``format`` key (a spectrum file)."""
    if path.suffix.lower() != ".npz":
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "format" in npz.files and str(npz["format"]) == SPECTRUM_FORMAT
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc


def load_spectrum(
    src: str | os.PathLike,
    *,
    as_data: bool = False,
    method: str = "full",
    rank: int | None = None,
    chunk_size: int = 4096,
    device: str = "cpu",
    dask=None,
    **source_options,
) -> Spectrum:
    """Load or compute the spectrum of a data source.

    Parameters
    ----------
    src : str or path-like
        A built-in name (``"natural-patches"``, ``"digits"``, ``"cifar10"``; names take
        precedence over paths), a spectrum ``.npz`` written by :meth:`Spectrum.save`, a 1-D
        ``.npy``/``.npz`` of eigenvalues, a ``.npy``/``.npz`` of samples of shape
        ``(N, ...)`` with ``N >= 2``, or a folder of images (pixels scaled to ``[-1, 1]``).
    as_data : bool
        ``src`` was given as data (``--data``), not as a spectrum (``--spectrum``): a 1-D
        array is then refused (it would be N scalar samples, not eigenvalues). Built-in
        names and spectrum files are accepted either way.
    method : {"full", "pca", "fourier"}
        Estimator for samples (see :func:`specsched.spectrum.estimate_spectrum`); spectrum
        and eigenvalue files are returned as stored whatever ``method``.
    rank : int, optional
        Exact eigenpairs of ``"pca"``.
    chunk_size, device, dask :
        As :func:`specsched.spectrum.estimate_spectrum`.
    **source_options :
        Passed to :func:`specsched.data.sources.open_source` (``grayscale``, ``crop``,
        ``size``, ``sample_rate``, ``frame_length``).

    Returns
    -------
    Spectrum
        From samples: the ``method`` asked (``"full"``: with eigenvectors), mean and
        ``n_samples``; sources other than arrays and built-ins (IDX files, audio, CIFAR-10
        batches, ``.npy`` shards, Debian datasets) are read chunk by chunk; from
        eigenvalues: ``method="eigenvalues"``. ``source`` is the built-in name or ``src`` as
        given. Built-in spectra are computed once per process and shared (they are
        immutable); ``"natural-patches"`` takes about a second the first time.

    Raises
    ------
    InputError
        If ``src`` is neither a built-in name nor an existing path (the message lists the
        built-in names), if the file or folder is invalid (see the loaders), if a 1-D array
        is passed with ``as_data=True``, or if there are fewer than 2 samples.
    """
    try:
        return _load_spectrum(src, as_data, method, rank, chunk_size, device, dask,
                              source_options)
    except InputError as exc:  # name the source when the message names only a field
        if str(src) in str(exc):
            raise
        raise InputError(f"{src}: {exc}") from None


def _load_spectrum(src, as_data, method, rank, chunk_size, device, dask, source_options):
    """:func:`load_spectrum` without the error prefix."""
    from specsched.data.sources import SYSTEM_DATASETS, open_source
    from specsched.spectrum.estimators import estimate_spectrum

    def estimate(source):
        return estimate_spectrum(source, method, rank=rank, chunk_size=chunk_size,
                                 device=device, dask=dask)

    default = method == "full" and device == "cpu" and dask is None and not source_options
    if isinstance(src, str) and src in BUILTIN_DATASETS:
        if default or src == "cifar10":
            return _builtin_spectrum(src)
        return estimate(open_source(src, **source_options))
    if isinstance(src, str) and src in SYSTEM_DATASETS:
        return estimate(open_source(src, **source_options))
    path = Path(src)
    label = str(src)
    if path.is_dir():
        return estimate(open_source(path, **source_options))
    if not path.exists():
        raise unknown_source_error(src)
    if _is_spectrum_file(path):
        return Spectrum.load(path)
    if path.name.lower().endswith((".gz", "-ubyte", ".idx")):
        return estimate(open_source(path, **source_options))
    if path.suffix.lower() == ".npy" and not default:
        with contextlib.suppress(InputError):
            if np.load(path, mmap_mode="r", allow_pickle=False).ndim >= 2:
                return estimate(open_source(path, **source_options))  # memory-mapped chunks
    raw = read_array(path)
    if raw.ndim == 1:
        if as_data:
            raise InputError(
                f"{path}: a 1-D array of {raw.size} values is not a data set of samples of "
                "shape (N, ...); if these are covariance eigenvalues, pass the file as a "
                "spectrum (--spectrum) instead of data (--data)"
            )
        return Spectrum.from_eigenvalues(raw, source=label)
    samples = check_samples(raw, label)
    if samples.shape[0] < 2:
        raise InputError(
            f"{path}: needs at least 2 samples to estimate a covariance, got shape {raw.shape}"
        )
    if not default:
        return estimate(source_from_array(samples, label))
    return spectrum_from_samples(samples, source=label)
