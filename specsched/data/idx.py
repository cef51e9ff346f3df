"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.

Format (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic number
``0x00 0x00 TYPE NDIM`` (TYPE 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), then ``NDIM`` big-endian uint32 dimension sizes, then the values in C order,
big-endian. ``.gz`` files are decompressed on the fly.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from specsched.errors import InputError

__all__ = ["IDX_DTYPES", "check_idx_images", "iter_idx_rows", "load_idx_images", "read_idx",
           "read_idx_header"]

#: IDX type codes and the big-endian NumPy dtypes they denote.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _read_header(fh, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    head = fh.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise InputError(f"{path}: not an IDX file (bad magic number {head!r})")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES or ndim == 0:
        raise InputError(f"{path}: not an IDX file (type code 0x{code:02X}, {ndim} dimensions)")
    dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(dims_raw, dtype=">u4"))
    return shape, np.dtype(IDX_DTYPES[code])


def read_idx_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an IDX file from its header alone (no data is read).

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype, big-endian as stored

    Raises
    ------
    InputError
        As :func:`read_idx` for the header.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with _open(path) as fh:
            return _read_header(fh, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the IDX file ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.idx``, ``*-ubyte``, or any of them ``.gz``-compressed).

    Parameters
    ----------
    path : path-like
        The file; a ``.gz`` suffix means gzip compression.

    Returns
    -------
    ndarray
        The stored array in native byte order (uint8 for image files), shape as in the header,
        e.g. ``(60000, 28, 28)`` for Fashion-MNIST training images.

    Raises
    ------
    InputError
        Naming the file if it is missing, not gzip when named ``.gz``, has a bad magic number
        or type code, or is truncated (fewer values than its header announces).
    """
    shape, dtype = read_idx_header(path)
    chunks = list(iter_idx_rows(path, max(shape[0], 1)))  # one chunk: the whole array
    return chunks[0] if chunks else np.empty(shape, dtype.newbyteorder("="))


def iter_idx_rows(path: str | os.PathLike, chunk_size: int):
    """Yield the stored array of an IDX file ``chunk_size`` rows at a time (native order).

    Memory is ``O(chunk_size x row)``: a ``.gz`` file is decompressed as it is read.

    Raises
    ------
    InputError
        As :func:`read_idx`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with _open(path) as fh:
            shape, dtype = _read_header(fh, path)
            row = int(np.prod(shape[1:], dtype=np.int64))
            n = shape[0]
            for a in range(0, n, chunk_size):
                b = min(a + chunk_size, n)
                want = (b - a) * row * dtype.itemsize
                data = fh.read(want)
                if len(data) < want:
                    raise InputError(
                        f"{path}: truncated IDX file: header announces shape {shape} "
                        f"({n * row * dtype.itemsize} bytes of data), rows from {a} are missing"
                    )
                yield np.frombuffer(data, dtype=dtype).astype(
                    dtype.newbyteorder("="), copy=False).reshape((b - a,) + shape[1:])
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the IDX file ({exc})") from exc


def check_idx_images(path, shape, dtype) -> None:
    """Refuse an IDX file that is not 3-D uint8 images ``(N, H, W)``.

    Raises
    ------
    InputError
        Naming the file, its shape and dtype (a labels file, or another IDX type: their
        values have no pixel scaling).
    """
    if len(shape) != 3 or np.dtype(dtype) != np.uint8:
        raise InputError(
            f"{path}: expected IDX images of shape (N, H, W), uint8; got shape {tuple(shape)}, "
            f"dtype {np.dtype(dtype).newbyteorder('=')} (a labels file?)"
        )


def load_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Load an IDX image file as uint8 images of shape ``(N, H, W)``.

    Parameters
    ----------
    path : path-like
        An ``*-images-idx3-ubyte`` file, plain or ``.gz``.

    Returns
    -------
    ndarray of shape (N, H, W), uint8
        Grey levels 0..255 (map to ``[-1, 1]`` with
        :func:`specsched.data.scaling.to_unit_interval`).

    Raises
    ------
    InputError
        As :func:`read_idx`, or if the file is not a 3-D uint8 array (e.g. a labels file).
    """
    shape, dtype = read_idx_header(path)
    check_idx_images(path, shape, dtype)
    return read_idx(path)
