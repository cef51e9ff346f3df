r"""The Wiener (MMSE) denoiser of Gaussian data, per eigen-direction.

Notation (docs/theory.md section 2): data :math:`x_0 \sim N(\mu, \Sigma)`,
:math:`\Sigma = U \operatorname{diag}(\lambda) U^T`; in the eigenbasis (:math:`v = U^T x`,
:math:`m = U^T \mu`) each direction k is an independent scalar problem with variance
``lambda_k``. ``alphas_cumprod`` (alpha-bar, ``ab``) is the VP signal level of
:math:`x_t = \sqrt{ab}\, x_0 + \sqrt{1 - ab}\, \varepsilon`.
"""

from __future__ import annotations

import numpy as np


def wiener_gain(eigenvalues, alphas_cumprod):
    r"""Gain ``g`` of the VP Wiener denoiser, ``x0_hat = m + g (x_t - sqrt(ab) m)``.

    ``g = sqrt(ab) lambda / (ab lambda + 1 - ab)`` (docs/theory.md section 2).

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0`` along the eigenvectors.
    alphas_cumprod : float or ndarray broadcastable against ``eigenvalues``
        VP noise level(s) ``ab`` in (0, 1].

    Returns
    -------
    ndarray of float64, broadcast shape of the inputs
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt(ab) * lam / (ab * lam + (1.0 - ab))


def wiener_denoise(x, eigenvalues, mean, alphas_cumprod):
    r"""Posterior mean ``E[x_0 | x_t = x]`` of Gaussian data in its eigenbasis (VP).

    ``x0_hat = m + g (x - sqrt(ab) m)`` with ``g`` from :func:`wiener_gain`
    (docs/theory.md section 2; the Wiener filter).

    Parameters
    ----------
    x : ndarray of shape (..., n_directions), float64
        Noisy samples in the eigenbasis at level ``alphas_cumprod``.
    eigenvalues : ndarray of shape (n_directions,)
        Data variances.
    mean : ndarray of shape (n_directions,)
        Data mean in the eigenbasis ``m = U^T mu``.
    alphas_cumprod : float
        VP level ``ab`` in (0, 1].

    Returns
    -------
    ndarray of shape (..., n_directions), float64
    """
    m = np.asarray(mean, dtype=np.float64)
    g = wiener_gain(eigenvalues, alphas_cumprod)
    return m + g * (np.asarray(x, dtype=np.float64) - np.sqrt(alphas_cumprod) * m)


def wiener_denoise_ve(x, eigenvalues, mean, sigma):
    r"""Posterior mean of Gaussian data under VE noise, ``x = x_0 + sigma eps``.

    ``x0_hat = m + lambda / (lambda + sigma^2) (x - m)`` (docs/theory.md section 2).

    Parameters
    ----------
    x : ndarray of shape (..., n_directions), float64
    eigenvalues, mean : ndarray of shape (n_directions,)
    sigma : float
        VE noise standard deviation, >= 0.

    Returns
    -------
    ndarray of shape (..., n_directions), float64
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    return m + lam / (lam + sigma**2) * (np.asarray(x, dtype=np.float64) - m)
