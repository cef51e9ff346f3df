"""``specsched train-unet`` and ``specsched sample-unet`` (optional extra: torch).

This module imports neither torch nor the training code until a command runs, so
``specsched --help`` and ``specsched train-unet --help`` work without torch; without it
the commands exit 2 saying ``pip install torch==2.13.0`` then ``pip install -e ".[unet]"``.
"""

from __future__ import annotations

import argparse
import json

from specsched.cli.common import positive_float, positive_int
from specsched.plots import save_grid

TRAIN_DESCRIPTION = """\
Train the reference DDPM U-Net (epsilon prediction, AdamW, EMA) on Fashion-MNIST
downsampled to 16 x 16 (padded to 32 x 32, 2 x 2 average-pooled; pixels in [-1, 1]) or on
an array of images, with a T = 1000 linear training grid by default. Default network:
base 32 channels, multipliers 1 2 2, one residual block per level, attention at 4 x 4,
1.11 M parameters; batch 128, 4000 steps (0.58 s/step measured with one thread on this
machine's 2 shared CPU cores, so about 39 minutes; use --minutes to cap the wall time).
The checkpoint is saved atomically every --checkpoint-every steps; --resume continues it.
Needs torch: `pip install torch==2.13.0` then `pip install -e ".[unet]"`."""


def add_parser(sub):
    """Register ``train-unet`` and ``sample-unet`` on an argparse subparsers object."""
    from specsched.unet.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train-unet", help="train the reference U-Net (needs torch)",
                       description=TRAIN_DESCRIPTION,
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
    p.add_argument("--training-schedule", default=d.training_schedule, metavar="NAME|FILE",
                   help="training grid: linear (default), scaled_linear, cosine, sigmoid, a "
                   "schedule .json or an alphas_cumprod .npy")
    p.add_argument("--num-train-timesteps", type=positive_int, default=d.num_train_timesteps,
                   help="T of a training family (default 1000)")
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
                   help="after training, write an 8 x 8 grid of EMA samples (DDIM, 50 "
                   "linear steps)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue an existing checkpoint up to --steps")
    group.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.set_defaults(run=run_train)

    from specsched.sampling.samplers import SAMPLER_NAMES

    q = sub.add_parser("sample-unet", help="sample a trained U-Net with any schedule",
                       description="Sample a train-unet checkpoint (EMA weights) with the "
                       "torch-free sampler on a baseline or a schedule file; the network is "
                       "conditioned on the training step nearest in logSNR to each level. "
                       "Writes (n, H, W, C) float64 samples in [-1, 1] to a .npy file.")
    q.add_argument("--checkpoint", required=True, metavar="FILE.pt")
    q.add_argument("--schedule", required=True, metavar="NAME|FILE.json",
                   help="a baseline (linear, cosine, karras, logsnr, ...) or a schedule file")
    q.add_argument("--steps", type=positive_int, default=None,
                   help="steps of a baseline schedule")
    q.add_argument("--spacing", default="linspace", help="baseline spacing (default linspace)")
    q.add_argument("--sampler", choices=list(SAMPLER_NAMES), default="ddim")
    q.add_argument("--eta", type=float, default=None, help="DDIM-eta (with --sampler ddim)")
    q.add_argument("--n", type=positive_int, required=True, help="number of samples")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=positive_int, default=500)
    q.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1)")
    q.add_argument("--clip", action="store_true", help="clip x0_hat to [-1, 1]")
    q.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    q.add_argument("--out", required=True, metavar="FILE.npy")
    q.add_argument("--grid", metavar="FILE.png", default=None,
                   help="also write a grid of the first 64 samples")
    q.add_argument("--force", action="store_true", help="overwrite existing outputs")
    q.set_defaults(run=run_sample)
    return p


def resolve_schedule(schedule: str, steps: int | None, spacing: str = "linspace"):
    """alphas_cumprod (S,) of a baseline name (with ``steps``) or a schedule JSON file."""
    from pathlib import Path

    from specsched.errors import InputError
    from specsched.schedules import BASELINES, Schedule, baseline_alphas_cumprod

    if schedule in BASELINES:
        if steps is None:
            raise InputError(f"--steps: required with the baseline schedule {schedule!r}")
        return baseline_alphas_cumprod(schedule, steps, spacing=spacing)
    path = Path(schedule)
    if not path.is_file():
        raise InputError(f"--schedule: {schedule!r} is neither a baseline "
                         f"({', '.join(BASELINES)}) nor a schedule JSON file")
    ab = Schedule.load(path).alphas_cumprod
    if steps is not None and steps != ab.size:
        raise InputError(f"--steps: {steps} disagrees with {path}, which has {ab.size} steps")
    return ab


def _sample_to_grid(denoise, path, force, seed=0):
    import numpy as np

    from specsched.sampling import sample
    from specsched.schedules import baseline_alphas_cumprod

    x = sample(denoise, baseline_alphas_cumprod("linear", 50), 64, denoise.sample_shape,
               sampler="ddim", rng=np.random.default_rng(seed), batch_size=64, progress=False)
    save_grid(x, path, force=force)


def run_train(args) -> int:
    """Train, print one JSON line (steps, loss, s/step, parameters, checkpoint); exit code."""
    from specsched.fileio import check_writable
    from specsched.unet import require_torch
    from specsched.unet.train import TrainConfig, train_unet

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
        checkpoint_every=args.checkpoint_every)
    result = train_unet(config, args.checkpoint, resume=args.resume, force=args.force,
                        minutes=args.minutes, torch_threads=args.threads)
    if args.sample_grid:
        from specsched.unet.denoiser import UNetDenoiser

        _sample_to_grid(UNetDenoiser.from_checkpoint(args.checkpoint), args.sample_grid,
                        force=args.force or args.resume)
    record = {k: getattr(result, k) for k in ("step", "steps_this_run", "stopped", "loss",
                                              "seconds", "seconds_per_step", "n_parameters",
                                              "checkpoint")}
    print(json.dumps(record))
    return 0


def run_sample(args) -> int:
    """Sample a checkpoint into ``args.out`` (atomically); exit code."""
    import numpy as np

    from specsched.fileio import atomic_write, check_writable
    from specsched.unet import require_torch

    require_torch().set_num_threads(args.threads)
    from specsched.sampling import sample
    from specsched.unet.denoiser import UNetDenoiser

    check_writable(args.out, args.force)
    if args.grid:
        check_writable(args.grid, args.force)
    ab = resolve_schedule(args.schedule, args.steps, args.spacing)
    den = UNetDenoiser.from_checkpoint(args.checkpoint, ema=not args.raw,
                                       batch_size=args.batch_size, clip_denoised=args.clip)
    x = sample(den, ab, args.n, den.sample_shape, sampler=args.sampler, eta=args.eta,
               rng=np.random.default_rng(args.seed), batch_size=args.batch_size)
    with atomic_write(args.out, force=args.force, mode="wb") as fh:
        np.save(fh, x)
    if args.grid:
        save_grid(x, args.grid, force=args.force)
    print(f"wrote {args.n} samples of shape {den.sample_shape} ({args.sampler}, S = {ab.size}, "
          f"seed {args.seed}) to {args.out}")
    return 0
