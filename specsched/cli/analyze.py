"""``specsched analyze``: spectral analysis of a dataset, as figures and tables.

The analysis itself is :func:`specsched.analysis.report.analyze`; this module parses the
command line and prints the headline numbers.
"""

from __future__ import annotations

from specsched.analysis.report import analyze
from specsched.cli.common import (
    add_noise_spectrum_arg,
    add_source_args,
    check_steps_fit_training_grid,
    n_samples_text,
    positive_float,
    positive_int,
    source_options,
)
from specsched.fileio import check_output_folder
from specsched.schedules import TRAINING_FAMILIES


def add_parser(sub):
    """Register the ``analyze`` subcommand on an argparse subparsers object."""
    p = sub.add_parser("analyze", help="RAPSD, power law, band powers, SNR maps, plots",
                       description="Spectral analysis of a dataset: RAPSD with its power-law "
                       "exponent, band powers, per-frequency SNR over diffusion time, maximal "
                       "detectable frequency per schedule, eigenvalues and the transfer "
                       "function of optimised schedules.")
    p.add_argument("src", metavar="SRC",
                   help="samples (as `specsched spectrum`) or eigenvalues only (cifar10, "
                   "spectrum .npz, 1-D .npy)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[10, 20],
                   help="step counts of the optimised schedules (default 10 20)")
    p.add_argument("--schedule", choices=list(TRAINING_FAMILIES), default="linear",
                   metavar="NAME", help="training schedule of the SNR heatmap: "
                   f"{', '.join(TRAINING_FAMILIES)} (default linear)")
    p.add_argument("--tau", type=positive_float, default=1.0,
                   help="SNR threshold of f_max, > 0 (default 1)")
    p.add_argument("--bands", type=positive_int, default=8,
                   help="number of radial bands (default 8)")
    add_noise_spectrum_arg(p)
    add_source_args(p)
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Run :func:`analyze` from parsed arguments; print the headline numbers; exit code."""
    check_steps_fit_training_grid(args.steps)
    check_output_folder(args.out)
    s = analyze(args.src, args.out, steps=args.steps, schedule=args.schedule, tau=args.tau,
                n_bands=args.bands, chunk_size=args.chunk_size, force=args.force,
                source_options=source_options(args), noise=args.noise_spectrum)
    line = f"{s['source']}: d = {s['dimension']}{n_samples_text(s['n_samples'])}"
    if "power_law" in s:
        line += f", power-law exponent {s['power_law']['exponent']:.3f}"
    if "noise_spectrum" in s:
        line += f", forward noise {s['noise_spectrum']}"
    if "fourier_vs_full" in s:
        line += f", Fourier vs full relative L1 {s['fourier_vs_full']['relative_l1']:.3g}"
    print(line)
    for note in s["notes"]:
        print(f"note: {note}")
    print(f"wrote {len(s['files'])} files to {args.out}/")
    return 0
