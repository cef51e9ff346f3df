"""``specsched train-unet`` and ``specsched sample-unet`` (optional extra: torch).

This module imports no torch until a command runs, so ``specsched --help`` and
``specsched train-unet --help`` work without torch; without it the commands exit 2 saying
``pip install torch==2.13.0`` then ``pip install -e ".[unet]"``.

Two kinds of checkpoint (``TrainConfig.preconditioning``, :mod:`specsched.unet.train`):
``eps`` (noise prediction on a T-step training grid, :class:`~specsched.unet.UNetDenoiser`,
the discrete samplers of :mod:`specsched.sampling`) and ``edm`` (Karras et al. 2022's
preconditioning, a VE denoiser at any level of its trained sigma range,
:class:`~specsched.unet.EDMDenoiser`, also k-diffusion's samplers of
:mod:`specsched.sampling.ksamplers`). ``sample-unet`` reads which one a checkpoint is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from specsched.cli.common import (
    add_eta_arg,
    finite_float,
    positive_float,
    positive_int,
    sampler_help,
)
from specsched.errors import InputError
from specsched.fileio import atomic_write, check_writable
from specsched.plots import save_grid
from specsched.sampling import sample
from specsched.sampling.samplers import SAMPLER_NAMES
from specsched.schedules import (
    BASELINES,
    SIGMA_BASELINES,
    Schedule,
    baseline_alphas_cumprod,
)
from specsched.theory.kclosed import kdiffusion_sigmas
from specsched.theory.samplers import resolve_eta, sampler_names
from specsched.unet import require_torch
from specsched.unet.denoiser import EDMDenoiser, UNetDenoiser, sample_edm, sample_eps
from specsched.unet.train import TrainConfig, load_checkpoint, train_unet

TRAIN_DESCRIPTION = """\
Train the reference DDPM U-Net (epsilon prediction, AdamW, EMA) on Fashion-MNIST
downsampled to 16 x 16 (padded to 32 x 32, 2 x 2 average-pooled; pixels in [-1, 1]) or on
an array of images, with a T = 1000 linear training grid by default. Default network:
base 32 channels, multipliers 1 2 2, one residual block per level, attention at 4 x 4,
1.11 M parameters; batch 128, 4000 steps (0.58 s/step measured with one thread on this
machine's 2 shared CPU cores, so about 39 minutes; use --minutes to cap the wall time).
The checkpoint is saved atomically every --checkpoint-every steps; --resume continues it.

--preconditioning edm trains the same network instead as a noise-level-conditioned VE
denoiser with Karras et al.'s (2022) preconditioning: D(x, sigma) = c_skip x + c_out
F(c_in x, ln(sigma) / 4), loss weight 1 / c_out^2, log-normal training levels
ln sigma ~ N(--p-mean, --p-std^2). Its trained sigma range, the central 99.8 % of those
levels (exp(p_mean -+ 3.09 p_std): {sigma_min:.3g} to {sigma_max:.3g} with the defaults), is
stored in the checkpoint; sample-unet runs it at each level's own sigma, with k-diffusion's
samplers too, and refuses schedules reaching outside that range. --training-schedule and
--num-train-timesteps are unused with edm.
Needs torch: `pip install torch==2.13.0` then `pip install -e ".[unet]"`."""

SAMPLE_DESCRIPTION = """\
Sample a train-unet checkpoint (EMA weights) with the torch-free samplers on a baseline or a
schedule file; writes (n, H, W, C) float64 samples (pixel scale [-1, 1]) to a .npy file.
An eps checkpoint runs the discrete samplers ({discrete}), the network conditioned on the
training step nearest in logSNR to each level. An edm checkpoint (train-unet
--preconditioning edm) is evaluated at each level's own sigma and also runs k-diffusion's
samplers (euler, heun, dpmpp-2m, euler-ancestral, ...); the karras, exponential and
kl_optimal baselines then run within its trained sigma range, and a schedule reaching
outside that range is refused before any sampling. An eps checkpoint trained with coloured
noise (train-unet --noise-spectrum) samples under its own noise (start N(0, C), every draw
coloured by FFT; VP samplers ddim, ddpm, ddpm-large) and refuses a schedule file made for
another forward noise (the file's noise_spectrum)."""

#: The grid ``train-unet --sample-grid`` writes: samples, steps, and the edm checkpoint's
#: sampler (k-diffusion's euler on a Karras rho = 7 schedule within the trained range).
GRID_SAMPLES = 64
GRID_STEPS = 50
GRID_EDM_SAMPLER = "euler"


def add_parser(sub):
    """Register ``train-unet`` and ``sample-unet`` on an argparse subparsers object."""
    d = TrainConfig()
    lo, hi = d.trained_sigma_range()
    p = sub.add_parser("train-unet", help="train the reference U-Net (needs torch)",
                       description=TRAIN_DESCRIPTION.format(sigma_min=lo, sigma_max=hi),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="FILE.pt",
                   help="checkpoint file to write (and to continue with --resume)")
    p.add_argument("--data", default=d.data, metavar="SRC",
                   help="fashion-mnist (default) or a .npy/.npz of images (N, H, W[, C]) in "
                   "[-1, 1]")
    p.add_argument("--image-size", type=positive_int, default=d.image_size,
                   help=f"image side in pixels (fashion-mnist: 32, 16, 8, 4; default "
                   f"{d.image_size})")
    p.add_argument("--channels", type=positive_int, default=d.image_channels,
                   help="image channels (default 1)")
    p.add_argument("--base-channels", type=positive_int, default=d.base_channels,
                   help=f"U-Net width of the first level (default {d.base_channels})")
    p.add_argument("--channel-mults", type=positive_int, nargs="+", default=d.channel_mults,
                   help="width multiplier per resolution level (default 1 2 2)")
    p.add_argument("--num-res-blocks", type=positive_int, default=d.num_res_blocks,
                   help=f"residual blocks per level (default {d.num_res_blocks})")
    p.add_argument("--attention-resolutions", type=positive_int, nargs="*",
                   default=d.attention_resolutions,
                   help="resolutions with self-attention besides the middle (default 4)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout (default 0)")
    p.add_argument("--preconditioning", choices=["eps", "edm"], default=d.preconditioning,
                   help="eps (default): noise prediction on the training grid (Ho et al. "
                   "2020); edm: Karras et al.'s (2022) preconditioning on log-normal noise "
                   "levels, a denoiser of any sigma in its trained range (the central 99.8 %% "
                   "of the training levels, stored in the checkpoint)")
    p.add_argument("--sigma-data", type=positive_float, default=d.sigma_data,
                   help=f"edm: the data's standard deviation in c_skip, c_out, c_in "
                   f"(default {d.sigma_data:g})")
    p.add_argument("--p-mean", type=finite_float, default=d.p_mean,
                   help=f"edm: mean of ln sigma of the training levels (default {d.p_mean:g})")
    p.add_argument("--p-std", type=positive_float, default=d.p_std,
                   help=f"edm: standard deviation of ln sigma of the training levels "
                   f"(default {d.p_std:g})")
    p.add_argument("--noise-spectrum", default=d.noise_spectrum, metavar="NAME",
                   help="eps: forward noise: white (default), equal-snr (c_f proportional to "
                   "the training images' power P(f), Falck et al. 2025) or power:GAMMA (c_f "
                   "proportional to P(f)**GAMMA, GAMMA in [0, 2]); mean(c) = 1, drawn by FFT; "
                   "the network predicts the coloured noise (not with edm)")
    p.add_argument("--training-schedule", default=d.training_schedule, metavar="NAME|FILE",
                   help="eps: training grid: linear (default), scaled_linear, cosine, sigmoid, "
                   "a schedule .json or an alphas_cumprod .npy (unused with edm)")
    p.add_argument("--num-train-timesteps", type=positive_int, default=d.num_train_timesteps,
                   help="eps: T of a training family (default 1000; unused with edm)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"images per step (default {d.batch_size})")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help=f"total optimiser steps (default {d.steps})")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="time budget: stop and save before exceeding it")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"AdamW peak learning rate (default {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW weight decay (default 0)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help=f"linear warm-up steps (default {d.warmup_steps})")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help=f"EMA decay (default {d.ema_decay})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    p.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every,
                   help=f"save every so many steps (default {d.checkpoint_every})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: on this machine's 2 cores shared with "
                   "other jobs, 2 threads measured 11 times slower per step than 1)")
    p.add_argument("--sample-grid", metavar="FILE.png", default=None,
                   help=f"after training, write an 8 x 8 grid of EMA samples (eps: DDIM, "
                   f"{GRID_STEPS} linear steps; edm: k-diffusion's {GRID_EDM_SAMPLER}, "
                   f"{GRID_STEPS} Karras rho = 7 steps within the trained sigma range)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue an existing checkpoint up to --steps")
    group.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.set_defaults(run=run_train)

    names = sampler_names()
    q = sub.add_parser("sample-unet", help="sample a trained U-Net with any schedule",
                       description=SAMPLE_DESCRIPTION.format(discrete=", ".join(SAMPLER_NAMES)))
    q.add_argument("--checkpoint", required=True, metavar="FILE.pt")
    q.add_argument("--schedule", required=True, metavar="NAME|FILE.json",
                   help="a baseline (linear, cosine, karras, logsnr, ...) or a schedule file")
    q.add_argument("--steps", type=positive_int, default=None,
                   help="steps of a baseline schedule")
    q.add_argument("--spacing", default="linspace", help="baseline spacing (default linspace)")
    q.add_argument("--sampler", choices=names, default="ddim", metavar="SAMPLER",
                   help=sampler_help(names, "ddim") + "; default ddim. k-diffusion's samplers "
                   "need an edm checkpoint")
    add_eta_arg(q)
    q.add_argument("--n", type=positive_int, required=True, help="number of samples")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=positive_int, default=500)
    q.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1)")
    q.add_argument("--clip", action="store_true",
                   help="clip the network's x0_hat to [-1, 1] (both kinds of checkpoint)")
    q.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    q.add_argument("--out", required=True, metavar="FILE.npy")
    q.add_argument("--grid", metavar="FILE.png", default=None,
                   help="also write a grid of the first 64 samples")
    q.add_argument("--force", action="store_true", help="overwrite existing outputs")
    q.set_defaults(run=run_sample)
    return p


def resolve_schedule(schedule: str, steps: int | None, spacing: str = "linspace",
                     sigma_range=None) -> np.ndarray:
    """alphas_cumprod of a baseline name (with ``steps``) or a schedule JSON file.

    Parameters
    ----------
    schedule : str
        A name of :data:`specsched.schedules.BASELINES` or the path of a schedule file.
    steps : int or None
        S of a baseline (required then); with a file, None or the file's own S.
    spacing : str
        Spacing of a training-family baseline on its T = 1000 grid.
    sigma_range : (float, float) or None
        ``(sigma_min, sigma_max)`` of the sigma baselines (karras, exponential, kl_optimal);
        None: EDM's (0.002, 80). The other baselines and files keep their own levels.

    Returns
    -------
    ndarray of shape (S,), float64
        Strictly decreasing in (0, 1), step 1 (least noisy) first.

    Raises
    ------
    InputError
        A missing ``--steps``, a name that is neither a baseline nor a file, a file that
        is not a schedule, or ``--steps`` that disagrees with the file.
    """
    if schedule in BASELINES:
        if steps is None:
            raise InputError(f"--steps: required with the baseline schedule {schedule!r}")
        return baseline_alphas_cumprod(schedule, steps, spacing=spacing,
                                       sigma_range=sigma_range if schedule in SIGMA_BASELINES
                                       else None)
    path = Path(schedule)
    if not path.is_file():
        raise InputError(f"--schedule: {schedule!r} is neither a baseline "
                         f"({', '.join(BASELINES)}) nor a schedule JSON file")
    ab = Schedule.load(path).alphas_cumprod
    if steps is not None and steps != ab.size:
        raise InputError(f"--steps: {steps} disagrees with {path}, which has {ab.size} steps")
    return ab


def _sample_to_grid(checkpoint, edm: bool, path, force, seed=0):
    rng = np.random.default_rng(seed)
    if edm:
        den = EDMDenoiser.from_checkpoint(checkpoint)
        ab = baseline_alphas_cumprod("karras", GRID_STEPS, sigma_range=den.sigma_range)
        x = sample_edm(den, ab, GRID_EDM_SAMPLER, GRID_SAMPLES, rng=rng,
                       batch_size=GRID_SAMPLES)
    else:
        den = UNetDenoiser.from_checkpoint(checkpoint)
        x = sample_eps(den, baseline_alphas_cumprod("linear", GRID_STEPS), GRID_SAMPLES,
                       sampler="ddim", rng=rng, batch_size=GRID_SAMPLES)
    save_grid(x, path, force=force)


def run_train(args) -> int:
    """Train, print one JSON line (steps, loss, s/step, parameters, checkpoint; and the
    preconditioning and trained sigma range of an edm run); exit code."""
    require_torch()
    if args.sample_grid:
        check_writable(args.sample_grid, args.force or args.resume)
    config = TrainConfig(  # its InputError names the field (e.g. "image_size: ...")
        data=args.data, image_size=args.image_size, image_channels=args.channels,
        base_channels=args.base_channels, channel_mults=tuple(args.channel_mults),
        num_res_blocks=args.num_res_blocks,
        attention_resolutions=tuple(args.attention_resolutions), dropout=args.dropout,
        training_schedule=args.training_schedule,
        num_train_timesteps=args.num_train_timesteps, batch_size=args.batch_size,
        steps=args.steps, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, seed=args.seed,
        checkpoint_every=args.checkpoint_every, preconditioning=args.preconditioning,
        sigma_data=args.sigma_data, p_mean=args.p_mean, p_std=args.p_std,
        noise_spectrum=args.noise_spectrum)
    result = train_unet(config, args.checkpoint, resume=args.resume, force=args.force,
                        minutes=args.minutes, torch_threads=args.threads)
    edm = config.preconditioning == "edm"
    if args.sample_grid:
        _sample_to_grid(args.checkpoint, edm, args.sample_grid, force=args.force or args.resume)
    record = {k: getattr(result, k) for k in ("step", "steps_this_run", "stopped", "loss",
                                              "seconds", "seconds_per_step", "n_parameters",
                                              "checkpoint")}
    if edm:
        record.update(preconditioning="edm", sigma_range=list(config.trained_sigma_range()))
    print(json.dumps(record))
    return 0


def _eps_sampler(sampler: str, checkpoint) -> str:
    """``sampler`` if an eps checkpoint can run it; InputError naming --sampler otherwise."""
    if sampler not in SAMPLER_NAMES:
        raise InputError(f"--sampler: {sampler!r} is one of k-diffusion's samplers, which need "
                         f"a noise-level-conditioned network, and {checkpoint} is an eps "
                         "checkpoint (noise prediction on a training grid); it takes "
                         f"{', '.join(SAMPLER_NAMES)} (train one with `specsched train-unet "
                         "--preconditioning edm` for the others)")
    return sampler


def _check_edm_levels(den: EDMDenoiser, ab, schedule: str) -> None:
    """Refuse, before any sampling, a schedule reaching outside the trained sigma range."""
    name = f"--schedule {schedule}" if schedule in BASELINES else schedule
    try:
        den.check_sigmas(kdiffusion_sigmas(ab), name)
    except InputError as exc:
        raise InputError(f"{exc}; the {', '.join(SIGMA_BASELINES)} baselines run within it",
                         param=name) from None


def _check_schedule_noise(den: UNetDenoiser, schedule: Schedule, args) -> None:
    """Refuse a schedule file made for another forward noise than the checkpoint's, naming
    the commands that make a matching pair (sample-unet has no ``--noise-spectrum``: the
    checkpoint fixes the noise; :meth:`UNetDenoiser.check_schedule` is the same test for
    library callers)."""
    ours, theirs = den.noise_label, schedule.noise_spectrum
    if theirs != ours:
        raise InputError(
            f"{args.schedule}: noise_spectrum: the schedule was made for the forward noise "
            f"{theirs!r}, not {ours!r}, the noise {args.checkpoint} was trained with; use a "
            f"schedule made for it (`specsched optimize --noise-spectrum {ours}`) or a "
            f"checkpoint trained with {theirs!r} (`specsched train-unet --noise-spectrum "
            f"{theirs}`)")


def run_sample(args) -> int:
    """Sample a checkpoint (eps or edm, as it says) into ``args.out`` (atomically); exit
    code. Every refusal (outputs, checkpoint, schedule, sampler, eta, levels) comes before
    any sampling."""
    require_torch().set_num_threads(args.threads)
    check_writable(args.out, args.force)
    if args.grid:
        check_writable(args.grid, args.force)
    config = load_checkpoint(args.checkpoint)["config"]
    rng = np.random.default_rng(args.seed)
    if config.get("preconditioning", "eps") == "edm":
        den = EDMDenoiser.from_checkpoint(args.checkpoint, ema=not args.raw,
                                          batch_size=args.batch_size, clip_denoised=args.clip)
        ab = resolve_schedule(args.schedule, args.steps, args.spacing,
                              sigma_range=den.sigma_range)
        eta = resolve_eta(args.sampler, args.eta)
        _check_edm_levels(den, ab, args.schedule)
        x = sample_edm(den, ab, args.sampler, args.n, eta=eta, rng=rng,
                       batch_size=args.batch_size)
        kind = "edm, "
    else:
        sampler = _eps_sampler(args.sampler, args.checkpoint)
        ab = resolve_schedule(args.schedule, args.steps, args.spacing)
        den = UNetDenoiser.from_checkpoint(args.checkpoint, ema=not args.raw,
                                           batch_size=args.batch_size, clip_denoised=args.clip)
        if args.schedule not in BASELINES:  # a file made for another forward noise: refused
            _check_schedule_noise(den, Schedule.load(args.schedule), args)
        if den.colour is None:
            x = sample(den, ab, args.n, den.sample_shape, sampler=sampler, eta=args.eta,
                       rng=rng, batch_size=args.batch_size)
            kind = ""
        else:
            x = sample_eps(den, ab, args.n, sampler=sampler, eta=args.eta, rng=rng,
                           batch_size=args.batch_size)
            kind = f"{den.noise_label} noise, "
    with atomic_write(args.out, force=args.force, mode="wb") as fh:
        np.save(fh, x)
    if args.grid:
        save_grid(x, args.grid, force=args.force)
    print(f"wrote {args.n} samples of shape {den.sample_shape} ({kind}{args.sampler}, "
          f"S = {ab.size}, seed {args.seed}) to {args.out}")
    return 0
