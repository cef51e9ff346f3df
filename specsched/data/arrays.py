"""Reading arrays of samples from ``.npy`` and ``.npz`` files, whole or rows at a time.

Conventions
-----------
A *samples array* has shape ``(N, ...)``: axis 0 indexes the ``N`` samples, the remaining
axes are the shape of one sample (e.g. ``(H, W, C)`` for images). A ``.npz`` file holds the
samples as its only array or under the key ``x``, ``samples`` or ``data``. Stored values are
read by the dtype rule of :mod:`specsched.data.scaling` (uint8 pixels to ``[-1, 1]``, floats as
stored, other integers refused) and checked once, here at the boundary: every problem raises
:class:`specsched.errors.InputError` naming the file.

Headers are read without the data (:func:`array_header`), so shapes, dtypes and sizes are
known before any sample is read, and rows are read at their byte offset
(:func:`iter_rows`), so memory stays ``O(rows x d)`` for files larger than RAM.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specsched.data.scaling import pixel_max, to_unit_interval, warn_scaling
from specsched.errors import InputError

__all__ = [
    "NPZ_KEYS",
    "SPECTRUM_LIKE_KEYS",
    "ArrayHeader",
    "RowRange",
    "array_header",
    "check_samples",
    "decode_samples",
    "iter_rows",
    "load_array",
    "read_array",
]

#: Keys looked up, in this order, in a ``.npz`` file holding several arrays.
NPZ_KEYS = ("x", "samples", "data")
#: Keys under which other tools store a spectrum in a ``.npz`` (lower case): such a file gets
#: advice about spectra, not about samples.
SPECTRUM_LIKE_KEYS = ("eigenvalues", "eigvals", "eigs", "evals", "lam", "lams", "lambda",
                      "lambdas", "s", "sigma", "singular_values", "spectrum", "variances",
                      "explained_variance", "power")

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


@dataclass(frozen=True)
class RowRange:
    """Rows ``start:stop`` (``stop`` excluded) of a stored array: the part of a data source
    that one task reads (:mod:`specsched.data.sources`). Subclasses add ``iter_chunks``.

    Attributes
    ----------
    header : ArrayHeader or specsched.data.zarrs.ZarrHeader
        The array's header; its ``path`` names the part in messages.
    start, stop : int
    """

    header: object
    start: int
    stop: int

    @property
    def n(self) -> int:
        """Number of rows (samples)."""
        return self.stop - self.start

    @property
    def path(self) -> str:
        """The file (or zarr folder) the rows are read from."""
        return self.header.path

    @property
    def label(self) -> str:
        """Name used in error messages: the path."""
        return self.header.path


@dataclass(frozen=True)
class ArrayHeader:
    """Where and how the samples array of a ``.npy``/``.npz`` file is stored.

    Attributes
    ----------
    path : str
        The file.
    member : str or None
        The key of the array inside a ``.npz`` (None for a ``.npy`` file).
    shape : tuple of int
        Stored shape, ``(N, ...)`` for samples.
    dtype : numpy.dtype
        Stored dtype (any byte order).
    fortran : bool
        Stored in Fortran (column-major) order.
    offset : int
        Bytes before the data in the ``.npy`` file or ``.npz`` member (the header's length).
    """

    path: str
    member: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int = 0

    @property
    def n_samples(self) -> int:
        """``N = shape[0]`` (0 for a 0-d array)."""
        return int(self.shape[0]) if self.shape else 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``shape[1:]``."""
        return tuple(self.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of data the header announces, ``prod(shape) x itemsize``."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@contextlib.contextmanager
def _open_stream(path: str, member: str | None):
    """The binary stream of a ``.npy`` file or of one ``.npz`` member."""
    if member is None:
        with open(path, "rb") as fh:
            yield fh
    else:
        with zipfile.ZipFile(path) as zf, zf.open(f"{member}.npy") as fh:
            yield fh


def _read_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(fh)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of a ``.npz`` (headers only)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                shape, _, dtype = _read_header(fh)
            out[info.filename[:-4]] = (shape, dtype)
    return out


def _not_samples_advice(path: Path, headers: dict) -> str:
    """Why a ``.npz`` of several arrays is not a samples file, and what to do instead."""
    listing = ", ".join(f"{k} {v[0]}" for k, v in headers.items())
    keys = ", ".join(repr(k) for k in NPZ_KEYS)
    head = (f"{path}: the .npz file holds several arrays ({listing}) and none is named {keys}")
    spectral = [k for k, (shape, _) in headers.items()
                if k.lower() in SPECTRUM_LIKE_KEYS or len(shape) == 1]
    if "format" not in headers and not spectral:
        return f"{head}; save the samples alone or under one of these keys"
    key = spectral[0] if spectral else "eigenvalues"
    what = ("its 'format' key is not 'specsched.spectrum'" if "format" in headers
            else "it has no 'format' key")
    return (
        f"{head}, and it is not a specsched spectrum file ({what}). For eigenvalues computed "
        "by another tool, save them alone as a 1-D .npy and pass that as the spectrum "
        "(as `specsched optimize --spectrum eig.npy`), e.g. "
        f"np.save('eig.npy', np.load('{path.name}')['{key}']); "
        "singular values s of the centred data matrix give eigenvalues s**2 / (N - 1). A "
        "spectrum .npz is what `specsched spectrum` or Spectrum.save writes (keys format, "
        "version, eigenvalues, mean, ...); samples are read from a .npz holding one array or "
        "an array under one of the keys above"
    )


def _choose_member(path: Path, headers: dict) -> str:
    if not headers:
        raise InputError(f"{path}: the .npz file holds no array")
    if len(headers) == 1:
        return next(iter(headers))
    for key in NPZ_KEYS:
        if key in headers:
            return key
    raise InputError(_not_samples_advice(path, headers))


def _check_file(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a named pipe, socket or device"
        raise InputError(f"{path}: expected a regular .npy or .npz file (its samples are read "
                         f"at their offsets, chunk by chunk), got {kind}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise InputError(f"{path}: expected a .npy or .npz file, got suffix {path.suffix!r}")
    return suffix


def array_header(path: str | os.PathLike) -> ArrayHeader:
    """The header of the samples array of a ``.npy`` or ``.npz`` file (no data is read).

    Parameters
    ----------
    path : path-like
        A ``.npy`` file, or a ``.npz`` file holding a single array or an array under one of
        the keys ``"x"``, ``"samples"``, ``"data"`` (looked up in that order).

    Returns
    -------
    ArrayHeader

    Raises
    ------
    InputError
        If the file is missing, not a ``.npy``/``.npz`` file, unreadable (truncated header,
        pickled objects), or a ``.npz`` with several arrays and none of the keys above: the
        message then lists its arrays, and for a file that looks like a spectrum from
        another tool (a ``format`` key, 1-D arrays, keys such as ``eigenvalues``, ``lam``,
        ``S``) says how to pass eigenvalues instead.
    """
    path = Path(path)
    suffix = _check_file(path)
    try:
        if suffix == ".npy":
            member = None
        else:
            headers = _npz_headers(path)
            member = _choose_member(path, headers)
        with _open_stream(str(path), member) as fh:
            shape, fortran, dtype = _read_header(fh)
            offset = fh.tell()
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: not a readable {suffix} file ({exc})") from exc
    return ArrayHeader(str(path), member, shape, dtype, fortran, offset)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read the raw array stored in a ``.npy`` or ``.npz`` file, without checking its values.

    Parameters
    ----------
    path : path-like
        As :func:`array_header`.

    Returns
    -------
    ndarray
        The stored array, in its stored dtype and shape (no conversion).

    Raises
    ------
    InputError
        As :func:`array_header`, or if the data are truncated.
    """
    header = array_header(path)
    try:
        if header.member is None:
            return np.load(header.path, allow_pickle=False)
        with np.load(header.path, allow_pickle=False) as npz:
            return np.asarray(npz[header.member])
    except _READ_ERRORS as exc:
        kind = ".npy" if header.member is None else ".npz"
        raise InputError(f"{header.path}: not a readable {kind} file ({exc})") from exc


def iter_rows(header: ArrayHeader, start: int, stop: int,
              chunk_size: int) -> Iterator[np.ndarray]:
    """Yield rows ``start:stop`` of a stored array, ``chunk_size`` rows at a time, raw.

    C-ordered arrays are read at their byte offset (:func:`numpy.fromfile` for ``.npy``
    files, sequential reads of the zip member for ``.npz``), so memory is
    ``O(chunk_size x d)``; a Fortran-ordered ``.npy`` is memory-mapped and a Fortran-ordered
    ``.npz`` member read whole (its rows are not contiguous).

    Raises
    ------
    InputError
        Naming the file if it is unreadable or shorter than its header says.
    """
    name = header.path
    row = int(np.prod(header.sample_shape, dtype=np.int64))
    try:
        if header.fortran:
            if header.member is None:
                whole = np.load(name, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(name, allow_pickle=False) as npz:
                    whole = npz[header.member]
            for a in range(start, stop, chunk_size):
                yield np.array(whole[a : min(a + chunk_size, stop)])
            return
        with _open_stream(name, header.member) as fh:
            _read_header(fh)
            offset = fh.tell()
            fh.seek(offset + start * row * header.dtype.itemsize)
            for a in range(start, stop, chunk_size):
                b = min(a + chunk_size, stop)
                count = (b - a) * row
                if header.member is None:
                    values = np.fromfile(fh, dtype=header.dtype, count=count)
                else:
                    data = fh.read(count * header.dtype.itemsize)
                    values = np.frombuffer(data, dtype=header.dtype,
                                           count=len(data) // header.dtype.itemsize)
                if values.size != count:
                    raise InputError(
                        f"{name}: truncated file: its header announces shape {header.shape}, "
                        f"rows from {a} are missing"
                    )
                yield values.reshape((b - a,) + header.sample_shape)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{name}: not a readable file ({exc})") from exc


def check_samples(x: np.ndarray, name: str, *, finite: bool = True) -> np.ndarray:
    """Check a samples array and return it as floating point, values as given.

    Parameters
    ----------
    x : ndarray of shape (N, ...)
        Samples along axis 0; bool, integer or real floating dtype.
    name : str
        The file or argument name quoted in error messages.
    finite : bool
        Scan floating values for NaN and infinity (two reads of ``x``). False for a caller
        that finds them in its own pass over the data (then calls this again, with
        ``finite=True``, for the message).

    Returns
    -------
    ndarray of shape (N, ...)
        ``x`` itself when it is real floating point (no copy), else ``x`` converted to
        float64.

    Raises
    ------
    InputError
        If ``x`` is 0-d, has no samples (``N == 0``), a non-numeric or complex dtype, or
        non-finite values with ``finite`` (the message gives their count and the first bad
        sample index).
    """
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise InputError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise InputError(f"{name}: expected an array of samples of shape (N, ...), got a scalar")
    if x.shape[0] == 0:
        raise InputError(f"{name}: the array holds no samples (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    # NaN propagates through min and max
    if finite and x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
        ok = np.isfinite(x)
        bad_rows = ~ok.reshape(x.shape[0], -1).all(axis=1)
        raise InputError(
            f"{name}: {int(x.size - ok.sum())} non-finite values (NaN or Inf); "
            f"first in sample {int(np.argmax(bad_rows))}"
        )
    return x


def decode_samples(x: np.ndarray, name: str) -> np.ndarray:
    """Stored samples read by the dtype rule of :mod:`specsched.data.scaling`, checked.

    Parameters
    ----------
    x : ndarray of shape (n, ...)
        Values as stored in a file.
    name : str
        File name quoted in errors.

    Returns
    -------
    ndarray of shape (n, ...)
        uint8 / uint16 / bool pixels as float64 in ``[-1, 1]``; floating values as stored
        (same dtype, no copy).

    Raises
    ------
    InputError
        As :func:`specsched.data.scaling.pixel_max` and :func:`check_samples`.
    """
    x = np.asarray(x)
    if x.ndim >= 1 and pixel_max(x.dtype, name) is not None:
        x = to_unit_interval(x, name)
    return check_samples(x, name)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Load an array of samples from a ``.npy`` or ``.npz`` file, whole.

    Parameters
    ----------
    path : path-like
        A ``.npy`` file, or a ``.npz`` file holding a single array or the samples under key
        ``"x"``, ``"samples"`` or ``"data"`` (looked up in that order). Pickled object
        arrays are refused.

    Returns
    -------
    ndarray of shape (N, ...), float64
        The ``N`` samples along axis 0, read by the dtype rule of
        :mod:`specsched.data.scaling` (uint8, uint16 and bool as pixels in ``[-1, 1]``, with a
        :class:`~specsched.data.scaling.DataScalingWarning`; floats as stored).

    Raises
    ------
    InputError
        If the file is missing (``"PATH: no such file"``) or unreadable, if a ``.npz`` holds
        several arrays and none of the keys above (the message lists its keys), if the array
        is 0-d or empty (``N == 0``), has a dtype the rule refuses (signed integers, complex,
        strings), or holds NaN/Inf (the message gives their count and the index of the first
        bad sample).
    """
    raw = read_array(path)
    if raw.ndim >= 1:
        warn_scaling(raw.dtype, str(path))
    return decode_samples(raw, str(path)).astype(np.float64, copy=False)
