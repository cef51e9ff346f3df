"""Samples stored as one zarr array ``(N, *sample_shape)``, read rows at a time.

A zarr array is a folder (``zarr.json`` for format 3, ``.zarray`` for format 2) whose data
lie in compressed chunk files; rows ``a:b`` are read by decoding only the chunks they touch,
so memory is ``O((b - a) x d)`` plus one zarr chunk. Its header (shape, dtype, chunks) is
read without the data. Values follow the dtype rule of :mod:`specsched.data.scaling`, as
``.npy`` files do. Reading needs the optional extra ``zarr`` (``pip install
'specsched[zarr]'``); without it every use raises :class:`~specsched.errors.InputError`
saying so, and the rest of specsched works.

Each :class:`ZarrPart` carries only the path and a row range, so a dask worker that sees the
same path opens its own rows (docs/spectra.md, "Past one machine").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specsched.data.arrays import RowRange, decode_samples
from specsched.errors import InputError

__all__ = ["ZarrHeader", "ZarrPart", "is_zarr", "zarr_header"]

#: Files that mark a folder as a zarr node: format 3, format 2 array, format 2 group.
_MARKERS = ("zarr.json", ".zarray", ".zgroup")
#: Errors of zarr on a store that is missing, unreadable or not an array (zarr's own errors
#: subclass these).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError)


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a zarr array or group (its metadata file)."""
    path = Path(path)
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


def _zarr(path: str):
    """The ``zarr`` module, or an InputError naming ``path`` and the extra to install."""
    try:
        import zarr
    except ImportError:
        raise InputError(f"{path}: a zarr array; reading it needs the zarr extra: "
                         "pip install 'specsched[zarr]'") from None
    return zarr


@dataclass(frozen=True)
class ZarrHeader:
    """Shape, dtype and chunking of a stored zarr array (no data read).

    Attributes
    ----------
    path : str
        The array's folder.
    shape : tuple of int
        Stored shape ``(N, *sample_shape)``.
    dtype : numpy.dtype
        Stored dtype.
    chunk_rows : int
        Rows per zarr chunk along axis 0 (parts are cut at multiples of it).
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``shape[1:]``."""
        return tuple(self.shape[1:])


def _open(path: str):
    zarr = _zarr(path)
    try:
        return zarr.open_array(store=path, mode="r")
    except _READ_ERRORS as exc:
        group = _group_arrays(zarr, path)
        if group is not None:
            hint = (f"give the path of its array of samples, e.g. {path}/{group[0]}" if group
                    else "it holds no array")
            raise InputError(f"{path}: a zarr group, not an array; {hint}") from None
        raise InputError(f"{path}: not a readable zarr array ({exc})") from None


def _group_arrays(zarr, path: str) -> list[str] | None:
    """The array names of the zarr group at ``path``; None when it is not a group."""
    try:
        return sorted(zarr.open_group(store=path, mode="r").array_keys())
    except _READ_ERRORS:
        return None


def zarr_header(path: str | os.PathLike) -> ZarrHeader:
    """The header of the zarr array of samples at ``path``.

    Parameters
    ----------
    path : path-like
        A zarr array's folder (format 2 or 3), local or on a shared file system.

    Returns
    -------
    ZarrHeader

    Raises
    ------
    InputError
        Naming ``path``: zarr not installed (saying ``pip install 'specsched[zarr]'``), not
        a zarr array (a group: naming an array inside it), unreadable metadata, fewer than 2
        axes (samples are ``(N, ...)``), no samples.
    """
    path = str(path)
    arr = _open(path)
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) < 2:
        raise InputError(f"{path}: expected a zarr array of samples of shape (N, ...) with one "
                         f"sample per row, got shape {shape}")
    if shape[0] == 0:
        raise InputError(f"{path}: the zarr array holds no samples (shape {shape})")
    return ZarrHeader(path, shape, np.dtype(arr.dtype), max(int(arr.chunks[0]), 1))


@dataclass(frozen=True)
class ZarrPart(RowRange):
    """Rows ``start:stop`` of a zarr array (``header`` a :class:`ZarrHeader`), read
    ``chunk_size`` rows at a time."""

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        """Chunks ``(n <= chunk_size, *sample_shape)``, read by the dtype rule.

        Raises
        ------
        InputError
            Naming the array: zarr missing where this runs, unreadable chunk files, values
            the dtype rule refuses (:func:`specsched.data.arrays.decode_samples`).
        """
        arr = _open(self.path)
        for a in range(self.start, self.stop, chunk_size):
            b = min(a + chunk_size, self.stop)
            try:
                raw = np.asarray(arr[a:b])
            except _READ_ERRORS as exc:
                raise InputError(f"{self.path}: rows {a}:{b} of the zarr array are not "
                                 f"readable ({exc})") from None
            yield decode_samples(raw, self.path)
