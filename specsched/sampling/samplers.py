r"""Torch-free discrete diffusion samplers over arrays, driven by a schedule and a denoiser.

Notation (docs/theory.md sections 1 and 3). A schedule is ``ab = (ab_1, ..., ab_S)``
(alphas_cumprod), step 1 (least noisy) first, ``1 > ab_1 > ... > ab_S > 0``, with
``ab_0 = 1`` implied: the last reverse step (s = 1) lands on clean data. One reverse step
``s -> s-1`` uses ``a = ab_s`` and ``ap = ab_{s-1}``. VE samplers use the same points as
noise levels ``sigma_s = sqrt((1 - ab_s) / ab_s)`` (``sigma_0 = 0``).

The denoiser is a callable ``denoise(x, level) -> x0_hat`` that predicts the CLEAN sample
``x0`` (not the noise). By default (``denoise.param`` absent or ``"vp"``) ``x`` is a VP state
``x = sqrt(ab) x0 + sqrt(1 - ab) eps`` and ``level`` is ``ab``; a denoiser whose attribute
``param`` is ``"ve"`` takes a VE state ``x = x0 + sigma eps`` and ``level = sigma``. The
samplers convert between the two exactly (``x_vp = sqrt(ab) x_ve``), so any denoiser drives
any sampler. Wrap a noise-prediction model with :func:`specsched.sampling.x0_from_eps`.

Updates (docs/theory.md section 3): each sampler is defined once, by its update
``x_{s-1} = p x0_hat + r x_s + sqrt(q) z`` in :mod:`specsched.theory.samplers`
(:attr:`specsched.theory.samplers.Sampler.update`), which the closed form is derived from:

- ``ddim`` / ``ddpm`` (DDIM-eta, Song, Meng, Ermon 2021, eq. 12; eta = 0 DDIM, eta = 1 DDPM
  with the posterior variance beta-tilde):
  ``x_{s-1} = sqrt(ap) x0_hat + sqrt(1 - ap - sig^2) eps_hat + sig z``,
  ``sig^2 = eta^2 (1 - ap)/(1 - a) (1 - a/ap)``, ``eps_hat = (x_s - sqrt(a) x0_hat) / sqrt(1 - a)``;
- ``ddpm-large`` (Ho, Jain, Abbeel 2020, eqs. 6-7 with sigma^2 = beta_s, diffusers'
  ``fixed_large``): ``x_{s-1} = sqrt(ap) beta_s/(1 - a) x0_hat + sqrt(a/ap) (1 - ap)/(1 - a) x_s
  + sqrt(beta_s) z``, ``beta_s = 1 - a/ap``, no noise on the final step s = 1;
- ``ddim-ve``: ``x_{s-1} = x0_hat + (sigma_{s-1}/sigma_s)(x_s - x0_hat)`` (= Euler on the
  probability-flow ODE in sigma, k-diffusion's ``sample_euler``);
- ``ddpm-ve`` (SMLD ancestral, Song & Ermon 2019; = k-diffusion's ``sample_euler_ancestral``):
  ``x_{s-1} = x0_hat + (sigma_{s-1}^2/sigma_s^2)(x_s - x0_hat)
  + sqrt(sigma_{s-1}^2 (sigma_s^2 - sigma_{s-1}^2)/sigma_s^2) z``.

Start ``x_S ~ N(0, I)`` (VP) or ``N(0, sigma_S^2 I)`` (VE). The output is a clean sample in
both parametrisations. With the exact Wiener denoiser of a Gaussian, the law of the output
is the closed form :func:`specsched.theory.closed_form` of the same sampler and schedule.

Coloured forward noise (``noise=``, docs/theory.md section 9; :mod:`specsched.sampling.colour`):
a constant spectrum ``c`` multiplies the start and every injected draw by ``C^(1/2)`` (every
sampler); FANS, whose ``c`` changes with the level, runs ddim and ddpm per direction on the
levels ``abeff_k = ab / (ab + (1 - ab) c_k(ab))``. The denoiser must be made for the same
noise (:class:`specsched.sampling.WienerDenoiser` with ``noise=``); the law of the output is
then :func:`specsched.theory.evaluate_schedule` with ``noise=``.

Arrays: ``x`` has shape ``(n, ...)``; arithmetic goes through an array namespace ``xp``
(array-API style; numpy by default, ``array_api_compat.array_namespace`` of the denoiser's
output otherwise). Random numbers come from a :class:`numpy.random.Generator` (float64) and
are converted with ``xp.asarray``. Samples are produced ``batch_size`` at a time, so memory is
O(batch_size x d) besides the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from specsched.errors import InputError
from specsched.sampling.colour import check_noise, varying_steps
from specsched.schedules.conversions import _fm_alphas_cumprod, _fm_times, as_alphas_cumprod
from specsched.theory.flow import PRODUCT_SAMPLERS
from specsched.theory.samplers import SAMPLERS, get_sampler, resolve_eta, sampler_param

__all__ = ["SAMPLER_NAMES", "as_alphas_cumprod", "sample", "sample_batches", "step"]

#: Samplers implemented here: every one of :data:`specsched.theory.SAMPLERS` and the
#: flow-matching product samplers (:data:`specsched.theory.flow.PRODUCT_SAMPLERS`).
SAMPLER_NAMES = (*SAMPLERS, *PRODUCT_SAMPLERS)


def step(sampler: str, x, x0_hat, a: float, ap: float, eta: float | None, z):
    """One reverse step ``s -> s-1`` of a sampler (module docstring; docs/theory.md section 3).

    ``x_{s-1} = p x0_hat + r x_s + sqrt(q) z`` with ``(p, r, q)`` from the sampler's update
    (:attr:`specsched.theory.samplers.Sampler.update`).

    Parameters
    ----------
    sampler : str
        One of :data:`SAMPLER_NAMES`.
    x : array of shape (n, ...), float64
        State at step s: VP ``sqrt(a) x0 + sqrt(1 - a) eps`` for VP samplers, VE
        ``x0 + sigma_s eps`` for ``*-ve`` samplers.
    x0_hat : array of shape (n, ...)
        The denoiser's estimate of the clean sample.
    a, ap : float
        ``ab_s`` and ``ab_{s-1}``, ``0 < a < ap <= 1`` (``ap = 1``: the final step).
    eta : float or None
        Resolved DDIM-eta stochasticity (:func:`specsched.theory.resolve_eta`; a number for
        ``ddim``/``ddpm``, ignored by the others). Trusted.
    z : array of shape (n, ...) or None
        Standard normal noise; only read by stochastic steps.

    Returns
    -------
    array of shape (n, ...)
        State at step s - 1.

    Raises
    ------
    InputError
        Unknown sampler.
    """
    p, r, q = (float(c) for c in get_sampler(sampler).update(float(a), float(ap), eta))
    out = p * x0_hat + r * x
    return out + math.sqrt(q) * z if q > 0.0 else out


def _call_denoiser(denoise: Callable, x, a: float, state: str):
    """``x0_hat`` from ``denoise`` at VP level ``a`` for a VP, VE or FM state ``x`` (``state``).

    The states of one point are ``x_vp = sqrt(a) x_ve = x_fm / sqrt((1 - t)^2 + t^2)``: the
    state is taken to VP, then to the denoiser's own parametrisation (``denoise.param``, VP
    when absent). ``a = 0`` (FM ``t = 1``, pure noise) has no VE state or level.
    """
    kind = getattr(denoise, "param", "vp")
    t = float(_fm_times(a))
    if kind == state:
        return denoise(x, a if kind == "vp" else t if kind == "fm" else math.sqrt((1 - a) / a))
    if kind == "ve" and a == 0.0:
        raise InputError("denoise: a VE denoiser cannot be called at pure noise (t = 1, "
                         "sigma = inf); use a VP or FM denoiser (WienerDenoiser(param='fm'))",
                         param="denoise")
    fm_scale = math.sqrt((1.0 - t) ** 2 + t * t)
    x_vp = x / fm_scale if state == "fm" else math.sqrt(a) * x if state == "ve" else x
    if kind == "ve":
        return denoise(x_vp / math.sqrt(a), math.sqrt((1.0 - a) / a))
    if kind == "fm":
        return denoise(fm_scale * x_vp, t)
    return denoise(x_vp, a)


def _velocity(denoise: Callable, x, t: float):
    """Flow-matching velocity ``(x - x0_hat) / t`` of an FM state at time ``t`` (section 10)."""
    return (x - _call_denoiser(denoise, x, float(_fm_alphas_cumprod(t)), "fm")) * (1.0 / t)


def check_counts(**counts) -> None:
    """InputError ``"NAME: expected an integer >= 1, got VALUE"`` for the first of ``counts``
    (a sample count, a batch size, a dimension) that is not a positive integer (bools are
    not)."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name}: expected an integer >= 1, got {value!r}")


def _check_args(denoise, schedule, n, sample_shape, sampler, eta, batch_size, noise=None,
                eigenvectors=None, xp=None):
    """The entry points' one validation: ``(eta, shape, alphas_cumprod, basis)``, resolved
    (``basis`` the :class:`~specsched.sampling.colour.NoiseBasis` of ``noise``, None when
    white)."""
    if not callable(denoise):
        raise InputError(f"denoise: expected a callable denoise(x, level) -> x0_hat, got "
                         f"{type(denoise).__name__}")
    eta = resolve_eta(sampler, eta)  # also checks the name
    check_counts(n=n, batch_size=batch_size)
    try:
        shape = tuple(int(s) for s in sample_shape)
    except TypeError:
        raise InputError(f"sample_shape: expected a tuple of ints, got {sample_shape!r}") from None
    if any(s < 1 for s in shape):
        raise InputError(f"sample_shape: expected positive sizes, got {shape}")
    basis = check_noise(noise, denoise, shape, eigenvectors, sampler, xp)
    return eta, shape, as_alphas_cumprod(
        schedule, zero_terminal=sampler_param(sampler) in ("vp", "fm")), basis


def _batches(denoise, ab, n, shape, sampler, eta, rng, batch_size, xp, progress, basis=None):
    """The generator of :func:`sample_batches` on validated arguments (``basis``: the
    coloured noise, None when white)."""
    xp = np if xp is None else xp
    state = sampler_param(sampler)
    product = PRODUCT_SAMPLERS.get(sampler)
    stochastic = sampler in ("ddpm", "ddpm-large", "ddpm-ve") or (eta or 0.0) > 0.0
    start_std = math.sqrt((1.0 - ab[-1]) / ab[-1]) if state == "ve" else 1.0
    levels = [(float(ab[s]), 1.0 if s == 0 else float(ab[s - 1])) for s in range(ab.size)]
    varying = (varying_steps(sampler, basis.noise, ab, eta)
               if basis is not None and basis.time_varying else None)

    def draw(b, variances=None):  # N(0, C) in the sample coordinates (white: N(0, I))
        if basis is None:
            return xp.asarray(rng.standard_normal((b, *shape)))
        return basis.draw(rng, b, variances)

    with tqdm(total=n, desc=f"sampling ({sampler}, S={ab.size})", unit="sample",
              disable=(not progress) if progress is not None else None) as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x = start_std * draw(b, None if varying is None else varying.start_variance)
            for s in range(ab.size, 0, -1):  # reverse time: step S first
                a, ap = levels[s - 1]
                if product is not None:  # several model calls: through the velocity
                    x = product.step(x, float(_fm_times(a)), float(_fm_times(ap)),
                                     lambda x_, t_: _velocity(denoise, x_, t_))
                    continue
                x0_hat = _call_denoiser(denoise, x, a, state)
                if varying is None:
                    x = step(sampler, x, x0_hat, a, ap, eta, draw(b) if stochastic else None)
                else:  # per-direction levels (FANS), z in the eigenbasis
                    z = (xp.asarray(rng.standard_normal((b, basis.dimension)))
                         if stochastic else None)
                    x = varying.step(basis, s, x, x0_hat, z)
            bar.update(b)
            yield start, x


def sample_batches(
    denoise: Callable,
    schedule,
    n: int,
    sample_shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    eta: float | None = None,
    rng: np.random.Generator,
    batch_size: int = 1024,
    xp=None,
    progress: bool | None = None,
    noise=None,
    eigenvectors=None,
) -> Iterator[tuple[int, object]]:
    """Generate ``n`` samples batch by batch: an iterator of ``(start, batch)``.

    Parameters
    ----------
    denoise : callable
        ``denoise(x, level) -> x0_hat`` predicting the clean sample (module docstring for
        ``level`` and the ``param`` attribute); called with arrays of shape
        ``(b, *sample_shape)``, b <= ``batch_size``.
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 (least noisy) first; ``ab_0 = 1`` implied.
    n : int
        Number of samples, >= 1.
    sample_shape : tuple of int
        Shape of one sample (e.g. ``(d,)`` in an eigenbasis, ``(16, 16, 3)`` for images).
    sampler : {"ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve"}
    eta : float or None
        DDIM-eta stochasticity with ``"ddim"``; None: the sampler's own (docs/theory.md section 3).
    rng : numpy.random.Generator
        Source of all randomness (start noise, then step noise, batch after batch). The
        samples depend on ``batch_size`` as well as on the seed.
    batch_size : int
        Samples per batch, >= 1; memory is O(batch_size x prod(sample_shape)).
    xp : array namespace or None
        Namespace of the arithmetic (numpy when None).
    progress : bool or None
        tqdm progress bar over samples; None shows it only on a terminal.
    noise : NoiseSpectrum or None
        The forward noise (:func:`specsched.theory.noise.noise_spectrum` of the data's
        eigenvalues; module docstring, docs/theory.md section 9); None or white: white noise,
        the same samples bit for bit as without it. ``denoise.noise`` must carry the same
        label (absent: white). A level-dependent spectrum (FANS) takes ddim and ddpm only.
    eigenvectors : ndarray of shape (d, d) or None
        With coloured noise: ``U``, the samples are pixel values ``x = U v`` and the noise
        ``U diag(sqrt(c)) z``; None: the samples are eigenbasis coordinates (the only layout
        of a spectrum without eigenvectors, such as the Fourier model's). Must agree with the
        denoiser's own ``eigenvectors`` where it has that attribute. Unused for white noise.

    Returns
    -------
    iterator of (start, batch)
        Arguments are checked when this function is called, before the first batch.

    Yields
    ------
    start : int
        Index of the batch's first sample.
    batch : array of shape (b, *sample_shape), float64
        Clean samples ``x_0`` (the state after step 1).

    Raises
    ------
    InputError
        Bad schedule, sampler, eta, ``n``, ``sample_shape`` or ``batch_size``; a ``noise``
        the denoiser was not made for, of another dimension, with eigenvectors that do not
        fit, or level-dependent with a sampler other than ddim and ddpm
        (:func:`specsched.sampling.colour.check_noise`).
    """
    eta, shape, ab, basis = _check_args(denoise, schedule, n, sample_shape, sampler, eta,
                                        batch_size, noise, eigenvectors, xp)
    return _batches(denoise, ab, n, shape, sampler, eta, rng, batch_size, xp, progress, basis)


def sample(
    denoise: Callable,
    schedule,
    n: int,
    sample_shape: tuple[int, ...],
    *,
    sampler: str = "ddim",
    eta: float | None = None,
    rng: np.random.Generator,
    batch_size: int = 1024,
    out: np.ndarray | None = None,
    xp=None,
    progress: bool | None = None,
    noise=None,
    eigenvectors=None,
):
    """Generate ``n`` samples into a preallocated array (or a new one).

    Same parameters as :func:`sample_batches`, plus

    out : ndarray of shape (n, *sample_shape) or None
        Destination (e.g. a :func:`numpy.lib.format.open_memmap`); a new float64 array of
        the namespace when None.

    Returns
    -------
    array of shape (n, *sample_shape), float64
        ``out``, filled with clean samples. With the Wiener denoiser of a Gaussian
        (:class:`specsched.sampling.WienerDenoiser`) their law is
        :func:`specsched.theory.closed_form` of the same sampler and schedule
        (:func:`specsched.theory.evaluate_schedule` with the same ``noise``).

    Raises
    ------
    InputError
        As :func:`sample_batches`, or ``out`` of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from specsched.sampling import WienerDenoiser, sample
    >>> den = WienerDenoiser(np.array([2.0, 0.5]))
    >>> x = sample(den, [0.9, 0.5, 0.1], 4, (2,), rng=np.random.default_rng(0), progress=False)
    >>> x.shape
    (4, 2)
    """
    eta, sample_shape, ab, basis = _check_args(denoise, schedule, n, sample_shape, sampler,
                                               eta, batch_size, noise, eigenvectors, xp)
    shape = (n, *sample_shape)
    if out is None:
        out = (np if xp is None else xp).zeros(shape, dtype=np.float64 if xp is None
                                               else xp.float64)
    elif tuple(out.shape) != shape:
        raise InputError(f"out: expected shape {shape}, got {tuple(out.shape)}")
    for start, batch in _batches(denoise, ab, n, sample_shape, sampler, eta, rng, batch_size,
                                 xp, progress, basis):
        out[start:start + batch.shape[0], ...] = batch
    return out
