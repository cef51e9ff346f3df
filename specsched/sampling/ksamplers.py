r"""Torch-free Monte Carlo runs of k-diffusion's samplers, from the same steps as the closed form.

The steps of :mod:`specsched.theory.ksolvers` run here on arrays of samples: the closed form
(:mod:`specsched.theory.kclosed`) and this sampler are one definition, so a Monte Carlo check
tests the algebra of the closed form, not a second transcription (docs/theory.md section 3).

Conventions: VE states ``x = x0 + sigma eps``; ``sigmas`` descending with a final 0
(k-diffusion's order); ``x`` of shape (n, d) in the eigenbasis of the data; the start is
``x ~ N(0, sigmas[0]^2)``. The denoiser is any callable ``model(x, sigma) -> x0_hat``
(:class:`WienerModel` for Gaussian data). Noise: independent standard normal draws, or for
the samplers whose k-diffusion default is ``BrownianTreeNoiseSampler`` the scaled increments
of one Brownian motion in sigma per sample (:class:`BrownianNoise`).
"""

from __future__ import annotations

import bisect

import numpy as np

from specsched.theory.kclosed import check_sigmas
from specsched.theory.ksolvers import get_ksampler, resolve_options

__all__ = ["BrownianNoise", "WienerModel", "sample_k"]


class WienerModel:
    """The exact denoiser of ``N(mean, diag(eigenvalues))`` for VE states.

    ``model(x, sigma) = mean + lambda / (lambda + sigma^2) (x - mean)`` per direction
    (docs/theory.md section 2); ``x`` of shape (n, d), float64.
    """

    def __init__(self, eigenvalues, mean=None):
        self.lam = np.asarray(eigenvalues, dtype=np.float64)
        self.mean = np.zeros_like(self.lam) if mean is None else np.asarray(mean, np.float64)

    def __call__(self, x, sigma):
        return self.mean + self.lam / (self.lam + sigma * sigma) * (x - self.mean)


class BrownianNoise:
    """Scaled increments ``(W(b) - W(a)) / sqrt|b - a|`` of a Brownian motion W in sigma.

    Each sample (row) has its own path, ``W(sigma_max) = 0``; a level asked for the first time
    is drawn from the Brownian bridge between its known neighbours (or by extension beyond
    them), so every draw has the law of k-diffusion's ``BrownianTreeNoiseSampler``.
    """

    def __init__(self, shape, rng: np.random.Generator):
        self.shape, self.rng = shape, rng
        self.times: list[float] = []
        self.values: list[np.ndarray] = []

    def _at(self, t: float) -> np.ndarray:
        k = bisect.bisect_left(self.times, t)
        if k < len(self.times) and self.times[k] == t:
            return self.values[k]
        z = self.rng.standard_normal(self.shape)
        if not self.times:
            w = np.zeros(self.shape)
        elif k == 0:
            w = self.values[0] + np.sqrt(self.times[0] - t) * z
        elif k == len(self.times):
            w = self.values[-1] + np.sqrt(t - self.times[-1]) * z
        else:
            t0, t1 = self.times[k - 1], self.times[k]
            w0, w1 = self.values[k - 1], self.values[k]
            frac = (t - t0) / (t1 - t0)
            w = w0 + frac * (w1 - w0) + np.sqrt((t - t0) * (t1 - t) / (t1 - t0)) * z
        self.times.insert(k, t)
        self.values.insert(k, w)
        return w

    def __call__(self, sigma, sigma_next):
        a, b = float(sigma), float(sigma_next)
        if not self.times:
            self._at(max(a, b))
        return (self._at(b) - self._at(a)) / np.sqrt(abs(b - a))


class _ArrayKit:
    def __init__(self, sigmas, options, model, noise):
        self.sigmas, self.options, self.model, self.noise = sigmas, options, model, noise


def sample_k(model, sigmas, sampler: str, n: int, dim: int, rng=None, options=None,
             noise: str = "default") -> np.ndarray:
    """Run a k-diffusion sampler of :mod:`specsched.theory.ksolvers` on arrays.

    Parameters
    ----------
    model : callable
        ``model(x, sigma) -> x0_hat`` for x of shape (n, dim), e.g. :class:`WienerModel`.
    sigmas : ndarray of shape (n_steps + 1,)
        Descending, final 0 (:func:`specsched.theory.kclosed.check_sigmas`).
    sampler : str
        A name of :data:`~specsched.theory.ksolvers.KSAMPLERS`.
    n, dim : int
        Number of samples and their dimension.
    rng : numpy.random.Generator, optional
    options : dict, optional
        Resolved options (:func:`~specsched.theory.ksolvers.resolve_options`).
    noise : {"default", "iid", "brownian"}
        The draws: the k-diffusion function's default, or forced.

    Returns
    -------
    ndarray of shape (n, dim), float64
        The samples (VE states) the sampler generates from ``x ~ N(0, sigmas[0]^2)``
        (``N(0, 1 + sigmas[0]^2)`` for ``unipc``: diffusers' VP start ``N(0, 1)``).

    Raises
    ------
    InputError
        Unknown sampler or option, or sigmas not as expected.
    """
    spec = get_ksampler(sampler)
    opts = resolve_options(sampler) if options is None else options
    s = check_sigmas(sigmas)
    rng = np.random.default_rng() if rng is None else rng
    kind = spec.noise if noise == "default" else noise
    if kind == "brownian":
        draw = BrownianNoise((n, dim), rng)
    else:
        def draw(sigma, sigma_next):
            return rng.standard_normal((n, dim))
    kit = _ArrayKit(s, opts, model, draw)
    x = rng.standard_normal((n, dim)) * spec.start_std(s[0])
    history = ()
    for i in range(s.size - 1):
        x, history = spec.step(kit, i, x, history)
    return x
