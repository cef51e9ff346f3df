r"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and section 5): the noise-level-conditioned denoiser's wrapper.

A network ``F`` becomes the VE denoiser ``D(x, sigma) = c_skip(sigma) x + c_out(sigma)
F(c_in(sigma) x, c_noise(sigma))`` with

    c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4

so that for data of variance ``sigma_data^2`` the network's input ``c_in x`` and its training
target ``(x_0 - c_skip x) / c_out`` both have unit variance, and the loss weight
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2`` makes the
weighted loss of every level start at 1. Training levels are log-normal:
``ln sigma ~ N(P_mean, P_std^2)``. With ``F = 0`` the denoiser is ``c_skip x``, the Wiener
filter of isotropic data ``N(0, sigma_data^2 I)`` (docs/theory.md section 2): the network
learns only what the data has beyond that.

The functions take NumPy arrays, Python floats or any array of the array API (torch tensors
included: :mod:`array_api_compat`), and import no torch themselves.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

from specsched.errors import InputError

__all__ = [
    "P_MEAN",
    "P_STD",
    "SIGMA_DATA",
    "edm_loss_weight",
    "edm_preconditioning",
    "edm_training_sigmas",
]

#: Karras et al.'s defaults: data standard deviation of images scaled to [-1, 1], and the
#: log-normal training distribution of sigma.
SIGMA_DATA = 0.5
P_MEAN = -1.2
P_STD = 1.2


def _levels(sigma):
    if isinstance(sigma, (int, float, np.integer, np.floating)):
        sigma = np.asarray(sigma, dtype=np.float64)
    xp = array_namespace(sigma)
    if not bool(xp.all(sigma > 0)):
        raise InputError("sigma: expected noise levels > 0 (c_noise = ln(sigma) / 4)",
                         param="sigma")
    return sigma, xp


def edm_preconditioning(sigma, sigma_data: float = SIGMA_DATA):
    """``(c_skip, c_out, c_in, c_noise)`` at ``sigma`` (module docstring; Karras et al.
    2022, Table 1).

    Parameters
    ----------
    sigma : float or array of any shape, > 0
        VE noise levels (``x = x_0 + sigma eps``).
    sigma_data : float
        Standard deviation of the data (0.5 for images in [-1, 1]).

    Returns
    -------
    tuple of four arrays shaped like ``sigma`` (same array library and dtype)

    Raises
    ------
    InputError
        A level <= 0, or ``sigma_data <= 0``.
    """
    if not sigma_data > 0:
        raise InputError(f"sigma_data: expected a number > 0, got {sigma_data!r}",
                         param="sigma_data")
    sigma, xp = _levels(sigma)
    total = sigma**2 + sigma_data**2
    root = xp.sqrt(total)
    return sigma_data**2 / total, sigma * sigma_data / root, 1.0 / root, xp.log(sigma) / 4.0


def edm_loss_weight(sigma, sigma_data: float = SIGMA_DATA):
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (``1 / c_out^2``;
    Karras et al. 2022, Table 1); shaped like ``sigma``."""
    sigma, _ = _levels(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_training_sigmas(n: int, rng: np.random.Generator, p_mean: float = P_MEAN,
                        p_std: float = P_STD) -> np.ndarray:
    """``n`` training levels with ``ln sigma ~ N(p_mean, p_std^2)`` (Karras et al. 2022,
    section 5); ndarray of shape (n,), float64.

    Raises
    ------
    InputError
        ``n < 1`` or ``p_std < 0``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n: expected an integer >= 1, got {n!r}", param="n")
    if not p_std >= 0:
        raise InputError(f"p_std: expected a number >= 0, got {p_std!r}", param="p_std")
    return np.exp(p_mean + p_std * rng.standard_normal(n))
