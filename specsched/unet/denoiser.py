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
"""

from __future__ import annotations

import numpy as np

from specsched.errors import InputError
from specsched.sampling.denoisers import x0_from_eps
from specsched.schedules import logsnr_from_alphas_cumprod
from specsched.unet.train import ARCHITECTURE_FIELDS, load_checkpoint

__all__ = ["UNetDenoiser", "nearest_timesteps"]


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
                 clip_denoised: bool = False):
        self.model = model.eval()
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
        return cls(model, ck["training_alphas_cumprod"].numpy(), **kwargs)

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
