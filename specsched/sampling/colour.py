r"""Coloured forward noise in the samplers: draws of ``C^(1/2) z`` and FANS' per-direction steps.

docs/theory.md section 9. The forward process is ``x_t = sqrt(ab) x_0 + sqrt(1 - ab) C^(1/2)
eps`` with ``C(ab) = diag(c_k(ab))`` in the data's eigenbasis
(:class:`specsched.theory.noise.NoiseSpectrum`, ``c`` in the order of the eigenvalues, largest
first); the reverse process starts from ``N(0, C(ab_S))`` (VE: ``N(0, sigma_S^2 C)``).

- **Constant colour** (``c`` independent of the level): every sampler runs as it is, with its
  start and every injected draw ``z`` replaced by ``C^(1/2) z``. Each update is linear in
  ``(x_s, x0_hat, z)``, so in ``y = x / sqrt(c)`` this is the white sampler on data of variance
  ``lam / c`` with the denoiser ``y0_hat = x0_hat / sqrt(c)`` (the coloured Wiener filter is
  that one, :func:`specsched.sampling.denoisers.noise_gain`), and the law of the output is the
  closed form of :func:`specsched.theory.evaluate_schedule` with ``noise=`` (the reduction
  ``y = x / sqrt(c)``).
- **Level-dependent colour** (FANS, :mod:`specsched.theory.varying`): in ``x / r_k`` with
  ``r_k(ab)^2 = ab + (1 - ab) c_k(ab)`` each direction is the white VP process on the level
  ``abeff_k = ab / r_k^2`` (``r = 1`` at ``ab_0 = 1``), so one DDIM-eta step is, per direction,
  with ``(p, r_eff, q)`` the white update (:attr:`specsched.theory.samplers.Sampler.update`)
  on ``(abeff_{k,s}, abeff_{k,s-1})``:

      x_{s-1} = r_{s-1} (p x0_hat + r_eff x_s / r_s + sqrt(q) z),    x_S ~ N(0, C(ab_S)).

  Only ``ddim`` and ``ddpm`` (DDIM-eta): the other samplers' noise terms are not equivariant
  to the per-direction rescaling (:data:`specsched.theory.varying.VARYING_SAMPLERS`).

Coordinates: a batch has shape ``(b, *sample_shape)`` holding ``d`` values per sample; they
are eigenbasis coordinates ``v`` when no eigenvectors are given, pixel values ``x = U v``
otherwise (the noise is then ``U diag(sqrt(c)) z``, and FANS' per-direction step goes through
``U^T`` and back: two ``(b, d) x (d, d)`` products for the state and the estimate, one back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.sampling.denoisers import denoiser_noise_label
from specsched.theory.noise import NoiseSpectrum, noise_spectrum_label
from specsched.theory.samplers import get_sampler
from specsched.theory.varying import check_varying_sampler, effective_levels

__all__ = ["NoiseBasis", "VaryingSteps", "check_noise", "varying_steps"]


@dataclass(frozen=True, eq=False)
class NoiseBasis:
    """A non-white forward noise in the coordinates of the samples (module docstring).

    Attributes
    ----------
    noise : NoiseSpectrum
        Not white; ``d`` variances.
    eigenvectors : array of shape (d, d) or None
        ``U`` in the namespace ``xp`` (column k belongs to ``c_k``); None: the samples are
        eigenbasis coordinates.
    shape : tuple of int
        Shape of one sample, ``prod(shape) == d``.
    xp : array namespace
        Namespace of the batches (numpy by default).
    """

    noise: NoiseSpectrum
    eigenvectors: object
    shape: tuple
    xp: object = np

    @property
    def dimension(self) -> int:
        """d, the number of values of one sample."""
        return math.prod(self.shape)

    @property
    def time_varying(self) -> bool:
        """Whether ``c`` changes with the level (FANS)."""
        return self.noise.time_varying

    def to_basis(self, x):
        """Eigenbasis coordinates ``(b, d)`` of a batch ``(b, *shape)`` (``U^T x`` per sample)."""
        flat = self.xp.reshape(x, (x.shape[0], self.dimension))
        return flat if self.eigenvectors is None else flat @ self.eigenvectors

    def from_basis(self, v):
        """The batch ``(b, *shape)`` of eigenbasis coordinates ``v`` of shape (b, d)."""
        x = v if self.eigenvectors is None else v @ self.eigenvectors.T
        return self.xp.reshape(x, (v.shape[0], *self.shape))

    def draw(self, rng: np.random.Generator, b: int, variances=None):
        """``b`` draws of ``N(0, C)`` in the sample coordinates, shape ``(b, *shape)``.

        ``variances`` (d,): the ``c`` to use (FANS: ``c(ab)`` at the level asked for); None:
        the constant spectrum's own. One standard normal array of shape (b, d) is taken from
        ``rng``.
        """
        c = self.noise.variances if variances is None else variances
        z = self.xp.asarray(rng.standard_normal((b, self.dimension)))
        return self.from_basis(z * self.xp.asarray(np.sqrt(c)))


def check_noise(noise, denoise, shape, eigenvectors, sampler: str, xp=None):
    """The samplers' one check of ``noise=``: a :class:`NoiseBasis`, or None for white noise.

    Parameters
    ----------
    noise : NoiseSpectrum or None
        The forward noise (:func:`specsched.theory.noise.noise_spectrum`); None: white.
    denoise : callable
        The denoiser (or k-diffusion model); its ``noise`` attribute (absent: white) must carry
        the same label (:func:`specsched.sampling.denoisers.denoiser_noise_label`); a
        denoiser with an ``eigenvectors`` attribute
        (:class:`~specsched.sampling.WienerDenoiser`) must agree with ``eigenvectors`` on the
        coordinates (pixel space or eigenbasis).
    shape : tuple of int
        Shape of one sample (``d = prod(shape)`` values).
    eigenvectors : array-like of shape (d, d) or None
        ``U``: the samples are pixel values ``x = U v``; None: eigenbasis coordinates.
    sampler : str
        The sampler's name (FANS: ``ddim`` or ``ddpm`` only).
    xp : array namespace or None
        Namespace of the batches (numpy when None).

    Returns
    -------
    NoiseBasis or None

    Raises
    ------
    InputError
        ``noise`` not a NoiseSpectrum or None, of another dimension, made for another
        forward noise than the denoiser (``param="noise"``), eigenvectors of the wrong shape
        or given to the sampler but not to a denoiser that has an ``eigenvectors`` attribute
        (or the other way round), a level-dependent noise with a sampler other than ddim and
        ddpm.
    """
    if noise is not None and not isinstance(noise, NoiseSpectrum):
        raise InputError(f"noise: expected a NoiseSpectrum (specsched.theory.noise."
                         f"noise_spectrum(spec, eigenvalues)) or None, got "
                         f"{type(noise).__name__}", param="noise")
    label, made_for = noise_spectrum_label(noise), denoiser_noise_label(denoise)
    if label != made_for:
        raise InputError(f"noise: the samples are drawn under the forward noise {label!r}, but "
                         f"the denoiser was made for {made_for!r}; pass a denoiser of the same "
                         "noise (WienerDenoiser(..., noise=...), whose param may be 've' for "
                         "k-diffusion's samplers)", param="noise")
    if noise is None or noise.is_white:
        return None
    d = math.prod(shape)
    noise.check_dimension(d)
    if noise.time_varying:
        check_varying_sampler(sampler, noise)
    U = None
    if eigenvectors is not None:
        U = np.asarray(eigenvectors, dtype=np.float64)
        if U.shape != (d, d):
            raise InputError(f"eigenvectors: expected shape ({d}, {d}), got {U.shape}")
    if hasattr(denoise, "eigenvectors") and (denoise.eigenvectors is None) != (U is None):
        where = "pixel space (it has eigenvectors)" if U is None else "the eigenbasis"
        raise InputError(f"eigenvectors: the denoiser works in {where}; the coloured noise "
                         "must be drawn in the same coordinates (pass the denoiser's "
                         "eigenvectors for pixel space, none for eigenbasis coordinates)")
    xp = np if xp is None else xp
    return NoiseBasis(noise, None if U is None else xp.asarray(U), tuple(shape), xp)


@dataclass(frozen=True, eq=False)
class VaryingSteps:
    """FANS' per-direction DDIM-eta steps in x (module docstring), step 1 first.

    ``x_{s-1} = P_s x0_hat + R_s x_s + Q_s z`` per eigen-direction, with ``z`` standard normal
    in the eigenbasis.

    Attributes
    ----------
    P, R, Q : ndarray of shape (n_steps, d), float64
        ``r_{s-1} p``, ``r_{s-1} r_eff / r_s`` and ``r_{s-1} sqrt(q)``; row ``s - 1`` is
        step s.
    start_variance : ndarray of shape (d,), float64
        ``c(ab_S)``: the start ``x_S ~ N(0, C(ab_S))``.
    """

    P: np.ndarray
    R: np.ndarray
    Q: np.ndarray
    start_variance: np.ndarray

    def step(self, basis: NoiseBasis, s: int, x, x0_hat, z):
        """``x_{s-1}`` from ``x_s`` (batch in ``basis``' coordinates), ``z`` (b, d) or None."""
        xp = basis.xp
        v = basis.to_basis(x0_hat) * xp.asarray(self.P[s - 1]) \
            + basis.to_basis(x) * xp.asarray(self.R[s - 1])
        if z is not None:
            v = v + z * xp.asarray(self.Q[s - 1])
        return basis.from_basis(v)


def varying_steps(sampler: str, noise: NoiseSpectrum, alphas_cumprod, eta) -> VaryingSteps:
    """The coefficients of :class:`VaryingSteps` for a schedule (module docstring).

    Parameters
    ----------
    sampler : {"ddim", "ddpm"}
        Trusted (:func:`check_noise` checked it).
    noise : NoiseSpectrum
        Not white (level-dependent or constant).
    alphas_cumprod : ndarray of shape (n_steps,), float64
        ``ab_1 > ... > ab_S``, step 1 first; ``ab_0 = 1`` implied.
    eta : float
        Resolved DDIM-eta.

    Returns
    -------
    VaryingSteps

    Notes
    -----
    ``abeff`` from :func:`specsched.theory.varying.effective_levels` (the closed form's own
    levels), ``r_s^2 = ab_s / abeff_s``, and the white update of the sampler
    (:attr:`specsched.theory.samplers.Sampler.update`) evaluated on every (step, direction) at
    once.
    """
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    abeff, _ = effective_levels(noise, ab)
    ones = np.ones((1, abeff.shape[1]))
    r = np.sqrt(ab[:, None] / abeff)
    r_prev = np.vstack([ones, r[:-1]])
    p, r_eff, q = get_sampler(sampler).update(abeff, np.vstack([ones, abeff[:-1]]), eta)
    shape = abeff.shape
    return VaryingSteps(P=np.broadcast_to(r_prev * p, shape),
                        R=np.broadcast_to(r_prev * r_eff / r, shape),
                        Q=np.broadcast_to(r_prev * np.sqrt(q), shape),
                        start_variance=np.asarray(noise.at(ab[-1]), dtype=np.float64))
