"""Sample-quality metrics: Frechet distance (FID) and KID over feature sets.

- :mod:`~specsched.metrics.frechet` (NumPy only): :func:`frechet_distance` between Gaussian
  fits (the W2^2 of Gaussians, sqrtm-free), :func:`kernel_distance` (KID, unbiased
  polynomial-kernel MMD^2 over subsets with its standard error);
- :mod:`~specsched.metrics.features`: extractors ``pixels`` (NumPy), ``classifier`` (a small
  CNN trained by the project on Fashion-MNIST; torch) and ``inception`` (torch-fidelity's
  InceptionV3 from a local weights file);
- ``specsched fid`` is :mod:`specsched.cli.fid`.

Importing this package does not import torch.
"""

from specsched.metrics.features import FEATURES, extract_features, pixel_features
from specsched.metrics.frechet import (
    GaussianFit,
    KIDResult,
    frechet_distance,
    frechet_distance_features,
    gaussian_fit,
    kernel_distance,
    polynomial_mmd2_unbiased,
)

__all__ = [
    "FEATURES",
    "GaussianFit",
    "KIDResult",
    "extract_features",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_fit",
    "kernel_distance",
    "pixel_features",
    "polynomial_mmd2_unbiased",
]
