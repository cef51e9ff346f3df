"""Data loaders: arrays (.npy/.npz), image folders and the built-in datasets.

Every loader returns float64 samples of shape ``(N, ...)`` (axis 0 indexes the samples) and
raises :class:`specsched.errors.InputError`, naming the file, on bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from specsched.data.arrays import load_array
from specsched.data.builtin import (
    BUILTIN_DATASETS,
    DEFAULT_DATASET,
    cifar10_eigenvalues,
    digits,
    natural_patches,
)
from specsched.data.images import load_image_folder
from specsched.errors import InputError

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_DATASET",
    "cifar10_eigenvalues",
    "digits",
    "load_array",
    "load_image_folder",
    "load_samples",
    "natural_patches",
]

_SAMPLE_BUILTINS = {"natural-patches": natural_patches, "digits": digits}


def unknown_source_error(src) -> InputError:
    """The error for a source that is neither a built-in name nor an existing path."""
    return InputError(
        f"{src}: neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) "
        "nor an existing file or folder"
    )


def load_samples(src: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Load samples from a built-in dataset name, an array file or an image folder.

    Parameters
    ----------
    src : str or path-like
        ``"natural-patches"`` or ``"digits"`` (built-in names take precedence over paths),
        a ``.npy``/``.npz`` file (see :func:`load_array`) or a folder of images (see
        :func:`load_image_folder`).

    Returns
    -------
    samples : ndarray of shape (N, ...), float64
        The samples along axis 0.
    source : str
        A label for provenance: the built-in name or the path as given.

    Raises
    ------
    InputError
        If ``src`` is ``"cifar10"`` (shipped as eigenvalues only), is neither a built-in
        name nor an existing path (the message lists the built-in names), or the file or
        folder is invalid.
    """
    if isinstance(src, str) and src in BUILTIN_DATASETS:
        if src not in _SAMPLE_BUILTINS:
            raise InputError(
                f"{src}: this built-in dataset ships as covariance eigenvalues only, without "
                f"samples; use it as a spectrum (--spectrum {src})"
            )
        return _SAMPLE_BUILTINS[src](), src
    path = Path(src)
    if path.is_dir():
        return load_image_folder(path), str(src)
    if path.exists():
        return load_array(path), str(src)
    raise unknown_source_error(src)
