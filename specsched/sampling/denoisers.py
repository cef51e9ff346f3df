r"""Exact denoisers ``denoise(x, level) -> x0_hat`` (posterior means) for the samplers.

Every denoiser here predicts the CLEAN sample ``x0_hat = E[x_0 | x_t = x]``. Convention of
:mod:`specsched.sampling.samplers`: with ``param == "vp"`` the input is a VP state
``x = sqrt(ab) x_0 + sqrt(1 - ab) eps`` and ``level = ab`` (alphas_cumprod); with
``param == "ve"`` it is ``x = x_0 + sigma eps`` and ``level = sigma``.

- :class:`WienerDenoiser`: Gaussian data ``N(mu, U diag(lam) U^T)`` (docs/theory.md section 2):
  ``x0_hat = m + g (x - sqrt(ab) m)``, ``g = sqrt(ab) lam / (ab lam + 1 - ab)`` in the
  eigenbasis, ``x0_hat = mu + U diag(g) U^T (x - sqrt(ab) mu)`` in pixel space when ``U`` is
  known; VE: ``g = lam / (lam + sigma^2)`` and ``sqrt(ab)`` replaced by 1 (the gain of
  :func:`specsched.theory.wiener.wiener_gain`). Under coloured forward noise
  ``C(ab) = diag(c_k(ab))`` (docs/theory.md section 9; :mod:`specsched.theory.noise`) the
  noise term of each direction is ``(1 - ab) c_k`` (VE: ``sigma^2 c_k``), so
  ``g = sqrt(ab) lam / (ab lam + (1 - ab) c_k(ab))`` and ``g = lam / (lam + sigma^2 c_k(ab))``
  with ``ab = 1 / (1 + sigma^2)`` (:func:`noise_gain`).
- :class:`GaussianMixtureDenoiser`: data ``sum_k w_k N(mu_k, C_k)``; the posterior mean is
  the responsibility-weighted sum of the components' Wiener filters, with responsibilities
  ``r_k(x) ∝ w_k N(x; sqrt(ab) mu_k, ab C_k + (1 - ab) I)`` computed with log-sum-exp.
- :func:`x0_from_eps`: wrap a noise-prediction model ``eps(x, ab)`` (VP) as a denoiser,
  ``x0_hat = (x - sqrt(1 - ab) eps_hat) / sqrt(ab)`` (Ho et al. 2020, eq. 15).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from specsched.errors import InputError
from specsched.theory.noise import NoiseSpectrum, noise_spectrum_label
from specsched.theory.wiener import PARAMS, wiener_gain, wiener_gain_coefficients

__all__ = ["GaussianMixtureDenoiser", "WienerDenoiser", "denoiser_noise_label", "eps_from_x0",
           "noise_gain", "x0_from_eps"]


def _namespace(x):
    """Array namespace of ``x``: numpy for ndarrays, array_api_compat's otherwise."""
    return np if isinstance(x, np.ndarray) else array_namespace(x)


def _check_level(param: str, level) -> float:
    """``level`` as a float: alphas_cumprod in [0, 1] for VP (0: pure noise, the posterior
    mean is the data mean), sigma >= 0 for VE, t in [0, 1] for FM."""
    level = float(level)
    if param == "vp":
        if not 0.0 <= level <= 1.0:
            raise InputError(f"level: expected alphas_cumprod in [0, 1], got {level!r}")
    elif param == "fm":
        if not 0.0 <= level <= 1.0:
            raise InputError(f"level: expected a flow-matching time t in [0, 1], got "
                             f"{level!r}")
    elif not level >= 0.0:
        raise InputError(f"level: expected sigma >= 0, got {level!r}")
    return level


def _check_param(param: str) -> str:
    if param not in PARAMS:
        raise InputError(f"param: expected one of {PARAMS}, got {param!r}")
    return param


def noise_gain(eigenvalues, level: float, param: str = "vp", noise=None) -> np.ndarray:
    """Wiener gain ``g`` under the forward noise ``noise`` (module docstring).

    Parameters
    ----------
    eigenvalues : ndarray of shape (d,), float64
        Data variances ``lam_k >= 0``, in the order of ``noise``'s variances (largest first).
    level : float
        VP ``ab`` in (0, 1] or VE ``sigma >= 0``; trusted.
    param : {"vp", "ve"}
    noise : NoiseSpectrum or None
        None or white: :func:`specsched.theory.wiener.wiener_gain` itself (bit for bit);
        otherwise ``g = s lam / (gamma lam + delta c(ab))`` with ``(s, gamma, delta)`` of
        :func:`specsched.theory.wiener.wiener_gain_coefficients` and ``c`` from
        :meth:`NoiseSpectrum.at` at the VP level ``ab`` (``1 / (1 + sigma^2)`` for VE).

    Returns
    -------
    ndarray of shape (d,), float64

    Notes
    -----
    docs/theory.md sections 2 and 9: the posterior mean of ``x_0 ~ N(m, lam)`` given
    ``x = s x_0 + sqrt(delta c) eps``.
    """
    if noise is None or noise.is_white:
        return wiener_gain(eigenvalues, level, param)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    ab = (level if param == "vp" else 1.0 / (1.0 + level * level) if param == "ve"
          else (1.0 - level) ** 2 / ((1.0 - level) ** 2 + level * level))
    s, gamma, delta = (float(v) for v in wiener_gain_coefficients(level, param))
    return s * lam / (gamma * lam + delta * noise.at(ab))


def denoiser_noise_label(denoise) -> str:
    """The forward noise a denoiser was made for: the label of its ``noise`` attribute
    (:attr:`specsched.theory.noise.NoiseSpectrum.label`), ``"white"`` when it has none (a
    plain callable, a network trained with white noise)."""
    return noise_spectrum_label(getattr(denoise, "noise", None))


@dataclass(frozen=True, eq=False)
class WienerDenoiser:
    """The exact MMSE denoiser of Gaussian data (a Wiener filter), VP or VE.

    Parameters
    ----------
    eigenvalues : ndarray of shape (d,), float64
        Data variances ``lam_k >= 0`` along the eigenvectors.
    mean : ndarray of shape (d,) or None
        Data mean in the eigenbasis, ``m = U^T mu``; zeros when None.
    eigenvectors : ndarray of shape (d, d) or None
        ``U`` (column k belongs to ``lam_k``). None: inputs are eigenbasis coordinates
        ``v = U^T x``; given: inputs are in pixel space and
        ``x0_hat = mu + U diag(g) U^T (x - sqrt(ab) mu)`` with ``mu = U m``.
    param : {"vp", "ve"}
        ``"vp"``: call as ``denoise(x, ab)``, ``g = sqrt(ab) lam / (ab lam + 1 - ab)``;
        ``"ve"``: call as ``denoise(x, sigma)``, ``g = lam / (lam + sigma^2)`` and the
        mean is not scaled (docs/theory.md section 2).
    noise : NoiseSpectrum or None
        The forward noise ``C(ab) = diag(c_k(ab))`` in the eigenbasis
        (:func:`specsched.theory.noise.noise_spectrum` of these eigenvalues, same order);
        None or white: white noise, bit for bit the gains above. Coloured:
        ``g = sqrt(ab) lam / (ab lam + (1 - ab) c(ab))``, VE ``lam / (lam + sigma^2 c(ab))``
        (:func:`noise_gain`; docs/theory.md section 9); in pixel space the noise is
        ``U diag(sqrt(c)) z``. The samplers read this attribute to check that the denoiser
        was made for the noise they draw.

    Calling
    -------
    ``denoise(x, level)`` with ``x`` of shape ``(n, ...)`` whose trailing dimensions hold
    ``d`` values (flattened C-order) returns ``x0_hat`` of the same shape, float64.

    Raises
    ------
    InputError
        Shapes that do not match ``d``, negative or non-finite eigenvalues, unknown param,
        a level outside (0, 1] (VP) or negative (VE), ``noise`` not a NoiseSpectrum or of
        another dimension.

    Notes
    -----
    docs/theory.md sections 2 and 9; Wiener (1949). Pixel-space cost is two (n, d) x (d, d)
    products.
    """

    eigenvalues: np.ndarray
    mean: np.ndarray | None = None
    eigenvectors: np.ndarray | None = None
    param: str = "vp"
    noise: NoiseSpectrum | None = None

    def __post_init__(self):
        lam = np.array(self.eigenvalues, dtype=np.float64)
        if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam < 0):
            raise InputError("eigenvalues: expected a non-empty 1-D array of finite values >= 0")
        d = lam.size
        m = np.zeros(d) if self.mean is None else np.array(self.mean, dtype=np.float64)
        if m.shape != (d,):
            raise InputError(f"mean: expected shape ({d},), got {m.shape}")
        U = self.eigenvectors
        if U is not None:
            U = np.array(U, dtype=np.float64)
            if U.shape != (d, d):
                raise InputError(f"eigenvectors: expected shape ({d}, {d}), got {U.shape}")
        _check_param(self.param)
        if self.noise is not None:
            if not isinstance(self.noise, NoiseSpectrum):
                raise InputError(f"noise: expected a NoiseSpectrum "
                                 f"(specsched.theory.noise.noise_spectrum) or None, got "
                                 f"{type(self.noise).__name__}", param="noise")
            self.noise.check_dimension(d)
        object.__setattr__(self, "eigenvalues", lam)
        object.__setattr__(self, "mean", m)
        object.__setattr__(self, "eigenvectors", U)

    @classmethod
    def from_spectrum(cls, spectrum, *, param: str = "vp", pixel_space: bool | None = None,
                      noise: NoiseSpectrum | None = None):
        """The Wiener denoiser of a :class:`~specsched.spectrum.Spectrum`.

        Parameters
        ----------
        spectrum : Spectrum
        param : {"vp", "ve"}
        pixel_space : bool or None
            Use the eigenvectors (pixel-space inputs); None: whenever they are known.
        noise : NoiseSpectrum or None
            The forward noise (class docstring); None: white.

        Raises
        ------
        InputError
            ``pixel_space=True`` for a spectrum without eigenvectors.
        """
        if pixel_space is None:
            pixel_space = spectrum.eigenvectors is not None
        if pixel_space and spectrum.eigenvectors is None:
            raise InputError(f"spectrum {spectrum.source!r}: no eigenvectors, so no "
                             "pixel-space denoiser (use pixel_space=False: eigenbasis)")
        return cls(spectrum.eigenvalues, spectrum.mean,
                   spectrum.eigenvectors if pixel_space else None, param, noise)

    @property
    def dimension(self) -> int:
        """d, the number of values of one sample."""
        return int(self.eigenvalues.size)

    @property
    def pixel_mean(self) -> np.ndarray:
        """(d,) float64: the data mean ``mu`` in the input coordinates (``U m`` or ``m``)."""
        return self.mean if self.eigenvectors is None else self.eigenvectors @ self.mean

    def gain(self, level: float) -> np.ndarray:
        """(d,) float64 Wiener gain ``g`` at ``level`` (ab for VP, sigma for VE).

        :func:`noise_gain` under this denoiser's noise (white:
        :func:`specsched.theory.wiener.wiener_gain`); InputError for a level out of range.
        """
        return noise_gain(self.eigenvalues, _check_level(self.param, level), self.param,
                          self.noise)

    def __call__(self, x, level):
        xp = _namespace(x)
        d = self.dimension
        n = x.shape[0]
        flat = xp.reshape(x, (n, -1))
        if flat.shape[1] != d:
            raise InputError(f"x: expected {d} values per sample, got shape {tuple(x.shape)}")
        level = _check_level(self.param, level)
        scale = float(wiener_gain_coefficients(level, self.param)[0])  # E[x_t] = scale m
        g = xp.asarray(noise_gain(self.eigenvalues, level, self.param, self.noise))
        mu = xp.asarray(self.pixel_mean)
        r = flat - scale * mu
        if self.eigenvectors is None:
            out = mu + g * r
        else:
            U = xp.asarray(self.eigenvectors)
            out = mu + ((r @ U) * g) @ U.T
        return xp.reshape(out, tuple(x.shape))


@dataclass(frozen=True, eq=False)
class GaussianMixtureDenoiser:
    """The exact posterior mean of a Gaussian mixture under VP noise.

    Data ``x_0 ~ sum_k w_k N(mu_k, C_k)``; at level ``ab`` the noisy law of component k is
    ``N(sqrt(ab) mu_k, S_k)``, ``S_k = ab C_k + (1 - ab) I``, so

        E[x_0 | x] = sum_k r_k(x) (mu_k + sqrt(ab) C_k S_k^{-1} (x - sqrt(ab) mu_k)),
        r_k(x) = softmax_k(log w_k - 1/2 log det S_k - 1/2 |x - sqrt(ab) mu_k|^2_{S_k^{-1}}).

    With ``C_k = V_k diag(l_k) V_k^T`` (eigendecomposed once), ``S_k`` is diagonal in
    ``V_k``, so each call costs O(n K d^2) and no matrix is inverted.

    Parameters
    ----------
    weights : ndarray of shape (K,)
        Mixture weights, > 0; normalised to sum 1.
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)
        Symmetric positive semi-definite.
    param : {"vp", "ve"}
        Calling convention (module docstring); VE inputs are rescaled to VP exactly.

    Raises
    ------
    InputError
        Inconsistent shapes, non-positive weights, non-symmetric or indefinite covariances.

    Notes
    -----
    Posterior of a Gaussian mixture prior under Gaussian noise (Bishop 2006, sections 2.3.3
    and 9.2); log-sum-exp for the responsibilities keeps them finite far from every mean.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    param: str = "vp"

    def __post_init__(self):
        w = np.array(self.weights, dtype=np.float64)
        mu = np.array(self.means, dtype=np.float64)
        C = np.array(self.covariances, dtype=np.float64)
        if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise InputError("weights: expected a 1-D array of positive finite numbers")
        K = w.size
        if mu.ndim != 2 or mu.shape[0] != K:
            raise InputError(f"means: expected shape ({K}, d), got {mu.shape}")
        d = mu.shape[1]
        if C.shape != (K, d, d):
            raise InputError(f"covariances: expected shape ({K}, {d}, {d}), got {C.shape}")
        if not np.allclose(C, np.swapaxes(C, 1, 2), rtol=1e-10, atol=1e-12):
            raise InputError("covariances: expected symmetric matrices")
        lam, V = np.linalg.eigh(C)
        if np.any(lam < -1e-10 * np.max(np.abs(lam), axis=1, keepdims=True)):
            raise InputError("covariances: expected positive semi-definite matrices")
        _check_param(self.param)
        set_ = object.__setattr__
        set_(self, "weights", w / w.sum())
        set_(self, "means", mu)
        set_(self, "covariances", C)
        set_(self, "_lam", np.maximum(lam, 0.0))  # (K, d)
        set_(self, "_V", V)  # (K, d, d)

    @property
    def dimension(self) -> int:
        """d, the number of values of one sample."""
        return int(self.means.shape[1])

    def __call__(self, x, level):
        xp = _namespace(x)
        n = x.shape[0]
        flat = xp.reshape(x, (n, -1))
        if flat.shape[1] != self.dimension:
            raise InputError(f"x: expected {self.dimension} values per sample, "
                             f"got shape {tuple(x.shape)}")
        level = _check_level(self.param, level)
        if self.param == "ve":  # x_ve = x_vp / sqrt(ab), ab = 1 / (1 + sigma^2)
            ab = 1.0 / (1.0 + level * level)
            flat = math.sqrt(ab) * flat
        else:
            ab = level
        s, gamma, delta = (float(c) for c in wiener_gain_coefficients(ab))
        K = self.weights.size
        logits, posts = [], []
        for k in range(K):
            V = xp.asarray(self._V[k])
            lam = self._lam[k]
            var = gamma * lam + delta  # eigenvalues of S_k
            r = (flat - s * xp.asarray(self.means[k])) @ V  # (n, d) in V_k's basis
            maha = xp.sum(r * r / xp.asarray(var), axis=1)
            logits.append(math.log(self.weights[k]) - 0.5 * float(np.sum(np.log(var)))
                          - 0.5 * maha)
            posts.append(xp.asarray(self.means[k])
                         + (r * xp.asarray(wiener_gain(lam, ab))) @ V.T)
        L = xp.stack(logits, axis=1)  # (n, K)
        L = L - xp.max(L, axis=1, keepdims=True)  # log-sum-exp
        R = xp.exp(L)
        R = R / xp.sum(R, axis=1, keepdims=True)
        out = posts[0] * R[:, 0:1]
        for k in range(1, K):
            out = out + posts[k] * R[:, k:k + 1]
        return xp.reshape(out, tuple(x.shape))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact samples of the mixture, ndarray of shape (n, d), float64."""
        k = rng.choice(self.weights.size, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dimension))
        root = self._V * np.sqrt(self._lam)[:, None, :]  # C_k = root root^T
        return self.means[k] + np.einsum("nij,nj->ni", root[k], z)


def x0_from_eps(eps_model: Callable) -> Callable:
    """Turn a noise-prediction model into a clean-sample denoiser (VP).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x, ab) -> eps_hat`` for a VP state ``x = sqrt(ab) x0 + sqrt(1 - ab) eps``.

    Returns
    -------
    callable
        ``denoise(x, ab) = (x - sqrt(1 - ab) eps_model(x, ab)) / sqrt(ab)`` (Ho et al. 2020,
        eq. 15), with ``param = "vp"``.
    """

    def denoise(x, ab):
        return (x - math.sqrt(1.0 - ab) * eps_model(x, ab)) / math.sqrt(ab)

    denoise.param = "vp"
    return denoise


def eps_from_x0(denoise: Callable) -> Callable:
    """The inverse of :func:`x0_from_eps`: ``eps_hat = (x - sqrt(ab) x0_hat) / sqrt(1 - ab)``.

    Parameters
    ----------
    denoise : callable
        VP denoiser ``denoise(x, ab) -> x0_hat``.

    Returns
    -------
    callable
        ``eps_model(x, ab) -> eps_hat`` (docs/theory.md section 2), e.g. to drive diffusers'
        schedulers with an exact denoiser.
    """

    def eps_model(x, ab):
        return (x - math.sqrt(ab) * denoise(x, ab)) / math.sqrt(1.0 - ab)

    return eps_model
