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

:func:`sample_k` runs one batch; :func:`sample_k_batches` runs ``batch_size`` samples at a
time (memory O(batch_size x dim), what ``specsched sample`` writes to its file).

Coloured forward noise (``noise_spectrum=``, a constant spectrum ``c``; docs/theory.md
section 9, :mod:`specsched.sampling.colour`): the start and every draw (independent or
Brownian) are multiplied by ``sqrt(c)`` per direction, so in ``y = x / sqrt(c)`` the run is the
white one on data of variance ``lam / c``; the model must be made for that noise
(:class:`specsched.sampling.WienerDenoiser` with ``param="ve"`` and ``noise=``, not
:class:`WienerModel`). The argument is not called ``noise``: that name already picks the kind
of draws. A spectrum that changes with the level (FANS) has no k-diffusion sampler.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from specsched.errors import InputError
from specsched.sampling.colour import check_noise
from specsched.sampling.samplers import check_counts
from specsched.theory.kclosed import check_sigmas
from specsched.theory.ksolvers import get_ksampler, resolve_options

__all__ = ["NOISES", "BrownianNoise", "WienerModel", "sample_k", "sample_k_batches"]

#: What ``noise=`` of :func:`sample_k` takes: the k-diffusion function's own draws, or
#: forced independent or Brownian ones.
NOISES = ("default", "iid", "brownian")


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

    Parameters
    ----------
    shape : tuple of int
        Shape of one draw, ``(n, dim)``: one path per row.
    rng : numpy.random.Generator
        Source of the standard normal draws (float64).

    Notes
    -----
    The known levels are kept (``len(levels) x prod(shape)`` floats) until
    :meth:`forget_all_but_lowest` drops them: a sampler whose later draws never reach above
    its current level (sigma decreases) needs only the lowest, so memory stays
    O(prod(shape)) over any number of steps.
    """

    def __init__(self, shape, rng: np.random.Generator):
        self.shape, self.rng = shape, rng
        self.times: list[float] = []
        self.values: list[np.ndarray] = []
        self._floor = None  # levels above it were forgotten

    def forget_all_but_lowest(self) -> None:
        """Drop every known level but the lowest (its value stays, so the path goes on).

        Afterwards a draw at a new level above the lowest would need the forgotten ones: it
        raises RuntimeError instead of drawing from the wrong law.
        """
        if self.times:
            self.times, self.values = self.times[:1], self.values[:1]
            self._floor = self.times[0]

    def _at(self, t: float) -> np.ndarray:
        k = bisect.bisect_left(self.times, t)
        if k < len(self.times) and self.times[k] == t:
            return self.values[k]
        if self._floor is not None and t > self._floor:
            raise RuntimeError(f"BrownianNoise: level {t!r} is above {self._floor!r}, where "
                               "the path was forgotten (forget_all_but_lowest)")
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


def _checked(model, sigmas, sampler, n, dim, options, noise, batch_size=1, noise_spectrum=None):
    """The entry points' one validation: ``(spec, sigmas, options, noise kind, root)``,
    ``root`` the (dim,) ``sqrt(c)`` of a coloured ``noise_spectrum``, None when white."""
    spec = get_ksampler(sampler)
    if not callable(model):
        raise InputError(f"model: expected a callable model(x, sigma) -> x0_hat, got "
                         f"{type(model).__name__}")
    check_counts(n=n, dim=dim, batch_size=batch_size)
    if noise not in NOISES:
        raise InputError(f"noise: expected one of {NOISES}, got {noise!r}")
    if options is not None and not isinstance(options, dict):
        raise InputError(f"options: expected a dict or None, got {type(options).__name__}")
    opts = resolve_options(sampler, **(options or {}))
    kind = spec.noise if noise == "default" else noise
    basis = check_noise(noise_spectrum, model, (dim,), None, sampler)
    root = None if basis is None else np.sqrt(basis.noise.variances)
    return spec, check_sigmas(sigmas), opts, kind, root


def _run(spec, sigmas, opts, kind, model, rng, n: int, dim: int, root=None) -> np.ndarray:
    """One batch of ``n`` samples, on validated arguments (:func:`sample_k`); ``root``: the
    (dim,) ``sqrt(c)`` colouring the start and every draw, None for white noise."""
    brownian = BrownianNoise((n, dim), rng) if kind == "brownian" else None
    if brownian is not None:
        white = brownian
    else:
        def white(sigma, sigma_next):
            return rng.standard_normal((n, dim))
    if root is None:
        draw = white
    else:
        def draw(sigma, sigma_next):
            return root * white(sigma, sigma_next)
    kit = _ArrayKit(sigmas, opts, model, draw)
    x = rng.standard_normal((n, dim)) * spec.start_std(sigmas[0])
    if root is not None:
        x = root * x
    history = ()
    for i in range(sigmas.size - 1):
        x, history = spec.step(kit, i, x, history)
        if brownian is not None:  # later draws are at sigma_{i+1} or below
            brownian.forget_all_but_lowest()
    return x


def sample_k(model, sigmas, sampler: str, n: int, dim: int, rng=None, options=None,
             noise: str = "default", noise_spectrum=None) -> np.ndarray:
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
        Number of samples and their dimension, >= 1.
    rng : numpy.random.Generator, optional
        Source of every draw: the start, then each step's noise in order.
    options : dict, optional
        The sampler's options (``eta``, ``s_noise``, ``r``, ``solver_type``, ``order``):
        resolved ones (:func:`~specsched.theory.ksolvers.resolve_options`) or only some,
        the others taking the k-diffusion function's defaults.
    noise : {"default", "iid", "brownian"}
        The draws: the k-diffusion function's default, or forced (:data:`NOISES`).
    noise_spectrum : NoiseSpectrum or None
        The forward noise, constant (module docstring; docs/theory.md section 9), in the
        eigenbasis of ``model``: start and draws coloured by ``sqrt(c)``; None or white: white,
        the same samples bit for bit. ``model.noise`` must carry the same label (absent:
        white).

    Returns
    -------
    ndarray of shape (n, dim), float64
        The samples the sampler generates from ``x ~ N(0, sigmas[0]^2)``
        (``N(0, 1 + sigmas[0]^2)`` for ``unipc``: diffusers' VP start ``N(0, 1)``; times ``C``
        under coloured noise): VE states at sigma = 0, i.e. the generated x0 itself.

    Raises
    ------
    InputError
        Unknown sampler, noise or option, an option out of range, ``n`` or ``dim`` not a
        positive integer, or sigmas not as expected; a ``noise_spectrum`` the model was not
        made for, of another dimension, or that changes with the level
        (:func:`specsched.sampling.colour.check_noise`).

    Notes
    -----
    docs/theory.md section 3. Memory: the state, the step's temporaries and a multistep
    method's history, a few arrays of shape (n, dim); the Brownian path keeps only its lowest
    level between steps (:meth:`BrownianNoise.forget_all_but_lowest`).
    """
    spec, s, opts, kind, root = _checked(model, sigmas, sampler, n, dim, options, noise,
                                         noise_spectrum=noise_spectrum)
    rng = np.random.default_rng() if rng is None else rng
    return _run(spec, s, opts, kind, model, rng, n, dim, root)


def _batches(spec, sigmas, opts, kind, model, n, dim, rng, batch_size, progress, root=None):
    """The generator of :func:`sample_k_batches` on validated arguments."""
    with tqdm(total=n, desc=f"sampling ({spec.name}, S={sigmas.size - 1})", unit="sample",
              disable=(not progress) if progress is not None else None) as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            batch = _run(spec, sigmas, opts, kind, model, rng, b, dim, root)
            bar.update(b)
            yield start, batch


def sample_k_batches(model: Callable, sigmas, sampler: str, n: int, dim: int, *,
                     rng: np.random.Generator, options: dict | None = None,
                     noise: str = "default", batch_size: int = 1024,
                     progress: bool | None = None,
                     noise_spectrum=None) -> Iterator[tuple[int, np.ndarray]]:
    """Generate ``n`` samples of a k-diffusion sampler batch by batch: ``(start, batch)``.

    Each batch is one :func:`sample_k` run of ``b = min(batch_size, n - start)`` samples
    from the same ``rng``, one after the other: with ``batch_size >= n`` the one batch is
    ``sample_k(model, sigmas, sampler, n, dim, rng=rng, options=options, noise=noise,
    noise_spectrum=noise_spectrum)`` exactly.

    Parameters
    ----------
    model : callable
        ``model(x, sigma) -> x0_hat`` for x of shape (b, dim), float64, VE states
        ``x = x0 + sigma eps`` (:class:`WienerModel` for Gaussian data).
    sigmas : ndarray of shape (n_steps + 1,)
        k-diffusion's order: descending, final 0
        (:func:`specsched.theory.kclosed.kdiffusion_sigmas` of a schedule's alphas_cumprod,
        step 1 the least noisy, gives ``(sigma_S, ..., sigma_1, 0)``).
    sampler : str
        A name of :data:`~specsched.theory.ksolvers.KSAMPLERS`.
    n, dim : int
        Number of samples and their dimension, >= 1.
    rng : numpy.random.Generator
        Source of all randomness, batch after batch (each batch: its start, then its steps'
        noise). The samples depend on ``batch_size`` as well as on the seed.
    options : dict, optional
        As :func:`sample_k` (resolved or partial; None: the function's defaults).
    noise : {"default", "iid", "brownian"}
        As :func:`sample_k`; a Brownian path per sample, drawn anew in each batch.
    batch_size : int
        Samples per batch, >= 1; memory is O(batch_size x dim).
    progress : bool or None
        tqdm progress bar over samples; None shows it only on a terminal.
    noise_spectrum : NoiseSpectrum or None
        As :func:`sample_k`.

    Returns
    -------
    iterator of (start, batch)
        Arguments are checked when this function is called, before the first batch.

    Yields
    ------
    start : int
        Index of the batch's first sample.
    batch : ndarray of shape (b, dim), float64
        Generated samples (VE states at sigma = 0: x0, no rescaling), in the coordinates of
        ``model`` (the eigenbasis for :class:`WienerModel`).

    Raises
    ------
    InputError
        As :func:`sample_k`, or ``batch_size`` not a positive integer.

    Notes
    -----
    docs/theory.md section 3: with :class:`WienerModel` of ``N(mean, diag(eigenvalues))``
    the law of the samples is :func:`specsched.theory.kclosed.kclosed_form` of the same
    sampler, options and sigmas (the same step definitions).
    """
    spec, s, opts, kind, root = _checked(model, sigmas, sampler, n, dim, options, noise,
                                         batch_size, noise_spectrum)
    return _batches(spec, s, opts, kind, model, n, dim, rng, batch_size, progress, root)
