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

__all__ = ["IDX_DTYPES", "read_idx", "load_idx_images"]

#: IDX type codes and the big-endian NumPy dtypes they denote.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


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
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with _open(path) as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise InputError(f"{path}: not an IDX file (bad magic number {head!r})")
            code, ndim = head[2], head[3]
            if code not in IDX_DTYPES or ndim == 0:
                raise InputError(
                    f"{path}: not an IDX file (type code 0x{code:02X}, {ndim} dimensions)"
                )
            dims_raw = fh.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise InputError(f"{path}: truncated IDX header")
            shape = tuple(int(v) for v in np.frombuffer(dims_raw, dtype=">u4"))
            dtype = np.dtype(IDX_DTYPES[code])
            count = int(np.prod(shape, dtype=np.int64))
            data = fh.read(count * dtype.itemsize)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the IDX file ({exc})") from exc
    if len(data) < count * dtype.itemsize:
        raise InputError(
            f"{path}: truncated IDX file: header announces shape {shape} "
            f"({count * dtype.itemsize} bytes of data), found {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(
        shape
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
        :func:`specsched.data.images.to_unit_interval`).

    Raises
    ------
    InputError
        As :func:`read_idx`, or if the file is not a 3-D uint8 array (e.g. a labels file).
    """
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"{path}: expected IDX images of shape (N, H, W), uint8; got shape {arr.shape}, "
            f"dtype {arr.dtype} (a labels file?)"
        )
    return arr
