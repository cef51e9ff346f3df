r"""Empirical W2 of generated samples against the data Gaussian, with a Monte Carlo error.

The samples are projected on the data's eigenbasis (``v = U^T x``, or the coordinates as
they are when only eigenvalues are known) and every direction k is treated as independent
(exact for the Gaussian output of a linear sampler with the Wiener denoiser). The plug-in
estimate is the theory's W2 formula (docs/theory.md section 4) on the empirical mean ``mhat_k``
and unbiased variance ``vhat_k`` of n samples:

    W2hat^2 = sum_k (mhat_k - m_k)^2 + (sqrt(vhat_k) - sqrt(lam_k))^2.

Monte Carlo error: second-order delta method for Gaussian samples, directions independent.
With ``tau_k^2 = v_k / (2 (n - 1))`` (the variance of ``sqrt(vhat_k)``), ``e_k`` the mean error
and ``D_k = sqrt(v_k) - sqrt(lam_k)``:

    E[W2hat^2] - W2^2 ~ sum_k v_k / n + sqrt(v_k lam_k) / (2 (n - 1))        (bias)
    Var[W2hat^2]      ~ sum_k 2 (v_k/n)^2 + 4 e_k^2 v_k/n + 4 D_k^2 tau_k^2 + 2 tau_k^4

evaluated at the estimates. The debiased ``W2^2`` subtracts the bias; the standard error of
W2 is ``SE(W2^2) / (2 W2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.theory.losses import w2_terms

__all__ = ["EmpiricalW2", "RunningMoments", "empirical_w2"]


class RunningMoments:
    """Streaming per-coordinate mean and variance (Chan et al. 1979 pairwise update), float64.

    Attributes
    ----------
    n_samples_seen_ : int
    mean_ : ndarray of shape (d,)
    m2_ : ndarray of shape (d,)
        Sum of squared deviations from the mean.
    """

    def __init__(self):
        self.n_samples_seen_ = 0
        self.mean_ = None
        self.m2_ = None

    def partial_fit(self, batch) -> RunningMoments:
        """Add a batch of shape (b, d); returns self."""
        x = np.asarray(batch, dtype=np.float64)
        b = x.shape[0]
        if b == 0:
            return self
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        if self.mean_ is None:
            self.n_samples_seen_, self.mean_, self.m2_ = b, mb, m2b
            return self
        n = self.n_samples_seen_
        delta = mb - self.mean_
        tot = n + b
        self.mean_ = self.mean_ + delta * (b / tot)
        self.m2_ = self.m2_ + m2b + delta**2 * (n * b / tot)
        self.n_samples_seen_ = tot
        return self

    @property
    def variance_(self) -> np.ndarray:
        """(d,) unbiased variance (ddof = 1)."""
        return self.m2_ / (self.n_samples_seen_ - 1)


@dataclass(frozen=True)
class EmpiricalW2:
    """Empirical W2 of samples against N(m, diag(lam)) in the eigenbasis (module docstring).

    Attributes
    ----------
    w2 : float
        Plug-in W2 (biased upwards by finite n).
    w2_debiased : float
        ``sqrt(max(W2hat^2 - bias, 0))``: compare this with the closed form.
    w2_squared_debiased : float
        ``W2hat^2 - bias`` (may be slightly negative when W2 ~ 0).
    se_w2, se_w2_squared : float
        Monte Carlo standard errors of W2 and of W2^2 (delta method).
    n_samples : int
    mean, variance : ndarray of shape (d,)
        Empirical mean and unbiased variance per direction.
    method : str
        How the standard error was obtained.
    """

    w2: float
    w2_debiased: float
    w2_squared_debiased: float
    se_w2: float
    se_w2_squared: float
    n_samples: int
    mean: np.ndarray
    variance: np.ndarray
    method: str = "second-order delta method, Gaussian samples, independent eigen-directions"

    def summary(self) -> dict:
        """JSON-ready scalars."""
        return {"w2_empirical": self.w2, "w2_empirical_debiased": self.w2_debiased,
                "w2_squared_empirical_debiased": self.w2_squared_debiased,
                "mc_standard_error_w2": self.se_w2,
                "mc_standard_error_w2_squared": self.se_w2_squared,
                "n_samples": self.n_samples, "mc_error_method": self.method}


def empirical_w2(sample_mean, sample_variance, n_samples: int, eigenvalues, mean=None):
    """Empirical W2 and its Monte Carlo standard error (module docstring).

    Parameters
    ----------
    sample_mean, sample_variance : ndarray of shape (d,)
        Empirical mean and unbiased (ddof = 1) variance of the samples in the eigenbasis.
    n_samples : int
        n >= 2.
    eigenvalues : ndarray of shape (d,)
        Data variances ``lam_k``, same order.
    mean : ndarray of shape (d,) or None
        Data mean in the eigenbasis ``m``; zeros when None.

    Returns
    -------
    EmpiricalW2

    Raises
    ------
    InputError
        Mismatched shapes or n < 2.
    """
    mh = np.asarray(sample_mean, dtype=np.float64)
    vh = np.asarray(sample_variance, dtype=np.float64)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64)
    if not (mh.shape == vh.shape == lam.shape == m.shape) or lam.ndim != 1:
        raise InputError(f"sample_mean, sample_variance, eigenvalues, mean: expected equal 1-D "
                         f"shapes, got {mh.shape}, {vh.shape}, {lam.shape}, {m.shape}")
    n = int(n_samples)
    if n < 2:
        raise InputError(f"n_samples: expected >= 2, got {n}")
    e = mh - m
    D = np.sqrt(vh) - np.sqrt(lam)
    w2sq = float(np.sum(w2_terms(lam, vh, e)))  # the theory's W2^2 on the sample moments
    tau2 = vh / (2.0 * (n - 1))
    bias = float(np.sum(vh / n + np.sqrt(vh * lam) / (2.0 * (n - 1))))
    var = float(np.sum(2.0 * (vh / n) ** 2 + 4.0 * e**2 * vh / n + 4.0 * D**2 * tau2
                       + 2.0 * tau2**2))
    deb = w2sq - bias
    w2d = math.sqrt(max(deb, 0.0))
    se2 = math.sqrt(var)
    return EmpiricalW2(
        w2=math.sqrt(w2sq), w2_debiased=w2d, w2_squared_debiased=deb,
        se_w2=se2 / (2.0 * w2d) if w2d > 0 else math.sqrt(se2), se_w2_squared=se2,
        n_samples=n, mean=mh, variance=vh,
    )
