"""Fashion-MNIST images downsampled for the U-Net and the classifier (16 x 16 by default).

Source: H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST" (2017), as packaged by Debian
``dataset-fashion-mnist`` (idx.gz files in :data:`specsched.data.sources.FASHION_MNIST_DIR`).
Each 28 x 28 image is padded with background to 32 x 32 and average-pooled over square blocks
to ``size`` x ``size`` (exact, no interpolation); pixels ``x / 255 * 2 - 1`` in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from specsched.data.idx import read_idx
from specsched.data.sources import FASHION_MNIST_DIR
from specsched.errors import InputError

__all__ = ["FASHION_MNIST_SIZES", "FASHION_MNIST_SPLITS", "fashion_mnist_images"]

#: Output sides: the divisors of the padded 32.
FASHION_MNIST_SIZES = (32, 16, 8, 4)
#: Splits and the file prefixes they read, in order.
FASHION_MNIST_SPLITS = {"train": ("train",), "test": ("t10k",), "all": ("train", "t10k")}


def fashion_mnist_images(size: int = 16, split: str = "train", *, labels: bool = False,
                         folder: str | os.PathLike | None = None):
    """Fashion-MNIST images, padded to 32 x 32 and average-pooled to ``size`` x ``size``.

    Parameters
    ----------
    size : {32, 16, 8, 4}
        Output side in pixels; each output pixel is the mean of a ``32/size`` square block
        of the padded image (background pixels are -1).
    split : {"train", "test", "all"}
        The 60,000 training images, the 10,000 test images, or both (train first).
    labels : bool
        Also return the class labels (0..9).
    folder : path-like or None
        Folder of the idx.gz files (default: Debian's ``/usr/share/datasets/fashion-mnist``).

    Returns
    -------
    images : ndarray of shape (N, size, size, 1), float32
        Pixels ``x / 255 * 2 - 1`` in [-1, 1].
    labels : ndarray of shape (N,), int64
        Only with ``labels=True``.

    Raises
    ------
    InputError
        Unknown size or split, or the files are absent (the message says
        ``apt-get install -y dataset-fashion-mnist``).
    """
    if size not in FASHION_MNIST_SIZES:
        raise InputError(f"size: expected one of 32, 16, 8, 4 (divisors of the padded 32), "
                         f"got {size!r}")
    if split not in FASHION_MNIST_SPLITS:
        raise InputError(f"split: expected one of {list(FASHION_MNIST_SPLITS)}, got {split!r}")
    folder = Path(FASHION_MNIST_DIR if folder is None else folder)
    images, classes = [], []
    for prefix in FASHION_MNIST_SPLITS[split]:
        path = folder / f"{prefix}-images-idx3-ubyte.gz"
        if not path.is_file():
            raise InputError(f"fashion-mnist: {path} not found; install Debian's package with "
                             "`apt-get install -y dataset-fashion-mnist`")
        raw = read_idx(path)
        padded = np.zeros((raw.shape[0], 32, 32), dtype=np.float32)
        padded[:, 2:30, 2:30] = raw
        f = 32 // size
        pooled = padded.reshape(-1, size, f, size, f).mean(axis=(2, 4))
        images.append((pooled / np.float32(255.0) * 2 - 1)[..., None])
        if labels:
            classes.append(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    x = np.concatenate(images).astype(np.float32, copy=False)
    return (x, np.concatenate(classes)) if labels else x
