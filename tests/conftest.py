import numpy as np
import pytest

from specsched.data.builtin import cifar10_eigenvalues


@pytest.fixture(scope="session")
def cifar10_lam():
    """CIFAR-10 covariance eigenvalues (3072,), float64, tiny negatives clipped to 0."""
    return np.asarray(cifar10_eigenvalues(), dtype=np.float64)


@pytest.fixture(scope="session")
def linear_training_ab():
    """alphas_cumprod of the T = 1000 linear training schedule, written out independently."""
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
