r"""Spectral quadrature: a spectrum of d directions compressed into K weighted nodes.

Every loss of docs/theory.md section 4 is a sum over directions of a term that depends on the
direction only through its eigenvalue ``lambda_k`` and (for the mean error) ``m_k^2``:
``L = sum_k f(lambda_k) + m_k^2 g(lambda_k)``. For large d (an ADSN texture has d = 196608)
the sum is an integral against the empirical distribution of ``log lambda``, and a few
hundred nodes reproduce it: cost O(S K) instead of O(S d).

The rule: cut the range of ``log lambda`` into ``n_bins`` bins of equal width (empty bins
dropped); in each bin put two nodes at ``exp(mu +- sd)`` (``mu``, ``sd``: the mean and
standard deviation of the bin's ``log lambda``), each weighted by half the bin's count, with
the bin's mean of ``m^2``. The two nodes match the bin's moments 0, 1, 2 of ``log lambda``,
so the rule integrates any term quadratic in ``log lambda`` within a bin exactly; equal
widths keep every bin narrow, also in the sparse tails (bins of equal count would be wide
there, and the largest eigenvalues carry much of the loss).
Directions with ``lambda = 0`` form one exact node; directions below the KL floor are
binned separately, so the KL mask is exact. The error estimate is the difference between
this rule and the one with half as many bins (``error_estimate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.theory.losses import KL_FLOOR, kl_mask
from specsched.theory.objective import loss_value


@dataclass(frozen=True)
class QuadratureSpectrum:
    """Weighted nodes standing for a spectrum.

    Attributes
    ----------
    eigenvalues : ndarray of shape (n_nodes,), float64
        Node eigenvalues.
    weights : ndarray of shape (n_nodes,), float64
        Number of directions each node stands for (sums to ``n_directions``).
    mean : ndarray of shape (n_nodes,), float64
        Root of the bin's mean ``m^2``: the node's mean in the eigenbasis (sign dropped; the
        losses depend on ``m^2`` only).
    keep : ndarray of bool, shape (n_nodes,)
        Nodes the KLs count (those above the eigenvalue floor).
    n_directions : int
        Dimension of the compressed spectrum.
    """

    eigenvalues: np.ndarray
    weights: np.ndarray
    mean: np.ndarray
    keep: np.ndarray
    n_directions: int

    @property
    def n_nodes(self) -> int:
        """Number of nodes K."""
        return int(self.eigenvalues.size)

    def loss_kwargs(self) -> dict:
        """Keyword arguments of :func:`specsched.theory.loss_and_grad` for these nodes."""
        return {"weights": self.weights, "keep": self.keep}


def _bins(lam, m2, n_bins):
    logl = np.log(lam)
    edges = np.linspace(logl.min(), logl.max(), n_bins + 1)
    which = np.clip(np.searchsorted(edges, logl, side="right") - 1, 0, n_bins - 1)
    order = np.argsort(which, kind="stable")
    splits = np.flatnonzero(np.diff(which[order])) + 1
    nodes, weights, means = [], [], []
    for idx in np.split(order, splits):
        if idx.size == 0:
            continue
        x = logl[idx]
        mu, sd = x.mean(), x.std()
        mean2 = m2[idx].mean()
        if idx.size == 1 or sd == 0.0:
            nodes.append(np.exp(mu))
            weights.append(float(idx.size))
            means.append(mean2)
        else:
            nodes += [np.exp(mu - sd), np.exp(mu + sd)]
            weights += [idx.size / 2.0] * 2
            means += [mean2] * 2
    return nodes, weights, means


def compress_spectrum(eigenvalues, mean=None, n_bins: int = 256,
                      kl_floor: float = KL_FLOOR) -> QuadratureSpectrum:
    """Compress a spectrum into about ``2 n_bins`` weighted nodes (module docstring).

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis.
    n_bins : int
        Bins of equal width over ``log lambda``, at most two nodes each.
    kl_floor : float
        Relative eigenvalue floor of the KLs (nodes below it are not counted by KL).

    Returns
    -------
    QuadratureSpectrum

    Raises
    ------
    ValueError
        If ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins}")
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m2 = np.zeros_like(lam) if mean is None else np.asarray(mean, dtype=np.float64) ** 2
    keep = kl_mask(lam, kl_floor)
    nodes, weights, means, keeps = [], [], [], []
    zero = lam == 0.0
    if zero.any():
        nodes.append(0.0)
        weights.append(float(zero.sum()))
        means.append(m2[zero].mean())
        keeps.append(False)
    for group, k in ((keep, True), (~keep & ~zero, False)):
        if not group.any():
            continue
        share = max(1, round(n_bins * group.sum() / lam.size))
        nd, wt, mn = _bins(lam[group], m2[group], share)
        nodes += nd
        weights += wt
        means += mn
        keeps += [k] * len(nd)
    return QuadratureSpectrum(
        eigenvalues=np.asarray(nodes), weights=np.asarray(weights),
        mean=np.sqrt(np.asarray(means)), keep=np.asarray(keeps, dtype=bool),
        n_directions=int(lam.size),
    )


def error_estimate(eigenvalues, mean, alphas_cumprod, n_bins: int = 256, **loss_kw) -> dict:
    """The quadrature's loss at a schedule, with its own error estimate.

    Parameters
    ----------
    eigenvalues, mean : as in :func:`compress_spectrum`
    alphas_cumprod : ndarray of shape (n_steps,), step 1 first
    n_bins : int
    **loss_kw
        ``loss``, ``sampler``, ``eta``, ``init``, ``kl_floor`` for
        :func:`specsched.theory.loss_value`.

    Returns
    -------
    dict
        ``value`` (the rule with ``n_bins``), ``coarse`` (with ``n_bins // 2``) and
        ``error_estimate = |value - coarse|``, in units of the objective (``W2^2`` or nats).
    """
    out = {}
    for key, nb in (("value", n_bins), ("coarse", max(1, n_bins // 2))):
        q = compress_spectrum(eigenvalues, mean, nb, loss_kw.get("kl_floor", KL_FLOOR))
        out[key] = loss_value(q.eigenvalues, q.mean, alphas_cumprod, **q.loss_kwargs(),
                              **loss_kw)
    out["error_estimate"] = abs(out["value"] - out["coarse"])
    return out
