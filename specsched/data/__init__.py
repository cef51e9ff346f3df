"""Data loaders: arrays (.npy/.npz), image folders, IDX, CIFAR-10, audio, built-in datasets.

Every loader gives samples of shape ``(N, ...)`` (axis 0 indexes the samples), reads stored
values by one dtype rule (:mod:`specsched.data.scaling`: pixels to ``[-1, 1]``, floats as
stored) and raises :class:`specsched.errors.InputError`, naming the file, on bad input. The
streaming interface is :func:`specsched.data.sources.open_source`; :func:`load_samples` reads a
small dataset whole through it.
"""

from __future__ import annotations

import os

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
from specsched.data.scaling import DataScalingWarning
from specsched.data.sources import open_source, unknown_source_error

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_DATASET",
    "DataScalingWarning",
    "cifar10_eigenvalues",
    "digits",
    "load_array",
    "load_image_folder",
    "load_samples",
    "open_source",
    "unknown_source_error",
    "natural_patches",
]

def load_samples(src: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Load every sample of a source into memory (small datasets).

    Parameters
    ----------
    src : str or path-like
        Anything :func:`specsched.data.sources.open_source` opens: ``"natural-patches"``,
        ``"digits"``, a Debian dataset, a ``.npy``/``.npz`` file, an IDX file or a folder
        (images, audio, shards, CIFAR-10 batches).

    Returns
    -------
    samples : ndarray of shape (N, ...), float64
        The samples along axis 0, read by the rule of :mod:`specsched.data.scaling`.
    source : str
        A label for provenance: the built-in name or the path as given.

    Raises
    ------
    InputError
        As :func:`specsched.data.sources.open_source` (``"cifar10"`` ships as eigenvalues
        only; an unknown name lists the built-in names), or as the loaders.
    """
    source = open_source(src)
    return source.load(), source.name
