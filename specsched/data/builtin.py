"""Built-in datasets: real data that ships with the installed packages (no network).

- ``natural-patches`` (default): square RGB patches cut at random from the colour
  photographs bundled in the scikit-image wheel (:data:`PATCH_IMAGES`).
- ``digits``: scikit-learn's bundled 8 x 8 handwritten digits (1797 images).
- ``cifar10``: eigenvalues only, of the covariance of the CIFAR-10 training images scaled to
  ``[-1, 1]``, from Pierret & Galerne (ICML 2025); see ``builtin/PROVENANCE.md``.

All samples are float64 in ``[-1, 1]``.
"""

from __future__ import annotations

import importlib.resources
import numbers

import numpy as np

from specsched.data.scaling import to_unit_interval
from specsched.errors import InputError

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_DATASET",
    "PATCH_IMAGES",
    "natural_patches",
    "digits",
    "cifar10_eigenvalues",
]

#: Names of the built-in datasets.
BUILTIN_DATASETS = ("natural-patches", "digits", "cifar10")
#: Dataset used when the user names none.
DEFAULT_DATASET = "natural-patches"
#: :mod:`skimage.data` loaders of the RGB photographs bundled in the scikit-image wheel
#: (read from the installed package, no download), used by :func:`natural_patches`.
PATCH_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")

_CIFAR10_FILE = "builtin/cifar10_eigenvalues.npy"


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def natural_patches(patch_size: int = 16, n_patches: int = 20000, seed: int = 0) -> np.ndarray:
    """Random RGB patches of real photographs bundled with scikit-image.

    The images are, in this order, ``skimage.data.astronaut`` (512 x 512), ``coffee``
    (400 x 600), ``chelsea`` (300 x 451), ``rocket`` (427 x 640) and ``hubble_deep_field``
    (872 x 1000), all 8-bit RGB files inside the installed scikit-image package. Each image
    gives ``n_patches // 5`` patches (the first ``n_patches % 5`` images one more), at
    top-left corners drawn uniformly with ``numpy.random.default_rng(seed)``, image after
    image; so the result depends only on the arguments (and the scikit-image files).

    Parameters
    ----------
    patch_size : int
        Side of the square patches in pixels, ``1 <= patch_size <= 300`` (the smallest image
        side).
    n_patches : int
        Number of patches, ``>= 1``.
    seed : int
        Seed of the generator that places the patches.

    Returns
    -------
    ndarray of shape (n_patches, patch_size, patch_size, 3), float64
        RGB patches, pixel values ``x / 255 * 2 - 1`` in ``[-1, 1]``, grouped by image.

    Raises
    ------
    InputError
        If ``n_patches`` is not a positive integer, or ``patch_size`` is not an integer in
        ``[1, 300]`` (a patch must fit in the smallest image; the message names the value and
        that range).
    """
    import skimage.data

    n_patches = _positive_int(n_patches, "n_patches")
    images = [getattr(skimage.data, name)() for name in PATCH_IMAGES]
    sides = [min(img.shape[:2]) for img in images]
    smallest = min(sides)
    if (isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral)
            or not 1 <= patch_size <= smallest):
        img = images[sides.index(smallest)]
        raise InputError(
            f"patch_size: expected an integer in [1, {smallest}] (the smallest image side: "
            f"{PATCH_IMAGES[sides.index(smallest)]} is {img.shape[0]} x {img.shape[1]}), "
            f"got {patch_size!r}"
        )
    patch_size = int(patch_size)
    rng = np.random.default_rng(seed)
    counts = np.full(len(images), n_patches // len(images))
    counts[: n_patches % len(images)] += 1
    offsets = np.arange(patch_size)
    parts = []
    for img, count in zip(images, counts, strict=True):
        rows = rng.integers(0, img.shape[0] - patch_size + 1, size=count)
        cols = rng.integers(0, img.shape[1] - patch_size + 1, size=count)
        r = rows[:, None, None] + offsets[None, :, None]
        c = cols[:, None, None] + offsets[None, None, :]
        parts.append(img[r, c, :3])  # (count, patch_size, patch_size, 3) uint8
    return to_unit_interval(np.concatenate(parts), "natural-patches")


def digits() -> np.ndarray:
    """scikit-learn's bundled 8 x 8 handwritten digits as images in ``[-1, 1]``.

    Source: :func:`sklearn.datasets.load_digits` (UCI ML hand-written digits, 1797 images,
    grey levels 0..16), rescaled as ``x / 16 * 2 - 1``.

    Returns
    -------
    ndarray of shape (1797, 8, 8), float64
        The images in scikit-learn's order, values in ``[-1, 1]``.
    """
    from sklearn.datasets import load_digits

    images = np.asarray(load_digits().images, dtype=np.float64)
    return images / 16.0 * 2.0 - 1.0


def cifar10_eigenvalues() -> np.ndarray:
    """Eigenvalues of the covariance of CIFAR-10, as packaged with specsched.

    Source: the code folder of the repository accompanying E. Pierret and B. Galerne,
    "Diffusion models for Gaussian distributions: exact solutions and Wasserstein errors",
    ICML 2025; see ``specsched/data/builtin/PROVENANCE.md`` (sha256 of the file there).

    Returns
    -------
    ndarray of shape (3072,), float64
        Variances of the CIFAR-10 training images (32 x 32 x 3, pixel values scaled to
        ``[-1, 1]``) along the eigenvectors of their empirical covariance, in the stored
        (ascending) order; sum 761.6. The stored file is float32; its non-positive entries
        (round-off, stored as ``-0.0``) are set to ``+0.0``.
    """
    ref = importlib.resources.files("specsched.data").joinpath(_CIFAR10_FILE)
    with ref.open("rb") as fh:
        lam = np.load(fh, allow_pickle=False).astype(np.float64)
    lam[lam <= 0.0] = 0.0
    return lam
