"""Turn any spectrum source named by the user into a :class:`Spectrum`.

Sources, tried in this order:

1. ``"cifar10"``: the packaged eigenvalues;
2. a ``.npz`` with a ``format`` key: a spectrum written by :meth:`Spectrum.save`;
3. a 1-D ``.npy`` / ``.npz`` array: eigenvalues (``--spectrum`` only);
4. anything else is samples: :func:`specsched.data.sources.open_source` (built-in and
   Debian datasets, ``.npy``/``.npz`` arrays ``(N, ...)``, IDX files, folders of images,
   audio, shards or CIFAR-10 batches), then :func:`specsched.spectrum.estimate_spectrum`,
   chunk by chunk, whatever the method and options.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from specsched.data import BUILTIN_DATASETS, cifar10_eigenvalues, unknown_source_error
from specsched.data.arrays import array_header, read_array
from specsched.data.sources import SYSTEM_DATASETS, open_source
from specsched.errors import InputError
from specsched.spectrum.estimators import estimate_spectrum
from specsched.spectrum.spectrum import SPECTRUM_FORMAT, Spectrum

__all__ = ["is_spectrum_file", "load_spectrum"]


@functools.cache  # = lru_cache(maxsize=None); Spectrum is immutable, so sharing is safe
def _builtin_spectrum(name: str, method: str, rank, chunk_size: int, options: tuple) -> Spectrum:
    """Spectrum of a built-in dataset, computed once per process and set of options."""
    if name == "cifar10":
        return Spectrum.from_eigenvalues(cifar10_eigenvalues(), source="cifar10")
    return estimate_spectrum(open_source(name, **dict(options)), method, rank=rank,
                             chunk_size=chunk_size)


def is_spectrum_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``.npz`` whose ``format`` key says it is a spectrum file.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    bool
        True for a ``.npz`` holding ``format == "specsched.spectrum"`` (read it with
        :meth:`Spectrum.load`); False for other paths and other ``.npz`` files.

    Raises
    ------
    InputError
        If ``path`` is a ``.npz`` that cannot be read as a zip archive (naming it).
    """
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
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
        precedence over paths), a Debian dataset (``"fashion-mnist"``,
        ``"sonic-pi-samples"``), a spectrum ``.npz`` written by :meth:`Spectrum.save`, a
        1-D ``.npy``/``.npz`` of eigenvalues, or samples: a ``.npy``/``.npz`` of shape
        ``(N, ...)`` with ``N >= 2``, an IDX file, or a folder of images, audio, ``.npy``
        shards or CIFAR-10 batches (read by the dtype rule of
        :mod:`specsched.data.scaling`: pixels in ``[-1, 1]``).
    as_data : bool
        ``src`` was given as data (``--data``), not as a spectrum (``--spectrum``): a 1-D
        array is then refused (it would be N scalar samples, not eigenvalues). Built-in
        names and spectrum files are accepted either way.
    method : {"full", "pca", "fourier"}
        Estimator for samples (:func:`specsched.spectrum.estimate_spectrum`); spectrum and
        eigenvalue files are returned as stored whatever ``method``.
    rank : int, optional
        Exact eigenpairs of ``"pca"``.
    chunk_size, device, dask :
        As :func:`specsched.spectrum.estimate_spectrum`; samples are always read chunk by
        chunk (memory ``O(chunk_size x d)`` for the data).
    **source_options :
        Passed to :func:`specsched.data.sources.open_source` (``grayscale``, ``crop``,
        ``size``, ``sample_rate``, ``frame_length``).

    Returns
    -------
    Spectrum
        From samples: the ``method`` asked (``"full"``: with eigenvectors), mean and
        ``n_samples``; from eigenvalues: ``method="eigenvalues"``. ``source`` is the
        built-in name or ``src`` as given. Built-in spectra are computed once per process
        and set of options, and shared (they are immutable); ``"natural-patches"`` takes
        about a second the first time.

    Raises
    ------
    InputError
        If ``src`` is neither a built-in name nor an existing path (the message lists the
        built-in names), if the file or folder is invalid (see the loaders), if a 1-D array
        is passed with ``as_data=True``, if there are fewer than 2 samples, or as
        :func:`specsched.spectrum.estimate_spectrum` (before any sample is read when the
        arguments or the memory do not fit).
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
    def estimate(source):
        return estimate_spectrum(source, method, rank=rank, chunk_size=chunk_size,
                                 device=device, dask=dask)

    if isinstance(src, str) and (src in BUILTIN_DATASETS or src in SYSTEM_DATASETS):
        if src in BUILTIN_DATASETS and device == "cpu" and dask is None:
            return _builtin_spectrum(src, method, rank, chunk_size,
                                     tuple(sorted(source_options.items())))
        return estimate(open_source(src, **source_options))
    path = Path(src)
    if not path.exists():
        raise unknown_source_error(src)
    if path.is_file() and path.suffix.lower() in (".npy", ".npz"):
        if is_spectrum_file(path):
            return Spectrum.load(path)
        header = array_header(path)
        if len(header.shape) == 1:
            if as_data:
                raise InputError(
                    f"{path}: a 1-D array of {header.shape[0]} values is not a data set of "
                    "samples of shape (N, ...); if these are covariance eigenvalues, the file is "
                    "a spectrum already: pass it where a spectrum is read (as `specsched "
                    f"optimize --spectrum {path}`), not as data"
                )
            return Spectrum.from_eigenvalues(read_array(path), source=str(src))
        if len(header.shape) >= 2 and header.shape[0] == 1:
            raise InputError(f"{path}: needs at least 2 samples to estimate a covariance, got "
                             f"shape {header.shape}")
    return estimate(open_source(path, **source_options))
