r"""Train the reference U-Net: epsilon prediction on a T-step training grid (Ho et al. 2020).

Notation: the training grid is ``ab[t]`` (alphas_cumprod), t = 0..T-1, t = 0 least noisy
(T = 1000 linear betas by default, :func:`specsched.schedules.training_alphas_cumprod`; any
training family or a schedule file is accepted). Each step draws a batch ``x_0``, steps
``t ~ U{0..T-1}`` and ``eps ~ N(0, I)``, forms ``x_t = sqrt(ab[t]) x_0 + sqrt(1 - ab[t]) eps``
and minimises ``|eps - eps_hat(x_t, t)|^2`` (Ho et al. 2020, Algorithm 1, the "simple"
loss) with AdamW, a linear learning-rate warm-up, gradient clipping at norm 1 and an
exponential moving average of the weights (EMA, used for sampling).

Default data: Fashion-MNIST (the 60,000 training images of Debian's
``dataset-fashion-mnist``) DOWNSAMPLED TO 16 x 16: each 28 x 28 image is padded with
background to 32 x 32 and average-pooled over 2 x 2 blocks (exact, no interpolation);
pixels ``x / 255 * 2 - 1`` in [-1, 1], layout (N, 16, 16, 1)
(:func:`specsched.data.fashion_mnist.fashion_mnist_images`).

Default configuration (:class:`TrainConfig`): base 32 channels, multipliers (1, 2, 2)
(resolutions 16, 8, 4), one residual block per level, attention at 4 x 4 and in the middle
block, 1,112,801 parameters; batch 128, AdamW lr 5e-4 (500 warm-up steps), EMA 0.999,
4000 steps. Measured on this machine (2 CPU cores shared with 3-4 other busy processes,
torch 2.13.0 CPU, ONE torch thread): 0.58 s/step over a 414-step, 4-minute run (0.475 s/step
for the bare step in a micro-benchmark), so 4000 steps take about 39 minutes
(:data:`MEASURED_SECONDS_PER_STEP`; 0.535 s/step over a resumed 2243-step run). After
2657 steps (24 minutes) a DDIM-50 grid of EMA samples shows recognisable garments; after
414 steps about half of them were. With two torch threads on the shared cores the same step
took 5.2 s: OpenMP threads spin against the other processes, hence ``--threads 1`` by
default in ``specsched train-unet``.

Checkpoints (``torch.save`` of a plain dict through :func:`specsched.fileio.atomic_torch_save`:
a temporary file in the same folder, renamed over the checkpoint once complete) hold the
network, its EMA, the optimiser, the step, all RNG
states, the configuration, the training grid and the loss history; resuming continues the
same random stream, so an interrupted run resumed to the same step count gives the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from specsched.data import load_samples
from specsched.data.fashion_mnist import fashion_mnist_images
from specsched.errors import InputError, OutputExistsError
from specsched.fileio import atomic_torch_save
from specsched.schedules import (
    TRAINING_FAMILIES,
    Schedule,
    training_alphas_cumprod,
    validate_alphas_cumprod,
)
from specsched.theory.noise import noise_spectrum
from specsched.unet import require_torch
from specsched.unet.colour import FourierColour, check_trainable_noise, fourier_colour
from specsched.unet.edm import edm_loss_weight, edm_preconditioning

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_colour",
    "MEASURED_SECONDS_PER_STEP",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "load_training_images",
    "resolve_training_schedule",
    "train_unet",
]

CHECKPOINT_FORMAT = "specsched.unet-checkpoint"
CHECKPOINT_VERSION = 1
#: Seconds per training step of the default configuration, measured on this machine
#: (2 shared CPU cores, one torch thread, torch 2.13.0 CPU, batch 128, 16 x 16), see the
#: module docstring.
MEASURED_SECONDS_PER_STEP = 0.58
#: Fields of :class:`TrainConfig` that define the network (must match to resume).
ARCHITECTURE_FIELDS = ("image_size", "image_channels", "base_channels", "channel_mults",
                       "num_res_blocks", "attention_resolutions", "dropout", "groups")
#: Fields that define the training problem (must match to resume).
PROBLEM_FIELDS = ("data", "training_schedule", "num_train_timesteps", "seed", "preconditioning",
                  "sigma_data", "p_mean", "p_std", "noise_spectrum")
PRECONDITIONINGS = ("eps", "edm")
#: Quantile of the log-normal training levels that bounds the trained sigma range of an EDM
#: network on each side (0.1%: ``exp(p_mean -+ 3.09 p_std)``).
TRAINED_RANGE_QUANTILE = 0.001


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train_unet` (one per line, with its meaning).

    Attributes
    ----------
    data : str
        ``"fashion-mnist"`` (default; downsampled to ``image_size``) or a ``.npy``/``.npz``
        of images ``(N, H, W)`` or ``(N, H, W, C)`` with pixels in [-1, 1].
    image_size : int
        Side of the (square) training images in pixels; fashion-mnist: 32, 16, 8 or 4.
    image_channels : int
        Channels of the images (1 for Fashion-MNIST); checked against the data.
    base_channels : int
        U-Net width of the first level (:class:`specsched.unet.model.UNet`).
    channel_mults : tuple of int
        Width multiplier per resolution level (each level halves the resolution).
    num_res_blocks : int
        Residual blocks per level (down; one more up).
    attention_resolutions : tuple of int
        Resolutions (pixels) with self-attention, besides the middle block.
    dropout : float
        Dropout in the residual blocks.
    groups : int
        GroupNorm groups.
    training_schedule : str
        Training grid: a family of :data:`specsched.schedules.TRAINING_FAMILIES` (T =
        ``num_train_timesteps`` steps), a schedule ``.json`` file or a 1-D ``.npy`` of
        alphas_cumprod (its own length is T, step 1 first).
    num_train_timesteps : int
        T for a family.
    batch_size : int
        Images per step.
    steps : int
        Total optimiser steps (a resumed run continues up to this count).
    lr : float
        AdamW peak learning rate.
    weight_decay : float
        AdamW decoupled weight decay.
    warmup_steps : int
        Linear learning-rate warm-up from 0.
    grad_clip : float
        Gradient-norm clipping threshold (0: none).
    ema_decay : float
        EMA decay; the effective decay is ``min(ema_decay, (1 + k) / (10 + k))`` at step k.
    seed : int
        Seed of the initialisation, the batches, the steps and the noise.
    checkpoint_every : int
        Save a checkpoint every so many steps (and at the end).
    preconditioning : {"eps", "edm"}
        ``"eps"``: noise prediction on the training grid (Ho et al. 2020, the default);
        ``"edm"``: a noise-level-conditioned VE denoiser with Karras et al.'s (2022)
        preconditioning (:mod:`specsched.unet.edm`; the network sees ``c_in x`` and
        ``c_noise = ln(sigma) / 4``, the loss is ``lambda(sigma) |D(x, sigma) - x_0|^2``,
        ``ln sigma ~ N(p_mean, p_std^2)``); ``training_schedule`` is then unused.
    sigma_data, p_mean, p_std : float
        EDM's data standard deviation and log-normal training levels (0.5, -1.2, 1.2).
    noise_spectrum : str
        Forward noise of an eps network: ``"white"`` (default, ``eps ~ N(0, I)``),
        ``"equal-snr"`` or ``"power:GAMMA"``: ``eps ~ N(0, C)`` drawn by FFT with ``c_f``
        from the training images' power per frequency (:mod:`specsched.unet.colour`,
        docs/theory.md section 9); the network predicts that coloured ``eps``.
    """

    data: str = "fashion-mnist"
    image_size: int = 16
    image_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.0
    groups: int = 8
    training_schedule: str = "linear"
    num_train_timesteps: int = 1000
    batch_size: int = 128
    steps: int = 4000
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    preconditioning: str = "eps"
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    noise_spectrum: str = "white"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        set_(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        for name in ("image_size", "image_channels", "base_channels", "num_res_blocks",
                     "num_train_timesteps", "batch_size", "steps", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected an integer >= 1, got {value!r}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise InputError(f"channel_mults: expected integers >= 1, got {self.channel_mults}")
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise InputError(f"image_size: {self.image_size} is not divisible by "
                             f"2^{len(self.channel_mults) - 1} (one halving per extra level "
                             f"of channel_mults {self.channel_mults})")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("grad_clip", 0.0, math.inf), ("dropout", 0.0, 1.0),
                                ("ema_decay", 0.0, 1.0)):
            value = float(getattr(self, name))
            if not low <= value < high or (name == "lr" and value == 0.0):
                raise InputError(f"{name}: expected a number in [{low}, {high}), got {value}")
        if self.warmup_steps < 0 or self.groups < 1:
            raise InputError("warmup_steps: expected >= 0; groups: expected >= 1")
        if self.preconditioning not in PRECONDITIONINGS:
            raise InputError(f"preconditioning: expected one of {PRECONDITIONINGS}, got "
                             f"{self.preconditioning!r}")
        if not (float(self.sigma_data) > 0 and float(self.p_std) > 0
                and math.isfinite(float(self.p_mean))):
            raise InputError(f"sigma_data, p_std: expected numbers > 0 and a finite p_mean, got "
                             f"{self.sigma_data!r}, {self.p_std!r}, {self.p_mean!r}")

        white = noise_spectrum(check_trainable_noise(self.noise_spectrum), np.ones(1)).is_white
        if not white and self.preconditioning != "eps":
            raise InputError(f"noise_spectrum: {self.noise_spectrum!r} forward noise is built for "
                             "eps preconditioning only; edm trains with white noise",
                             param="noise_spectrum")

    def trained_sigma_range(self) -> tuple[float, float]:
        """An EDM network's trained noise levels: the central ``1 - 2 q`` of its log-normal
        training distribution, ``q`` = :data:`TRAINED_RANGE_QUANTILE`; schedules for it
        stay inside (:class:`specsched.unet.denoiser.EDMDenoiser` refuses others)."""
        z = statistics.NormalDist().inv_cdf(1.0 - TRAINED_RANGE_QUANTILE)
        return (math.exp(self.p_mean - z * self.p_std), math.exp(self.p_mean + z * self.p_std))

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def model_kwargs(self) -> dict:
        """Arguments of :class:`specsched.unet.model.UNet`."""
        return {k: getattr(self, k) for k in ARCHITECTURE_FIELDS}


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_unet`.

    Attributes
    ----------
    step : int
        Optimiser steps completed in total (including resumed ones).
    steps_this_run : int
    stopped : str
        ``"steps"`` (reached ``config.steps``) or ``"time"`` (the ``minutes`` budget).
    loss : float
        Mean training loss over the last logged interval (``nan`` when none).
    seconds : float
        Wall time of this run; ``seconds_per_step`` = seconds / steps_this_run.
    seconds_per_step : float
    n_parameters : int
    checkpoint : str
    loss_history : list of (step, mean loss)
    """

    step: int
    steps_this_run: int
    stopped: str
    loss: float
    seconds: float
    seconds_per_step: float
    n_parameters: int
    checkpoint: str
    loss_history: list = field(default_factory=list)


# ---------------------------------------------------------------------------- data (numpy)

def load_training_images(data: str, image_size: int) -> np.ndarray:
    """The training images of a :class:`TrainConfig`: (N, H, W, C) float32 in [-1, 1].

    Raises
    ------
    InputError
        Missing data, arrays that are not images, or a size that differs from ``image_size``.
    """
    if data == "fashion-mnist":
        return fashion_mnist_images(image_size, "train")
    x, _ = load_samples(data)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise InputError(f"{data}: expected square images (N, H, W) or (N, H, W, C), got "
                         f"shape {x.shape}")
    if x.shape[1] != image_size:
        raise InputError(f"{data}: images are {x.shape[1]} x {x.shape[2]}, --image-size is "
                         f"{image_size}")
    if np.abs(x).max() > 1.0 + 1e-6:
        raise InputError(f"{data}: pixels must lie in [-1, 1], found up to {np.abs(x).max():g}")
    return x.astype(np.float32)


def resolve_training_schedule(name: str, num_train_timesteps: int = 1000) -> np.ndarray:
    """The training grid ``ab[t]`` (T,), float64, t = 0 least noisy: a family or a file.

    Raises
    ------
    InputError
        Neither a known family nor a readable schedule ``.json`` / ``.npy``.
    """
    if name in TRAINING_FAMILIES:
        return training_alphas_cumprod(name, num_train_timesteps)
    path = Path(name)
    if path.suffix.lower() == ".json" and path.is_file():
        return np.array(Schedule.load(path).alphas_cumprod, dtype=np.float64)
    if path.suffix.lower() == ".npy" and path.is_file():
        return validate_alphas_cumprod(np.load(path), f"{path}")
    raise InputError(f"training schedule: {name!r} is neither a family "
                     f"({', '.join(TRAINING_FAMILIES)}) nor a schedule .json / alphas_cumprod "
                     ".npy file")


# ---------------------------------------------------------------------------- checkpoints

def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`train_unet` (a plain dict; tensors on the CPU).

    Raises
    ------
    InputError
        Missing file, not a specsched U-Net checkpoint, or an unsupported version.
    """
    torch = require_torch()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a specsched U-Net checkpoint (format "
                         f"{ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r})")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {ck.get('version')!r}, expected "
                         f"{CHECKPOINT_VERSION}")
    return ck


def checkpoint_colour(ck: dict) -> FourierColour | None:
    """The forward noise a checkpoint was trained with: a :class:`FourierColour`, or None
    for white (also for checkpoints written before coloured noise existed)."""
    rec = ck.get("noise_spectrum")
    if rec is None:
        return None
    return FourierColour(str(rec["label"]), rec["variances"].numpy().astype(np.float64))


def _check_resumable(ck: dict, config: TrainConfig, path: Path) -> None:
    defaults = TrainConfig().to_dict()  # fields a checkpoint of an older version lacks
    old = {**defaults, **ck["config"]}
    new = config.to_dict()
    for name in ARCHITECTURE_FIELDS + PROBLEM_FIELDS:
        if old.get(name) != new[name]:
            raise InputError(f"{path}: cannot resume: the checkpoint has {name} = "
                             f"{old.get(name)!r}, the configuration {new[name]!r} (start a "
                             "new checkpoint, or --force to overwrite this one)")


# ---------------------------------------------------------------------------- training

def _edm_loss(torch, model, x0, config: TrainConfig, gen):
    """EDM's training loss of a batch (Karras et al. 2022, eq. 2 with Table 1's
    preconditioning and weight; :mod:`specsched.unet.edm`)."""
    n = x0.shape[0]
    sigma = torch.exp(config.p_mean + config.p_std * torch.randn(n, generator=gen))
    s4 = sigma[:, None, None, None]
    x = x0 + s4 * torch.randn(x0.shape, generator=gen)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(s4, config.sigma_data)
    denoised = c_skip * x + c_out * model(c_in * x, c_noise.reshape(n))
    weight = edm_loss_weight(s4, config.sigma_data)
    return (weight * (denoised - x0).square()).mean()


def train_unet(config: TrainConfig, checkpoint, *, images: np.ndarray | None = None,
               resume: bool = False, force: bool = False, minutes: float | None = None,
               progress: bool | None = None, torch_threads: int | None = None) -> TrainResult:
    """Train (or resume training) a U-Net and write its checkpoint.

    Parameters
    ----------
    config : TrainConfig
    checkpoint : path-like
        Checkpoint file (``.pt``), saved every ``config.checkpoint_every`` steps, at the end,
        on a time-budget stop and on KeyboardInterrupt (then re-raised).
    images : ndarray of shape (N, H, W, C) or None
        Training images in [-1, 1]; None loads ``config.data`` (:func:`load_training_images`).
    resume : bool
        Continue from an existing ``checkpoint`` up to ``config.steps`` (its architecture,
        data, training grid and seed must match ``config``).
    force : bool
        Overwrite an existing ``checkpoint`` with a fresh run.
    minutes : float or None
        Time budget: stop (and save) before a step would end after ``minutes``.
    progress : bool or None
        tqdm progress bar with the running loss; None: only on a terminal.
    torch_threads : int or None
        ``torch.set_num_threads`` for this run (None: torch's default).

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Missing torch (with the install command), bad data, a checkpoint that does not
        match ``config`` on resume.
    OutputExistsError
        ``checkpoint`` exists and neither ``resume`` nor ``force`` is set.
    """
    torch = require_torch()
    from specsched.unet.model import UNet, count_parameters  # imports torch

    path = Path(checkpoint)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a checkpoint file path")
    if minutes is not None and not minutes > 0:
        raise InputError(f"minutes: expected a number > 0, got {minutes!r}")
    ck = None
    if path.exists():
        if resume:
            ck = load_checkpoint(path)
            _check_resumable(ck, config, path)
        elif not force:
            raise OutputExistsError(f"{path}: checkpoint exists already; pass --resume to "
                                    "continue training it or --force to start over")
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))

    x_all = load_training_images(config.data, config.image_size) if images is None else images
    x_all = np.asarray(x_all, dtype=np.float32)
    if x_all.ndim != 4 or x_all.shape[1:] != (config.image_size, config.image_size,
                                              config.image_channels):
        raise InputError(f"images: expected shape (N, {config.image_size}, "
                         f"{config.image_size}, {config.image_channels}), got {x_all.shape}")
    data = torch.from_numpy(np.ascontiguousarray(x_all.transpose(0, 3, 1, 2)))
    edm = config.preconditioning == "edm"
    ab_train = np.zeros(0) if edm else resolve_training_schedule(config.training_schedule,
                                                                 config.num_train_timesteps)
    T = ab_train.size
    sqrt_ab = torch.from_numpy(np.sqrt(ab_train)).float()
    sqrt_1m_ab = torch.from_numpy(np.sqrt(1.0 - ab_train)).float()
    colour = fourier_colour(config.noise_spectrum, x_all)  # None: white

    torch.manual_seed(config.seed)
    model = UNet(**config.model_kwargs())
    ema = UNet(**config.model_kwargs())
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed + 1)
    step, history, seconds_before = 0, [], 0.0
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        for group in opt.param_groups:  # a resumed run may change lr
            group["initial_lr"] = config.lr
        gen.set_state(ck["rng"]["generator"])
        torch.set_rng_state(ck["rng"]["torch"])
        step, history = int(ck["step"]), [tuple(h) for h in ck["loss_history"]]
        seconds_before = float(ck.get("seconds", 0.0))

    def save(seconds_total):
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": opt.state_dict(), "step": step,
            "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
            "training_alphas_cumprod": torch.from_numpy(ab_train),
            "loss_history": [list(h) for h in history], "seconds": seconds_total,
            "n_train_images": int(data.shape[0]), "n_parameters": count_parameters(model),
            "sigma_range": list(config.trained_sigma_range()) if edm else None,
            "noise_spectrum": None if colour is None else {
                "label": colour.label, "variances": torch.from_numpy(colour.variances)},
        }, path, force=True)

    n_params = count_parameters(model)
    start_step, t0 = step, time.perf_counter()
    stopped, interval = "steps", []
    log_every = max(1, min(100, config.steps // 20))
    ema_params = list(ema.parameters())
    model_params = list(model.parameters())
    model.train()
    try:
        with tqdm(total=config.steps, initial=step, desc="train-unet", unit="step",
                  disable=(not progress) if progress is not None else None) as bar:
            while step < config.steps:
                elapsed = time.perf_counter() - t0
                if minutes is not None and step > start_step and (
                        elapsed + elapsed / (step - start_step) > 60.0 * minutes):
                    stopped = "time"
                    break
                idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=gen)
                x0 = data[idx]
                if edm:
                    loss = _edm_loss(torch, model, x0, config, gen)
                else:
                    t = torch.randint(0, T, (config.batch_size,), generator=gen)
                    eps = torch.randn(x0.shape, generator=gen)
                    if colour is not None:  # eps ~ N(0, C), docs/theory.md section 9
                        eps = colour.colour_torch(eps)
                    xt = sqrt_ab[t, None, None, None] * x0 + sqrt_1m_ab[t, None, None, None] * eps
                    loss = (model(xt, t.float()) - eps).square().mean()  # Ho et al., Alg. 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model_params, config.grad_clip)
                warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
                for group in opt.param_groups:
                    group["lr"] = config.lr * warm
                opt.step()
                decay = min(config.ema_decay, (1.0 + step) / (10.0 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
                step += 1
                interval.append(float(loss.detach()))
                if step % log_every == 0 or step == config.steps:
                    history.append((step, float(np.mean(interval))))
                    bar.set_postfix(loss=f"{history[-1][1]:.4f}")
                    interval = []
                bar.update(1)
                if step % config.checkpoint_every == 0 and step < config.steps:
                    save(seconds_before + time.perf_counter() - t0)
    except KeyboardInterrupt:
        save(seconds_before + time.perf_counter() - t0)
        raise
    seconds = time.perf_counter() - t0
    save(seconds_before + seconds)
    done = step - start_step
    return TrainResult(step=step, steps_this_run=done, stopped=stopped,
                       loss=history[-1][1] if history else float("nan"), seconds=seconds,
                       seconds_per_step=seconds / done if done else float("nan"),
                       n_parameters=n_params, checkpoint=str(path), loss_history=history)
