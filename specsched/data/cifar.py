"""Reading CIFAR-10 "python version" batches (``data_batch_1`` .. ``data_batch_5``,
``test_batch``), as distributed by A. Krizhevsky (``cifar-10-python.tar.gz``).

Each batch is a pickled dict whose ``b"data"`` entry is a uint8 array of shape
``(10000, 3072)``: 1024 red, then 1024 green, then 1024 blue values of a 32 x 32 image in
row-major order. The pickles are read with an unpickler that only admits NumPy's array
reconstruction, so a batch file cannot run arbitrary code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from specsched.errors import InputError

__all__ = ["CIFAR10_BATCHES", "read_cifar10_batch", "cifar10_batch_files"]

#: File names of the CIFAR-10 python batches, training batches first.
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def cifar10_batch_files(folder: str | os.PathLike) -> list[Path]:
    """The CIFAR-10 batch files present in ``folder``, in :data:`CIFAR10_BATCHES` order.

    Returns an empty list when there are none (the folder is then not a CIFAR-10 folder).
    """
    folder = Path(folder)
    return [folder / n for n in CIFAR10_BATCHES if (folder / n).is_file()]


def read_cifar10_batch(path: str | os.PathLike) -> np.ndarray:
    """Read one CIFAR-10 python batch as images.

    Parameters
    ----------
    path : path-like
        A ``data_batch_*`` or ``test_batch`` file.

    Returns
    -------
    ndarray of shape (n, 32, 32, 3), uint8
        Channels last (RGB), in the batch's order.

    Raises
    ------
    InputError
        Naming the file if it cannot be unpickled safely, lacks ``b"data"``, or the data
        is not ``(n, 3072)`` uint8.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _SafeUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a readable CIFAR-10 python batch ({exc})") from exc
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise InputError(
            f"{path}: expected a dict with b'data' of shape (n, 3072), uint8 (CIFAR-10 python "
            "batch)"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
