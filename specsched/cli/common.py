"""What the subcommands share: argparse converters, option groups and argument resolution.

The converters raise :class:`argparse.ArgumentTypeError`, so argparse prints
``specsched CMD: error: argument --NAME: <message>`` and exits 2. Nothing outside
:mod:`specsched.cli` imports this module: the library takes plain values.
"""

from __future__ import annotations

import argparse
import math

EXIT_INPUT = 2
EXIT_NOT_CONVERGED = 3


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0.0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """``HxW`` (or ``N`` for a square) in pixels, both >= 1."""
    try:
        h, _, w = text.lower().partition("x")
        size = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels (e.g. 64x64), got {text!r}") \
            from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return size


def add_source_args(p):
    """Options shared by commands that read samples (image and audio options, chunking)."""
    p.add_argument("--chunk-size", type=positive_int, default=4096, metavar="N",
                   help="samples per chunk (memory ~ N x d); default 4096")
    p.add_argument("--grayscale", action="store_true", help="images: convert RGB to luminance")
    p.add_argument("--crop", type=positive_int, default=None, metavar="PX",
                   help="images: centred square crop of PX pixels, before --size")
    p.add_argument("--size", type=image_size, default=None, metavar="HxW",
                   help="images: resize to H x W pixels (anti-aliased)")
    p.add_argument("--sample-rate", type=positive_int, default=16000, metavar="HZ",
                   help="audio: resample to HZ (default 16000)")
    p.add_argument("--frame-length", type=positive_int, default=16384, metavar="N",
                   help="audio: samples per frame, one frame = one sample (default 16384)")


def source_options(args) -> dict:
    """The :func:`specsched.data.sources.open_source` options given on the command line."""
    opts = {}
    if args.grayscale:
        opts["grayscale"] = True
    if args.crop is not None:
        opts["crop"] = args.crop
    if args.size is not None:
        opts["size"] = args.size
    if args.sample_rate != 16000:
        opts["sample_rate"] = args.sample_rate
    if args.frame_length != 16384:
        opts["frame_length"] = args.frame_length
    return opts


#: Training grid of the baselines every optimised schedule is compared with
#: (docs/theory.md section 1).
NUM_TRAIN_TIMESTEPS = 1000


def check_steps_fit_training_grid(steps) -> None:
    """Refuse step counts above T = 1000 before any work (baselines live on that grid)."""
    from specsched.errors import InputError

    too_many = [S for S in steps if S > NUM_TRAIN_TIMESTEPS]
    if too_many:
        raise InputError(
            f"--steps: {max(too_many)} sampling steps do not fit on a training grid of "
            f"T = {NUM_TRAIN_TIMESTEPS} timesteps; expected integers in [1, {NUM_TRAIN_TIMESTEPS}]"
        )


def spectrum_from_args(args):
    """The spectrum named by ``--data`` or ``--spectrum`` (default: the built-in dataset).

    Samples are read with ``--chunk-size`` and the image / audio options of
    :func:`add_source_args` where the command has them.
    """
    from specsched.data import DEFAULT_DATASET
    from specsched.spectrum import load_spectrum

    opts = {}
    if hasattr(args, "chunk_size"):
        opts = {"chunk_size": args.chunk_size, **source_options(args)}
    if getattr(args, "data", None):
        return load_spectrum(args.data, as_data=True, **opts)
    return load_spectrum(args.spectrum or DEFAULT_DATASET, **opts)


DISCRETE_HELP = ("ddim (DDIM-eta, eta = 0), ddpm (eta = 1, posterior variance beta-tilde), "
                 "ddpm-large (variance beta), ddim-ve, ddpm-ve (SMLD ancestral)")
SDE_HELP = ("continuous-time VP solvers (Pierret & Galerne 2025): euler, heun (probability-flow "
            "ODE), em (Euler-Maruyama), ei (exponential integrator), pg-ddpm")


def add_sampler_args(p, choices, default="ddim"):
    """``--sampler``, ``--eta`` and ``--init``: the sampler and the start of the reverse process."""
    p.add_argument("--sampler", choices=choices, default=default, metavar="SAMPLER",
                   help=f"one of {', '.join(choices)}: {DISCRETE_HELP}"
                   + (f"; {SDE_HELP}" if "euler" in choices else "")
                   + ("; diffusers-ddim: diffusers' DDIMScheduler as it behaves (its step "
                      "lands on t - T//S, not on the next grid timestep)"
                      if "diffusers-ddim" in choices else "")
                   + ("; diffusers-ddpm-large: DDPMScheduler(variance_type='fixed_large') as it "
                      "behaves (noise on the final step)" if "diffusers-ddpm-large" in choices
                      else "")
                   + ("" if default else "; default: the schedule file's sampler, else ddim"))
    p.add_argument("--eta", type=unit_interval, default=None,
                   help="DDIM-eta stochasticity in [0, 1] (with --sampler ddim)")
    p.add_argument("--init", choices=["normal", "marginal"], default="normal",
                   help="start of the reverse process: N(0, I) (N(0, sigma_S^2) for VE) or "
                   "the true marginal")


def resolve_sampler(sampler, param):
    """Combine --sampler and --param: ``ddim --param ve`` is ``ddim-ve``."""
    from specsched.errors import InputError
    from specsched.theory import get_sampler

    if param == "ve" and sampler in ("ddim", "ddpm"):
        sampler = f"{sampler}-ve"
    spec = get_sampler(sampler)
    if param is not None and spec.param != param:
        raise InputError(f"--param: sampler {sampler!r} is {spec.param.upper()}, not {param}")
    return sampler


def eta_text(eta):
    """``eta`` for a log line: ``-`` when the sampler has none."""
    return "-" if eta is None else f"{eta:g}"
