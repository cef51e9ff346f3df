"""``specsched export``: a schedule (a file or a baseline) in the forms other libraries take."""

from __future__ import annotations

import sys
import warnings

from specsched.cli.common import (
    add_fm_args,
    add_sigma_range_arg,
    fm_kwargs_from_args,
    positive_int,
    refuse_fm_args,
    resolve_sigma_range,
)
from specsched.errors import InputError


def add_parser(sub):
    """Register the ``export`` subcommand on an argparse subparsers object."""
    from specsched.schedules import BASELINES, SPACINGS, TRAINING_FAMILIES
    from specsched.schedules.export import EXPORT_FORMATS, EXPORT_TARGETS
    from specsched.schedules.flow import FM_BASELINES

    p = sub.add_parser("export", help="export a schedule for diffusers, k-diffusion or arrays",
                       description="Convert a schedule JSON file, or a baseline named with "
                       "--baseline: diffusers timesteps and sigmas (+ scheduler_config.json "
                       "when S = 1000), diffusers flow-matching sigmas (--to diffusers-flow: "
                       "FlowMatchEulerDiscreteScheduler, SD3, Flux), k-diffusion sigmas, plain "
                       "alphas_cumprod / betas / sigmas / flow-matching t arrays (step 1 "
                       "first), or a schedule file (--to schedule). Every file says its order "
                       "and last value; the command prints them. A schedule ending at pure "
                       "noise (t = 1) has no finite sigma: export it with --to diffusers-flow "
                       "or --to t.")
    p.add_argument("schedule", metavar="FILE.json", nargs="?", default=None,
                   help="schedule file (or give --baseline)")
    p.add_argument("--baseline", choices=[*BASELINES, *FM_BASELINES], default=None,
                   help="export a baseline schedule instead of a file (with --steps); the "
                   "flow-matching ones (fm-uniform, sd3-shift, flux-shift, shifted-cosine) end "
                   "at pure noise and are written with param fm")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of the --baseline (1000 with --to diffusers gives a "
                   "scheduler_config.json)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="linspace",
                   help="timestep spacing of a --baseline on the T = 1000 grid")
    add_sigma_range_arg(p, bounds=False)
    add_fm_args(p)
    p.add_argument("--to", required=True, choices=list(EXPORT_TARGETS),
                   help="diffusers: VP timesteps and sigmas; diffusers-flow: flow-matching "
                   "sigmas (t_S, ..., t_1) for FlowMatchEulerDiscreteScheduler(shift=1.0)."
                   "set_timesteps(sigmas=...); k-diffusion, sigmas-text: (sigma_S, ..., "
                   "sigma_1, 0); ab, betas, sigmas, t: step 1 first; schedule: a schedule file")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output file (a folder for --to diffusers; a folder or a .json file "
                   "for --to diffusers-flow)")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), default=None,
                   help="array format (default: from the suffix of --out, else npy)")
    p.add_argument("--training-schedule", choices=list(TRAINING_FAMILIES), default="linear",
                   help="training beta schedule of the model (T = 1000): the grid the "
                   "diffusers timesteps are rounded to and the levels are checked against "
                   "(default linear)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(run=run)
    return p


def _schedule(args):
    """The Schedule to export: the file, or the baseline (validated once, here)."""
    from specsched.schedules import TRAINING_FAMILIES, Schedule, baseline_alphas_cumprod
    from specsched.schedules.flow import FM_BASELINES, fm_baseline_alphas_cumprod

    if (args.schedule is None) == (args.baseline is None):
        raise InputError("FILE.json: give a schedule file or --baseline NAME, not "
                         + ("both" if args.schedule else "neither"))
    fm = args.baseline in FM_BASELINES
    if not fm:
        refuse_fm_args(args, f"a flow-matching --baseline ({', '.join(FM_BASELINES)})")
    if args.schedule is not None:
        if args.sigma_range is not None:
            raise InputError(f"--sigma-range: applies to --baseline; {args.schedule} has its "
                             "own levels")
        if args.steps is not None:
            raise InputError(f"--steps: applies to --baseline; {args.schedule} has its own")
        return Schedule.load(args.schedule)
    if args.steps is None:
        raise InputError(f"--steps: required with --baseline {args.baseline}")
    if fm:
        resolve_sigma_range(args, args.baseline)  # refuses --sigma-range, naming the baselines
        ab = fm_baseline_alphas_cumprod(args.baseline, args.steps, **fm_kwargs_from_args(args))
        return Schedule(ab, name=args.baseline, sampler="fm-euler", param="fm")
    spaced = args.baseline in TRAINING_FAMILIES
    ab = baseline_alphas_cumprod(args.baseline, args.steps, spacing=args.spacing,
                                 sigma_range=resolve_sigma_range(args, args.baseline))
    name = f"{args.baseline}/{args.spacing}" if spaced else args.baseline
    return Schedule(ab, name=name)


def run(args) -> int:
    """Export the schedule; print what each file holds, warnings and notes; exit code."""
    from specsched.schedules.export import write_export

    sched = _schedule(args)
    report = write_export(sched, args.to, args.out, args.format, args.force,
                          training_schedule=args.training_schedule)
    for line in report.lines:
        print(line)
    for message in report.warnings:
        warnings.warn(message, stacklevel=1)
    if sched.noise_spectrum != "white" and args.to != "schedule":
        # the levels are right only under that forward noise (docs/export.md)
        warnings.warn(f"{args.schedule}: made for the forward noise {sched.noise_spectrum!r}; "
                      "its levels are exported as they are, but the sampler and the model's "
                      "training must draw that same noise (diffusers and k-diffusion draw "
                      "white noise)", stacklevel=1)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in report.paths))
    return 0
