"""Loading arrays of samples from ``.npy`` and ``.npz`` files.

Conventions
-----------
A *samples array* has shape ``(N, ...)``: axis 0 indexes the ``N`` samples, the remaining
axes are the shape of one sample (e.g. ``(H, W, C)`` for images). Loaders return float64 and
check the values once, here at the boundary (validated once, at the boundary): every problem raises
:class:`specsched.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from specsched.errors import InputError

__all__ = ["load_array", "NPZ_KEYS"]

#: Keys looked up, in this order, in a ``.npz`` file holding several arrays.
NPZ_KEYS = ("x", "samples", "data")


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read the raw array stored in a ``.npy`` or ``.npz`` file, without checking its values.

    Parameters
    ----------
    path : path-like
        A ``.npy`` file, or a ``.npz`` file holding a single array or an array under one of
        the keys ``"x"``, ``"samples"``, ``"data"`` (looked up in that order).

    Returns
    -------
    ndarray
        The stored array, in its stored dtype and shape (no copy, no conversion).

    Raises
    ------
    InputError
        If the file is missing, is not a ``.npy``/``.npz`` file, cannot be read (truncated,
        pickled objects), or is a ``.npz`` with several arrays and none of the keys above.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: expected a .npy or .npz file, got a folder")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise InputError(f"{path}: expected a .npy or .npz file, got suffix {path.suffix!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npy" or isinstance(loaded, np.ndarray):
            return np.asarray(loaded)
        with loaded as npz:
            keys = list(npz.files)
            if len(keys) == 1:
                return np.asarray(npz[keys[0]])
            for key in NPZ_KEYS:
                if key in keys:
                    return np.asarray(npz[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable {suffix} file ({exc})") from exc
    if not keys:
        raise InputError(f"{path}: the .npz file holds no array")
    raise InputError(
        f"{path}: the .npz file holds several arrays ({', '.join(keys)}) and none is named "
        f"{', '.join(repr(k) for k in NPZ_KEYS)}; save the samples alone or under one of "
        "these keys"
    )


def check_samples(x: np.ndarray, name: str) -> np.ndarray:
    """Check a samples array and return it as float64.

    Parameters
    ----------
    x : ndarray of shape (N, ...)
        Samples along axis 0; bool, integer or real floating dtype.
    name : str
        The file or argument name quoted in error messages.

    Returns
    -------
    ndarray of shape (N, ...), float64
        ``x`` converted to float64 (a copy unless it was float64 already).

    Raises
    ------
    InputError
        If ``x`` is 0-d, has no samples (``N == 0``), a non-numeric or complex dtype, or
        non-finite values (the message gives their count and the first bad sample index).
    """
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise InputError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise InputError(f"{name}: expected an array of samples of shape (N, ...), got a scalar")
    if x.shape[0] == 0:
        raise InputError(f"{name}: the array holds no samples (shape {x.shape})")
    x = x.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        bad_rows = ~finite.reshape(x.shape[0], -1).all(axis=1)
        raise InputError(
            f"{name}: {int(x.size - finite.sum())} non-finite values (NaN or Inf); "
            f"first in sample {int(np.argmax(bad_rows))}"
        )
    return x


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Load an array of samples from a ``.npy`` or ``.npz`` file.

    Parameters
    ----------
    path : path-like
        A ``.npy`` file, or a ``.npz`` file holding a single array or the samples under key
        ``"x"``, ``"samples"`` or ``"data"`` (looked up in that order). Pickled object
        arrays are refused.

    Returns
    -------
    ndarray of shape (N, ...), float64
        The ``N`` samples along axis 0, values as stored (no rescaling).

    Raises
    ------
    InputError
        If the file is missing (``"PATH: no such file"``) or unreadable, if a ``.npz`` holds
        several arrays and none of the keys above (the message lists its keys), if the array
        is 0-d or empty (``N == 0``), has a non-numeric or complex dtype, or holds NaN/Inf
        (the message gives their count and the index of the first bad sample).
    """
    return check_samples(read_array(path), str(path))
