r"""Frechet distance between Gaussian fits, and the kernel (KID) distance, of feature sets.

Notation: two feature sets ``A`` (n_a, d) and ``B`` (n_b, d) with sample means ``mu_a,
mu_b`` and covariances ``S_a, S_b`` (unbiased, ``1 / (n - 1)``).

Frechet distance (Frechet 1957; Dowson & Landau 1982; Heusel et al. 2017 "FID"): the
squared Wasserstein-2 distance between ``N(mu_a, S_a)`` and ``N(mu_b, S_b)``,

    FD = |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}.

The last trace is computed without ``scipy.linalg.sqrtm``: ``R = S_a^{1/2}`` from ``eigh``
(negative round-off eigenvalues clipped to 0), ``M = R S_b R`` is symmetric positive
semi-definite, and ``tr M^{1/2} = sum sqrt(max(eig(M), 0))`` (``eigvalsh``), stable for
singular covariances (fewer samples than features). In pixel space FD is exactly the
theory's ``W2^2`` of Gaussians (:func:`specsched.theory.losses.w2_terms` summed, for a
shared eigenbasis).

KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared
MMD with the polynomial kernel ``k(x, y) = (x . y / d + 1)^3``,

    MMD^2_u = mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j),

averaged over ``n_subsets`` random subsets of ``subset_size`` from each set (drawn without
replacement within a subset, independently across subsets), as torch-fidelity computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.fileio import atomic_write

__all__ = [
    "GaussianFit",
    "KIDResult",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_fit",
    "kernel_distance",
    "polynomial_mmd2_unbiased",
]


@dataclass(frozen=True)
class GaussianFit:
    """Mean (d,) and covariance (d, d) (unbiased) of ``n`` feature vectors, float64."""

    mean: np.ndarray
    covariance: np.ndarray
    n: int

    def save(self, path, force: bool = False) -> None:
        """Write ``mean``, ``covariance``, ``n`` to an ``.npz`` atomically."""
        with atomic_write(path, force=force, mode="wb") as fh:
            np.savez(fh, mean=self.mean, covariance=self.covariance, n=self.n)

    @classmethod
    def load(cls, path) -> GaussianFit:
        """Read a fit written by :meth:`save`."""
        with np.load(path) as z:
            return cls(z["mean"], z["covariance"], int(z["n"]))


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"{name}: expected features of shape (n >= 2, d), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: features contain NaN or infinite values")
    return x


def gaussian_fit(features, name: str = "features") -> GaussianFit:
    """Sample mean and unbiased covariance of ``features`` (n, d), float64.

    Raises
    ------
    InputError
        Not 2-D, fewer than 2 rows, or non-finite values.
    """
    x = _features(features, name)
    mu = x.mean(axis=0)
    r = x - mu
    return GaussianFit(mu, (r.T @ r) / (x.shape[0] - 1), int(x.shape[0]))


def _psd_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Squared W2 distance between ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)``.

    Parameters
    ----------
    mean_a, mean_b : ndarray of shape (d,)
    cov_a, cov_b : ndarray of shape (d, d)
        Symmetric positive semi-definite.

    Returns
    -------
    float
        ``|mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}`` (module
        docstring), clipped at 0 against round-off; squared feature units.

    Raises
    ------
    InputError
        Inconsistent shapes.
    """
    mu_a, mu_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    S_a, S_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    d = mu_a.shape[0] if mu_a.ndim == 1 else -1
    if mu_b.shape != (d,) or S_a.shape != (d, d) or S_b.shape != (d, d):
        raise InputError(f"frechet_distance: shapes disagree: means {mu_a.shape}, "
                         f"{mu_b.shape}, covariances {S_a.shape}, {S_b.shape}")
    R = _psd_sqrt(S_a)
    M = R @ S_b @ R
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0.0, None)).sum()
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(S_a) + np.trace(S_b) - 2.0 * cross
    return float(max(fd, 0.0))


def frechet_distance_features(features_a, features_b) -> float:
    """:func:`frechet_distance` of the Gaussian fits of two feature sets (n_a, d), (n_b, d)."""
    a, b = gaussian_fit(features_a, "features_a"), gaussian_fit(features_b, "features_b")
    if a.mean.shape != b.mean.shape:
        raise InputError(f"features: dimensions differ ({a.mean.size} and {b.mean.size})")
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance)


def polynomial_mmd2_unbiased(a, b, degree: int = 3, coef0: float = 1.0,
                             gamma: float | None = None) -> float:
    """Unbiased ``MMD^2`` of two sets with ``k(x, y) = (gamma x . y + coef0)^degree``.

    Parameters
    ----------
    a : ndarray of shape (m, d); b : ndarray of shape (n, d)
        m, n >= 2.
    gamma : float or None
        None: ``1 / d`` (KID's default).

    Returns
    -------
    float
        May be negative (unbiased estimator of a non-negative quantity).
    """
    m, n = a.shape[0], b.shape[0]
    g = 1.0 / a.shape[1] if gamma is None else gamma
    k_aa = (g * (a @ a.T) + coef0) ** degree
    k_bb = (g * (b @ b.T) + coef0) ** degree
    k_ab = (g * (a @ b.T) + coef0) ** degree
    return float((k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
                 + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1)) - 2.0 * k_ab.mean())


@dataclass(frozen=True)
class KIDResult:
    """KID over subsets: ``mean`` of the subset estimates, their ``std`` (as torch-fidelity's
    ``kernel_inception_distance_std``), and ``std_error = std / sqrt(n_subsets)`` (the
    Monte Carlo error of ``mean`` treating subsets as independent; subsets overlap when
    ``n_subsets * subset_size`` exceeds the set sizes, so it is then optimistic).
    """

    mean: float
    std: float
    std_error: float
    n_subsets: int
    subset_size: int
    values: np.ndarray


def kernel_distance(features_a, features_b, *, rng: np.random.Generator,
                    n_subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                    coef0: float = 1.0, gamma: float | None = None) -> KIDResult:
    """KID: unbiased polynomial-kernel MMD^2 averaged over random subsets.

    Parameters
    ----------
    features_a, features_b : ndarray of shape (n_a, d), (n_b, d)
    rng : numpy.random.Generator
        Draws the subsets.
    n_subsets : int
        Number of subsets (>= 1).
    subset_size : int
        Rows per subset from each set; reduced to ``min(n_a, n_b)`` when larger.
    degree, coef0, gamma :
        Kernel ``(gamma x . y + coef0)^degree``, gamma None: ``1 / d``.

    Returns
    -------
    KIDResult

    Raises
    ------
    InputError
        Bad shapes or non-finite features, n_subsets < 1.
    """
    a = _features(features_a, "features_a")
    b = _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"features: dimensions differ ({a.shape[1]} and {b.shape[1]})")
    if n_subsets < 1:
        raise InputError(f"n_subsets: expected >= 1, got {n_subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise InputError(f"subset_size: expected >= 2, got {subset_size}")
    vals = np.array([
        polynomial_mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                                 b[rng.choice(b.shape[0], m, replace=False)],
                                 degree, coef0, gamma)
        for _ in range(n_subsets)])
    std = float(vals.std(ddof=1)) if n_subsets > 1 else 0.0
    return KIDResult(float(vals.mean()), std, std / np.sqrt(n_subsets), n_subsets, m, vals)
