r"""The trained U-Net as a denoiser ``denoise(x, ab) -> x0_hat`` for :mod:`specsched.sampling`.

Convention of the torch-free sampler: ``x`` is a NumPy float64 VP state of shape
``(n, H, W, C)`` (channels last, as the data loaders give images) at level ``ab``
(alphas_cumprod), ``x = sqrt(ab) x_0 + sqrt(1 - ab) eps``. The network predicts the noise,
so

    x0_hat = (x - sqrt(1 - ab) eps_hat(x, t)) / sqrt(ab)      (Ho et al. 2020, eq. 15)

with the requested ``ab`` (the state's true level) and the network conditioned on the
training step ``t`` NEAREST IN logSNR to ``ab``: ``t = argmin_t |logsnr(ab_train[t]) -
logsnr(ab)|`` (ties to the less noisy step), the rule of
:func:`specsched.schedules.nearest_training_timesteps`. A schedule on the training grid is
therefore evaluated exactly as trained; a schedule off it (karras, logSNR-uniform, an
optimised one) sees the network at the nearest trained noise level, and levels beyond the
grid's ends see its end steps. The network runs in float32 (``torch.inference_mode``),
``batch_size`` states at a time; the arithmetic around it is float64.

A network trained with coloured forward noise (``train-unet --noise-spectrum``, docs/theory.md
section 9) predicts the coloured ``eps_hat`` and the same formula gives ``x0_hat``;
:func:`sample_eps` then starts from ``N(0, C)`` and colours every injected draw by FFT
(:class:`specsched.unet.colour.FourierColour`), through the samplers' own step
(:func:`specsched.sampling.samplers.step`): in ``y = C^(-1/2) x`` this is the white sampler.
"""

from __future__ import annotations

import math

import numpy as np

from specsched.errors import InputError
from specsched.sampling.denoisers import x0_from_eps
from specsched.sampling.samplers import as_alphas_cumprod, check_counts, sample, step
from specsched.schedules import Schedule, logsnr_from_alphas_cumprod
from specsched.theory.samplers import get_sampler, resolve_eta
from specsched.unet.edm import edm_preconditioning
from specsched.unet.train import ARCHITECTURE_FIELDS, checkpoint_colour, load_checkpoint

__all__ = ["EDMDenoiser", "UNetDenoiser", "nearest_timesteps", "sample_edm", "sample_eps"]


def nearest_timesteps(training_alphas_cumprod, alphas_cumprod) -> np.ndarray:
    """Index of the training step nearest in logSNR to each level (ties: smaller t).

    Parameters
    ----------
    training_alphas_cumprod : ndarray of shape (T,)
        Training grid, t = 0 least noisy, strictly decreasing in (0, 1).
    alphas_cumprod : array-like of shape (n,) or scalar
        Levels in (0, 1).

    Returns
    -------
    ndarray of shape (n,), int64, in [0, T-1]
    """
    grid = logsnr_from_alphas_cumprod(np.asarray(training_alphas_cumprod, dtype=np.float64))
    target = logsnr_from_alphas_cumprod(np.atleast_1d(np.asarray(alphas_cumprod, np.float64)))
    hi = np.clip(np.searchsorted(-grid, -target), 0, grid.size - 1)
    lo = np.clip(hi - 1, 0, grid.size - 1)
    pick_lo = np.abs(grid[lo] - target) <= np.abs(grid[hi] - target)
    return np.where(pick_lo, lo, hi).astype(np.int64)


class UNetDenoiser:
    """A noise-prediction network wrapped as a VP clean-sample denoiser.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(x_t, t) -> eps_hat`` on NCHW float32 tensors (:class:`UNet`).
    training_alphas_cumprod : ndarray of shape (T,)
        The grid the model was trained on (t = 0 least noisy).
    batch_size : int
        States per forward pass.
    clip_denoised : bool
        Clip ``x0_hat`` to [-1, 1] (DDPM's ``clip_denoised``; off by default so the sampler
        sees the network as it is, as the theory's linear denoiser is unclipped).
    colour : FourierColour or None
        The forward noise the network was trained with (None: white); read by
        :func:`sample_eps`, which colours the sampler's draws with it.

    Attributes
    ----------
    param : str
        ``"vp"``: the sampler calls ``denoise(x, ab)``.
    sample_shape : tuple (H, W, C)
        Shape of one sample, for :func:`specsched.sampling.sample`.
    calls : int
        Network forward passes so far (one per batch per step).
    """

    param = "vp"

    def __init__(self, model, training_alphas_cumprod, *, batch_size: int = 500,
                 clip_denoised: bool = False, colour=None):
        self.model = model.eval()
        self.colour = colour
        self.training_alphas_cumprod = np.asarray(training_alphas_cumprod, dtype=np.float64)
        self.batch_size = int(batch_size)
        self.clip_denoised = bool(clip_denoised)
        cfg = model.config
        self.sample_shape = (cfg["image_size"], cfg["image_size"], cfg["image_channels"])
        self.calls = 0
        self._x0 = x0_from_eps(self.eps)

    @classmethod
    def from_checkpoint(cls, path, *, ema: bool = True, **kwargs) -> UNetDenoiser:
        """Load a :func:`specsched.unet.train_unet` checkpoint (EMA weights by default)."""
        from specsched.unet.model import UNet  # imports torch

        ck = load_checkpoint(path)
        model = UNet(**{k: ck["config"][k] for k in ARCHITECTURE_FIELDS})
        model.load_state_dict(ck["ema" if ema else "model"])
        return cls(model, ck["training_alphas_cumprod"].numpy(), colour=checkpoint_colour(ck),
                   **kwargs)

    @property
    def noise_label(self) -> str:
        """The forward noise's label (``"white"``, ``"equal-snr"``, ``"power:GAMMA"``), as a
        schedule file records it (:meth:`specsched.schedules.Schedule.check_noise_spectrum`)."""
        return "white" if self.colour is None else self.colour.label

    def check_schedule(self, schedule: Schedule, source: str) -> None:
        """InputError unless ``schedule`` was made for this network's forward noise."""
        schedule.check_noise_spectrum(self.noise_label, source)

    def timestep(self, ab: float) -> int:
        """Training step used for level ``ab`` (nearest in logSNR)."""
        return int(nearest_timesteps(self.training_alphas_cumprod, ab)[0])

    def eps(self, x: np.ndarray, ab: float) -> np.ndarray:
        """``eps_hat`` (float64, shape of ``x``) at level ``ab`` for NHWC states ``x``."""
        import torch

        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            raise InputError(f"x: expected shape (n, {', '.join(map(str, self.sample_shape))}),"
                             f" got {tuple(x.shape)}")
        t = float(self.timestep(ab))
        out = np.empty(x.shape, dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(
                    x[i:i + self.batch_size].transpose(0, 3, 1, 2), dtype=np.float32))
                eb = self.model(xb, torch.full((xb.shape[0],), t))
                out[i:i + xb.shape[0]] = eb.numpy().transpose(0, 2, 3, 1)
                self.calls += 1
        return out

    def __call__(self, x, ab):
        ab = float(ab)
        if not 0.0 < ab < 1.0:
            raise InputError(f"level: expected alphas_cumprod in (0, 1), got {ab!r}")
        x0 = self._x0(np.asarray(x, dtype=np.float64), ab)  # Ho et al. 2020, eq. 15
        return np.clip(x0, -1.0, 1.0) if self.clip_denoised else x0


class EDMDenoiser:
    """A network trained with EDM preconditioning as a VE denoiser ``model(x, sigma)``.

    ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` (:mod:`specsched.unet.edm`,
    Karras et al. 2022), the convention of k-diffusion's samplers
    (:mod:`specsched.sampling.ksamplers`, ``sample_k``): any level is evaluated at its own
    value, no rounding to a training grid. ``x`` is a float64 array of flattened samples
    ``(n, H * W * C)`` or images ``(n, H, W, C)``; the network runs in float32
    (``torch.inference_mode``), ``batch_size`` states at a time.

    Parameters
    ----------
    model : torch.nn.Module
        ``F(x, c_noise)`` on NCHW float32 tensors (:class:`~specsched.unet.model.UNet`).
    sigma_data : float
        The preconditioning's data standard deviation (as trained).
    sigma_range : (float, float)
        Levels the network was trained on (:meth:`TrainConfig.trained_sigma_range`).
    sample_shape : tuple (H, W, C)
    batch_size : int
    source : str
        Where the network came from (named in errors).
    clip_denoised : bool
        Clip ``D(x, sigma)`` to the data range [-1, 1] (a non-linearity the closed form does
        not model; off by default, the control of docs/unet.md's EDM study).

    Attributes
    ----------
    param : str
        ``"ve"``.
    calls : int
        Network forward passes so far.
    """

    param = "ve"

    def __init__(self, model, sigma_data: float, sigma_range, sample_shape, *,
                 batch_size: int = 500, source: str = "the network",
                 clip_denoised: bool = False):
        self.model = model.eval()
        self.clip_denoised = bool(clip_denoised)
        self.sigma_data = float(sigma_data)
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.sample_shape = tuple(int(v) for v in sample_shape)
        self.batch_size = int(batch_size)
        self.source = source
        self.calls = 0

    @classmethod
    def from_checkpoint(cls, path, *, ema: bool = True, **kwargs) -> EDMDenoiser:
        """Load an EDM checkpoint of :func:`specsched.unet.train_unet` (EMA weights).

        Raises
        ------
        InputError
            Not a specsched checkpoint, or one trained without EDM preconditioning (naming
            the file and the value found).
        """
        from specsched.unet.model import UNet  # imports torch

        ck = load_checkpoint(path)
        cfg = ck["config"]
        if cfg.get("preconditioning", "eps") != "edm":
            raise InputError(f"{path}: preconditioning = {cfg.get('preconditioning', 'eps')!r},"
                             " expected 'edm' (a noise-level-conditioned network); "
                             "UNetDenoiser runs the others")
        model = UNet(**{k: cfg[k] for k in ARCHITECTURE_FIELDS})
        model.load_state_dict(ck["ema" if ema else "model"])
        shape = (cfg["image_size"], cfg["image_size"], cfg["image_channels"])
        return cls(model, cfg["sigma_data"], ck["sigma_range"], shape, source=str(path),
                   **kwargs)

    def check_sigmas(self, sigmas, name: str = "sigmas") -> None:
        """Refuse, before any sampling, levels outside the trained range (a final 0 is
        allowed: the samplers never call the denoiser there).

        Raises
        ------
        InputError
            Naming ``name``, the range and ``source``.
        """
        s = np.asarray(sigmas, dtype=np.float64)
        s = s[s != 0.0]
        lo, hi = self.sigma_range
        if s.size and (s.min() < lo * (1 - 1e-9) or s.max() > hi * (1 + 1e-9)):
            raise InputError(f"{name}: noise levels from {s.min():.4g} to {s.max():.4g}, "
                             f"outside the range {self.source} was trained on "
                             f"[{lo:.4g}, {hi:.4g}]", param=name)

    def __call__(self, x, sigma):
        import torch

        x = np.asarray(x, dtype=np.float64)
        H, W, C = self.sample_shape
        if x.ndim == 2 and x.shape[1] == H * W * C:
            images = x.reshape(-1, H, W, C)
        elif x.ndim == 4 and tuple(x.shape[1:]) == self.sample_shape:
            images = x
        else:
            raise InputError(f"x: expected shape (n, {H * W * C}) or (n, {H}, {W}, {C}) for "
                             f"{self.source}, got {tuple(x.shape)}")
        c_skip, c_out, c_in, c_noise = edm_preconditioning(float(sigma), self.sigma_data)
        out = np.empty(images.shape, dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(
                    images[i:i + self.batch_size].transpose(0, 3, 1, 2) * c_in,
                    dtype=np.float32))
                fb = self.model(xb, torch.full((xb.shape[0],), float(c_noise)))
                out[i:i + xb.shape[0]] = fb.numpy().transpose(0, 2, 3, 1)
                self.calls += 1
        x0 = (c_skip * images + c_out * out).reshape(x.shape)
        return np.clip(x0, -1.0, 1.0) if self.clip_denoised else x0


def sample_edm(den: EDMDenoiser, ab, sampler: str, n: int, *, eta=None,
               rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """``n`` samples of an EDM network on the schedule ``ab``: (n, H, W, C), float64.

    Parameters
    ----------
    den : EDMDenoiser
    ab : ndarray of shape (S,)
        alphas_cumprod, strictly decreasing, step 1 (least noisy) first.
    sampler : str
        A k-diffusion sampler (:data:`specsched.theory.ksolvers.KSAMPLERS`), run by
        :func:`~specsched.sampling.ksamplers.sample_k_batches` on ``kdiffusion_sigmas(ab)``
        (VE, start ``N(0, sigma_S^2)``), or a discrete one of :func:`specsched.sampling.sample`
        (VP, start ``N(0, 1)``), which calls the VE denoiser at ``sigma_s = sqrt((1 - ab_s) /
        ab_s)`` (docs/theory.md section 3).
    eta : float or None
        The sampler's eta (k-diffusion's option where it has one; DDIM-eta); None: its own.
    rng : numpy.random.Generator
        Source of every draw, batch after batch.
    batch_size : int
        Samples per batch; with ``batch_size >= n`` one batch of all ``n``.

    Raises
    ------
    InputError
        As the samplers (unknown sampler, bad eta or sizes). The levels are not checked here:
        :meth:`EDMDenoiser.check_sigmas` is the caller's, before any sampling.
    """
    from specsched.sampling import sample
    from specsched.sampling.ksamplers import sample_k_batches
    from specsched.theory.kclosed import kdiffusion_sigmas
    from specsched.theory.ksolvers import KSAMPLERS

    if sampler not in KSAMPLERS:
        return sample(den, ab, n, den.sample_shape, sampler=sampler, eta=eta, rng=rng,
                      batch_size=batch_size, progress=False)
    x = np.empty((n, *den.sample_shape))
    for start, batch in sample_k_batches(den, kdiffusion_sigmas(ab), sampler, n,
                                         math.prod(den.sample_shape), rng=rng,
                                         options=None if eta is None else {"eta": eta},
                                         batch_size=batch_size, progress=False):
        x[start:start + batch.shape[0]] = batch.reshape(-1, *den.sample_shape)
    return x


def sample_eps(den: UNetDenoiser, ab, n: int, *, sampler: str = "ddim", eta=None,
               rng: np.random.Generator, batch_size: int = 500) -> np.ndarray:
    """``n`` samples of an eps network under its own forward noise: (n, H, W, C), float64.

    White networks (``den.colour`` None) go through :func:`specsched.sampling.sample`
    unchanged. Coloured ones run the same VP update (:func:`specsched.sampling.samplers.step`,
    docs/theory.md sections 3 and 9) from ``x_S = C^(1/2) z`` with every injected draw
    ``C^(1/2) z`` (``z ~ N(0, I)`` from ``rng`` in the order :func:`sample` draws them: the
    start, then one per step of a stochastic sampler), ``C^(1/2)`` by FFT
    (:meth:`specsched.unet.colour.FourierColour.colour`).

    Parameters
    ----------
    den : UNetDenoiser
    ab : array-like of shape (S,)
        alphas_cumprod, step 1 (least noisy) first, ``ab_0 = 1`` implied.
    n : int
        Number of samples, >= 1.
    sampler : {"ddim", "ddpm", "ddpm-large"}
        A VP sampler (coloured networks; white ones take every sampler of :func:`sample`).
    eta : float or None
        DDIM-eta (None: the sampler's own, :func:`specsched.theory.resolve_eta`).
    rng : numpy.random.Generator
    batch_size : int
        Samples per batch (the samples depend on it as on the seed).

    Raises
    ------
    InputError
        Bad schedule, sampler, eta or sizes; a VE sampler with a coloured network.
    """
    if den.colour is None:
        return sample(den, ab, n, den.sample_shape, sampler=sampler, eta=eta, rng=rng,
                      batch_size=batch_size, progress=False)
    eta = resolve_eta(sampler, eta)
    if get_sampler(sampler).param != "vp":
        raise InputError(f"sampler: a network trained with {den.colour.label} noise runs the "
                         f"VP samplers ddim, ddpm and ddpm-large, not {sampler!r}",
                         param="sampler")
    check_counts(n=n, batch_size=batch_size)
    ab = as_alphas_cumprod(ab)
    stochastic = sampler in ("ddpm", "ddpm-large") or (eta or 0.0) > 0.0
    levels = [(float(ab[s]), 1.0 if s == 0 else float(ab[s - 1])) for s in range(ab.size)]
    out = np.empty((n, *den.sample_shape))
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = den.colour.colour(rng.standard_normal((b, *den.sample_shape)))  # x_S ~ N(0, C)
        for a, ap in reversed(levels):  # reverse time: step S first
            z = den.colour.colour(rng.standard_normal((b, *den.sample_shape))) if (
                stochastic) else None
            x = step(sampler, x, den(x, a), a, ap, eta, z)
        out[start:start + b] = x
    return out
