"""``specsched export``: write a schedule file in the form other libraries take."""

from __future__ import annotations

import sys


def add_parser(sub):
    """Register the ``export`` subcommand on an argparse subparsers object."""
    from specsched.schedules.export import EXPORT_FORMATS, EXPORT_TARGETS

    p = sub.add_parser("export", help="export a schedule for diffusers, k-diffusion or arrays",
                       description="Convert a schedule JSON file: diffusers timesteps/sigmas "
                       "(+ scheduler_config.json when S = 1000), k-diffusion sigmas, or plain "
                       "alphas_cumprod / betas / sigmas arrays (step 1 first).")
    p.add_argument("schedule", metavar="FILE.json", help="schedule file")
    p.add_argument("--to", required=True, choices=list(EXPORT_TARGETS))
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output file (a folder for --to diffusers)")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), default=None,
                   help="array format (default: from the suffix of --out, else npy)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Export ``args.schedule``; print what was written; exit code."""
    from specsched.schedules import Schedule
    from specsched.schedules.export import DDIM_WARNING, export_diffusers, write_export

    sched = Schedule.load(args.schedule)
    paths = write_export(sched, args.to, args.out, args.format, args.force)
    if args.to == "diffusers":
        info = export_diffusers(sched)
        print(f"timesteps {info['timesteps']} (nearest linear T=1000 training steps; max "
              f"logSNR rounding error {info['logsnr_rounding_error']:.4g} nats)")
        for note in info["notes"][1:]:
            print(f"note: {note}")
        print(DDIM_WARNING, file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
