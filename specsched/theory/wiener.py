r"""The Wiener (MMSE) denoiser of Gaussian data, per eigen-direction: the one definition.

Notation (docs/theory.md section 2): data :math:`x_0 \sim N(\mu, \Sigma)`,
:math:`\Sigma = U \operatorname{diag}(\lambda) U^T`; in the eigenbasis (:math:`v = U^T x`,
:math:`m = U^T \mu`) each direction k is an independent scalar problem with variance
``lambda_k``. Two parametrisations of the noisy state:

- VP, level ``ab`` (alphas_cumprod): :math:`x_t = \sqrt{ab}\, x_0 + \sqrt{1 - ab}\, \varepsilon`;
- VE, level ``sigma``: :math:`x_t = x_0 + \sigma \varepsilon`;
- FM (flow matching, rectified flow), level ``t`` in [0, 1]:
  :math:`x_t = (1 - t) x_0 + t \varepsilon` (docs/theory.md section 10).

In all three, per direction, ``E[x_t] = s m``, ``Cov(x_0, x_t) = s lambda`` and
``Var(x_t) = gamma lambda + delta`` with

    VP: (s, gamma, delta) = (sqrt(ab), ab, 1 - ab);     VE: (s, gamma, delta) = (1, 1, sigma^2);
    FM: (s, gamma, delta) = (1 - t, (1 - t)^2, t^2),

so the posterior mean is ``x0_hat = m + g (x_t - s m)`` with the gain

    g(lambda) = s lambda / (gamma lambda + delta)                 (Wiener 1949),

and, because ``s^2 = gamma``, ``1 - s g = delta / (gamma lambda + delta)``.
:func:`wiener_gain_coefficients` is where these three scalars are written; the denoisers
(:mod:`specsched.sampling.denoisers`) and the closed forms of every sampler
(:mod:`specsched.theory.samplers`) are built from it.
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError

__all__ = [
    "PARAMS",
    "wiener_denoise",
    "wiener_denoise_ve",
    "wiener_gain",
    "wiener_gain_coefficients",
]

#: Parametrisations of the noisy state.
PARAMS = ("vp", "ve", "fm")


def wiener_gain_coefficients(level, param: str = "vp"):
    r"""Scalars ``(s, gamma, delta)`` of the Wiener gain ``g = s lambda / (gamma lambda + delta)``.

    Parameters
    ----------
    level : float, complex or ndarray
        ``ab`` in [0, 1] for ``param="vp"``; ``sigma >= 0`` for ``param="ve"``; ``t`` in
        [0, 1] for ``param="fm"``. Complex values are accepted (the samplers differentiate
        through this by complex step).
    param : {"vp", "ve", "fm"}
        Parametrisation of the state (module docstring).

    Returns
    -------
    s, gamma, delta : float or ndarray, the shape of ``level``
        VP ``(sqrt(ab), ab, 1 - ab)``; VE ``(1, 1, sigma^2)``; FM ``(1 - t, (1 - t)^2,
        t^2)``. ``s`` is also the scale of the state's mean, ``E[x_t] = s m``, and
        ``gamma lambda + delta`` its variance (docs/theory.md sections 2 and 10); pure noise
        (VP ``ab = 0``, FM ``t = 1``) has ``s = gamma = 0``: the gain is 0 and the denoiser
        returns the mean.

    Raises
    ------
    InputError
        Unknown ``param``. Levels are not checked (the callers' entry points check them).
    """
    if param == "vp":
        ab = level
        return np.sqrt(ab), ab, 1.0 - ab
    if param == "ve":
        one = np.ones_like(level)
        return one, one, level * level
    if param == "fm":
        u = 1.0 - level
        return u, u * u, level * level
    raise InputError(f"param: expected one of {PARAMS}, got {param!r}")


def wiener_gain(eigenvalues, level, param: str = "vp"):
    r"""Gain ``g`` of the Wiener denoiser, ``x0_hat = m + g (x_t - s m)``.

    VP: ``g = sqrt(ab) lambda / (ab lambda + 1 - ab)``; VE: ``g = lambda / (lambda + sigma^2)``
    (docs/theory.md section 2; coefficients from :func:`wiener_gain_coefficients`).

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0`` along the eigenvectors.
    level : float or ndarray broadcastable against ``eigenvalues``
        VP level ``ab`` in (0, 1] or VE noise standard deviation ``sigma >= 0``.
    param : {"vp", "ve"}

    Returns
    -------
    ndarray of float64, broadcast shape of the inputs

    Raises
    ------
    InputError
        Unknown ``param``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    s, gamma, delta = wiener_gain_coefficients(np.asarray(level, dtype=np.float64), param)
    return s * lam / (gamma * lam + delta)


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

    ``x0_hat = m + lambda / (lambda + sigma^2) (x - m)`` (docs/theory.md section 2; gain from
    :func:`wiener_gain` with ``param="ve"``).

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
    m = np.asarray(mean, dtype=np.float64)
    return m + wiener_gain(eigenvalues, sigma, "ve") * (np.asarray(x, dtype=np.float64) - m)
