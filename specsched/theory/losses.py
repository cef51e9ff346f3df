r"""Distances between the generated and the data Gaussian, per eigen-direction.

Both laws share the data's eigenbasis, so each loss is a sum over directions k of terms in
the data variance ``lambda_k``, the generated variance ``v_k`` and the mean error
``e_k = mean_gen_k - m_k`` (docs/theory.md section 4):

- ``W2^2 = sum_k e_k^2 + (sqrt(v_k) - sqrt(lambda_k))^2``; W2 is its square root
  (Gelbrich / Dowson-Landau formula for commuting covariances);
- ``KL(gen || data) = 1/2 sum_k [v_k/lambda_k - 1 - log(v_k/lambda_k) + e_k^2/lambda_k]``
  (loss name ``"kl"``);
- ``KL(data || gen) = 1/2 sum_k [lambda_k/v_k - 1 - log(lambda_k/v_k) + e_k^2/v_k]``
  (loss name ``"kl-data-gen"``).

KL needs ``lambda_k > 0`` (and ``v_k > 0``): directions with
``lambda_k <= kl_floor * max(lambda)`` (default ``kl_floor = 1e-12``) are excluded from both
KLs and their number is reported; W2 counts every direction. The CIFAR-10 spectrum has 9
such directions (exact zeros of the empirical covariance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default relative eigenvalue floor below which a direction is left out of KL.
KL_FLOOR = 1e-12
LOSSES = ("w2", "kl", "kl-data-gen")


def kl_mask(eigenvalues, kl_floor: float = KL_FLOOR) -> np.ndarray:
    """Boolean mask (n_directions,) of the directions KL counts: ``lambda > kl_floor * max``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return lam > kl_floor * lam.max()


def w2_terms(eigenvalues, variance, mean_error) -> np.ndarray:
    """Per-direction contributions to ``W2^2``: ``e^2 + (sqrt(v) - sqrt(lambda))^2``.

    Parameters
    ----------
    eigenvalues, variance, mean_error : ndarray of shape (n_directions,), float64
        Data variance ``lambda``, generated variance ``v``, mean error ``e``.

    Returns
    -------
    ndarray of shape (n_directions,), float64, squared data units.
    """
    return mean_error**2 + (np.sqrt(variance) - np.sqrt(eigenvalues)) ** 2


def kl_terms(eigenvalues, variance, mean_error, kl_floor: float = KL_FLOOR,
             keep=None) -> np.ndarray:
    """Per-direction ``KL(gen || data)`` in nats; 0 in directions excluded by the floor.

    Parameters
    ----------
    eigenvalues, variance, mean_error : ndarray of shape (n_directions,), float64
    kl_floor : float
        Relative eigenvalue floor (see module docstring).
    keep : ndarray of bool, shape (n_directions,), optional
        The directions to count; by default ``kl_mask(eigenvalues, kl_floor)``.

    Returns
    -------
    ndarray of shape (n_directions,), float64
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    keep = kl_mask(lam, kl_floor) if keep is None else keep
    out = np.zeros_like(lam)
    r = variance[keep] / lam[keep]
    out[keep] = 0.5 * (r - 1.0 - np.log(r) + mean_error[keep] ** 2 / lam[keep])
    return out


def kl_data_gen_terms(eigenvalues, variance, mean_error, kl_floor: float = KL_FLOOR,
                      keep=None):
    """Per-direction ``KL(data || gen)`` in nats; 0 in directions excluded by the floor.

    Same parameters and return as :func:`kl_terms`.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    keep = kl_mask(lam, kl_floor) if keep is None else keep
    out = np.zeros_like(lam)
    r = lam[keep] / variance[keep]
    out[keep] = 0.5 * (r - 1.0 - np.log(r) + mean_error[keep] ** 2 / variance[keep])
    return out


def loss_value_and_partials(loss: str, eigenvalues, variance, mean_error, kl_floor=KL_FLOOR,
                            weights=None, keep=None):
    """The optimised objective and its partial derivatives in ``variance`` and ``mean_error``.

    For ``loss="w2"`` the objective is ``W2^2`` (same minimiser as W2, smoother at 0);
    for ``loss="kl"`` it is ``KL(gen || data)``, for ``"kl-data-gen"`` ``KL(data || gen)``.

    Parameters
    ----------
    loss : {"w2", "kl", "kl-data-gen"}
    eigenvalues, variance, mean_error : ndarray of shape (n_directions,), float64
    kl_floor : float
    weights : ndarray of shape (n_directions,), optional
        Weight of each direction in the sum (quadrature nodes); 1 by default.
    keep : ndarray of bool, shape (n_directions,), optional
        Directions the KLs count; by default ``kl_mask(eigenvalues, kl_floor)``.

    Returns
    -------
    value : float
    d_variance, d_mean_error : ndarray of shape (n_directions,), float64
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    w = 1.0 if weights is None else np.asarray(weights, dtype=np.float64)
    if loss == "w2":
        sv = np.sqrt(variance)
        value = float(np.sum(w * w2_terms(lam, variance, mean_error)))
        with np.errstate(divide="ignore", invalid="ignore"):
            dv = np.where(sv > 0, 1.0 - np.sqrt(lam) / sv, 0.0)
        return value, w * dv, w * 2.0 * mean_error
    keep = kl_mask(lam, kl_floor) if keep is None else keep
    dv = np.zeros_like(lam)
    de = np.zeros_like(lam)
    v, e, lk = variance[keep], mean_error[keep], lam[keep]
    if loss == "kl":
        terms = kl_terms(lam, variance, mean_error, keep=keep)
        dv[keep] = 0.5 * (1.0 / lk - 1.0 / v)
        de[keep] = e / lk
    elif loss == "kl-data-gen":
        terms = kl_data_gen_terms(lam, variance, mean_error, keep=keep)
        dv[keep] = 0.5 * (1.0 / v - (lk + e * e) / (v * v))
        de[keep] = e / v
    else:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    return float(np.sum(w * terms)), w * dv, w * de


@dataclass(frozen=True)
class LossReport:
    """W2 and KL of one sampler run against the data Gaussian.

    Attributes
    ----------
    w2 : float
        Wasserstein-2 distance (data units).
    kl : float
        ``KL(gen || data)`` in nats over the directions above the floor.
    kl_data_gen : float
        ``KL(data || gen)`` in nats over the same directions.
    w2_terms, kl_terms, kl_data_gen_terms : ndarray of shape (n_directions,), float64
        Per-direction contributions to ``W2^2`` and the KLs, in the spectrum's order.
    kl_excluded : int
        Number of directions left out of KL by the eigenvalue floor.
    transfer : ndarray of shape (n_directions,)
        The transfer function ``H(lambda)``.
    variance : ndarray of shape (n_directions,)
        Generated variance per direction.
    """

    w2: float
    kl: float
    kl_data_gen: float
    w2_terms: np.ndarray
    kl_terms: np.ndarray
    kl_data_gen_terms: np.ndarray
    kl_excluded: int
    transfer: np.ndarray
    variance: np.ndarray

    @classmethod
    def from_moments(cls, eigenvalues, variance, mean_error, transfer,
                     kl_floor: float = KL_FLOOR) -> LossReport:
        """The report of a generated Gaussian against the data ``N(m, lambda)``.

        Parameters
        ----------
        eigenvalues, variance, mean_error, transfer : ndarray of shape (n_directions,)
            ``lambda``, the generated variance, ``mean_gen - m`` and ``H(lambda)``.
        kl_floor : float
            Relative eigenvalue floor of the KLs (module docstring).
        """
        lam = np.asarray(eigenvalues, dtype=np.float64)
        wt = w2_terms(lam, variance, mean_error)
        kt = kl_terms(lam, variance, mean_error, kl_floor)
        rt = kl_data_gen_terms(lam, variance, mean_error, kl_floor)
        return cls(w2=float(np.sqrt(wt.sum())), kl=float(kt.sum()), kl_data_gen=float(rt.sum()),
                   w2_terms=wt, kl_terms=kt, kl_data_gen_terms=rt,
                   kl_excluded=int(lam.size - kl_mask(lam, kl_floor).sum()),
                   transfer=transfer, variance=variance)

    def value(self, loss: str) -> float:
        """The reported value of ``loss`` ("w2", "kl" or "kl-data-gen")."""
        return {"w2": self.w2, "kl": self.kl, "kl-data-gen": self.kl_data_gen}[loss]

    def summary(self) -> dict:
        """``{"w2", "kl", "kl_data_gen"}`` as plain floats (JSON-ready)."""
        return {"w2": self.w2, "kl": self.kl, "kl_data_gen": self.kl_data_gen}
