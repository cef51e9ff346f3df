"""The ``specsched`` command line (names and flags as in DESIGN.md).

Exit codes: 0 success; 2 bad input (a message names the file, field or argument); 3 an
optimisation did not converge (its files are written and marked ``success: false``);
130 interrupted. Output files are written atomically and never overwritten without
``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from specsched import __version__
from specsched.errors import InputError, SpecschedError

EXIT_INPUT = 2
EXIT_NOT_CONVERGED = 3

#: Modules that add a subcommand: each defines ``add_parser(subparsers)`` (registering a
#: parser whose ``set_defaults(run=...)`` names a function ``run(args) -> int``).
COMMAND_MODULES: tuple[str, ...] = ("specsched.spectrum.command",)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _unit_interval(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _add_sampler_args(p, default="ddim"):
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=default,
                   help="VP sampler: ddim (eta = 0) or ddpm (eta = 1, posterior variance)"
                   + ("" if default else "; default: the schedule file's sampler, else ddim"))
    p.add_argument("--eta", type=_unit_interval, default=None,
                   help="DDIM-eta stochasticity in [0, 1] (with --sampler ddim)")
    p.add_argument("--init", choices=["normal", "marginal"], default="normal",
                   help="start of the reverse process: N(0, I) or the true marginal")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specsched`` command (also used to document the CLI)."""
    from specsched.optimize import AB_MAX, AB_MIN, DELTA, METHODS
    from specsched.schedules import BASELINES, SPACINGS

    parser = argparse.ArgumentParser(
        prog="specsched",
        description="Design diffusion noise schedules from the spectrum of the data.",
    )
    parser.add_argument("--version", action="version", version=f"specsched {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("optimize", help="optimise schedules for a dataset's spectrum",
                       description="Optimise a monotone alphas_cumprod schedule per step "
                       "count and write schedule JSON files, a CSV summary and a plot.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="SRC",
                     help="samples: .npy/.npz array (N, ...), image folder, or a built-in "
                     "dataset (natural-patches, digits); default: natural-patches")
    src.add_argument("--spectrum", metavar="SRC",
                     help="spectrum .npz, 1-D .npy of eigenvalues, or a built-in name (cifar10)")
    p.add_argument("--steps", type=_positive_int, nargs="+", default=[10, 20, 50],
                   help="numbers of sampling steps (default: 10 20 50)")
    _add_sampler_args(p)
    p.add_argument("--param", choices=["vp"], default="vp",
                   help="parametrisation (VP; VE samplers are not implemented yet)")
    p.add_argument("--loss", choices=["w2", "kl"], default="w2",
                   help="loss to minimise: W2 or KL(gen || data)")
    p.add_argument("--method", choices=list(METHODS), default="slsqp",
                   help="slsqp on alphas_cumprod (the paper's) or lbfgs-logsnr (cross-check)")
    p.add_argument("--spacing", choices=list(SPACINGS), nargs="+", default=["linspace"],
                   help="spacings at which baselines are reported (default linspace)")
    p.add_argument("--ab-min", type=float, default=AB_MIN,
                   help=f"lower bound on alphas_cumprod (default {AB_MIN:.4g})")
    p.add_argument("--ab-max", type=float, default=AB_MAX,
                   help=f"upper bound on alphas_cumprod (default {AB_MAX:.6g})")
    p.add_argument("--delta", type=float, default=DELTA,
                   help=f"monotonicity margin ab_s - ab_(s+1) >= delta (default {DELTA:g})")
    p.add_argument("--maxiter", type=_positive_int, default=1000,
                   help="iteration limit of each optimiser start (default 1000)")
    p.add_argument("--out", default="specsched-out", metavar="DIR",
                   help="output folder (default ./specsched-out)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")

    p = sub.add_parser("evaluate", help="W2 and KL of a schedule on a spectrum",
                       description="Closed-form W2 and KL(gen || data) of a sampler run on "
                       "a schedule, for Gaussian data with the given spectrum.")
    p.add_argument("--spectrum", metavar="SRC", default="natural-patches",
                   help="spectrum .npz, eigenvalues .npy, samples, image folder or built-in")
    p.add_argument("--schedule", required=True, metavar="NAME|FILE.json",
                   help=f"a baseline ({', '.join(BASELINES)}) or a schedule JSON file")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="number of steps (required with a baseline name)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="linspace",
                   help="timestep spacing of a baseline on the T = 1000 grid")
    _add_sampler_args(p, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def _spectrum_from_args(args):
    from specsched.data import DEFAULT_DATASET
    from specsched.spectrum import load_spectrum

    if getattr(args, "data", None):
        return load_spectrum(args.data, as_data=True)
    return load_spectrum(args.spectrum or DEFAULT_DATASET)


def cmd_optimize(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.fileio import atomic_write, check_writable
    from specsched.optimize import optimize_schedule
    from specsched.plots import plot_schedules
    from specsched.schedules import Schedule, baseline_alphas_cumprod
    from specsched.theory import resolve_eta

    eta = resolve_eta(args.sampler, args.eta)
    steps = sorted(set(args.steps))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    tag = f"{args.sampler}" + (f"-eta{eta:g}" if args.sampler == "ddim" and eta else "")
    names = {S: out / f"schedule_{tag}_{args.loss}_S{S}.json" for S in steps}
    csv_path, png_path = out / "summary.csv", out / "schedules.png"
    for path in [*names.values(), csv_path, png_path]:  # refuse before any work is done
        check_writable(path, args.force)

    spectrum = _spectrum_from_args(args)
    print(f"spectrum: {spectrum.source} ({spectrum.method}), d = {spectrum.dimension}, "
          f"n_samples = {spectrum.n_samples}; sampler {args.sampler} (eta = {eta:g}), "
          f"loss {args.loss}, method {args.method}")
    rows, panels, failed = [], [], []
    for S in tqdm(steps, desc="optimising", unit="S", disable=None):
        res = optimize_schedule(
            spectrum.eigenvalues, spectrum.mean, S, loss=args.loss, eta=eta, init=args.init,
            ab_min=args.ab_min, ab_max=args.ab_max, delta=args.delta, method=args.method,
            spacings=tuple(args.spacing), maxiter=args.maxiter,
        )
        if not res.success:
            failed.append((S, res.message))
        sched = Schedule(
            alphas_cumprod=res.x, name=f"optimized-{args.loss}", sampler=args.sampler, eta=eta,
            param=args.param, loss=args.loss, loss_value=res.fun, baselines=res.baselines,
            spectrum=spectrum.provenance(), optimizer=res.summary(),
        )
        sched.save(names[S], force=args.force)
        rows.append({"steps": S, "schedule": f"optimized-{args.loss}", "w2": res.w2,
                     "kl": res.kl, "optimized": True, "success": res.success,
                     "file": names[S].name})
        for name, vals in res.baselines.items():
            rows.append({"steps": S, "schedule": name, "w2": vals["w2"], "kl": vals["kl"],
                         "optimized": False, "success": None, "file": ""})
        base_abs = {}
        for name in res.baselines:
            fam, _, spacing = name.partition("/")
            base_abs[name] = baseline_alphas_cumprod(fam, S, spacing=spacing or "linspace")
        panels.append((S, res.x, base_abs))

    table = pd.DataFrame(rows)
    with atomic_write(csv_path, force=args.force) as fh:
        table.to_csv(fh, index=False, float_format="%.10g")
    plot_schedules(panels, png_path, force=args.force,
                   title=f"{spectrum.source}: {args.sampler}, loss {args.loss}")
    wide = table.pivot(index="schedule", columns="steps", values=["w2", "kl"])
    wide = wide.sort_values(("w2" if args.loss == "w2" else "kl", steps[0]))
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {len(names)} schedule file(s), {csv_path.name} and {png_path.name} to {out}/")
    if failed:
        for S, msg in failed:
            print(f"specsched: optimisation did not converge for S = {S}: {msg} "
                  f"(its file records success: false)", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def cmd_evaluate(args) -> int:
    from specsched.schedules import BASELINES, Schedule, baseline_alphas_cumprod
    from specsched.spectrum import load_spectrum
    from specsched.theory import evaluate_schedule, resolve_eta

    sampler, eta = args.sampler, args.eta
    if args.schedule in BASELINES:
        if args.steps is None:
            raise InputError(f"--steps: required with the baseline schedule {args.schedule!r}")
        ab = baseline_alphas_cumprod(args.schedule, args.steps, spacing=args.spacing)
        label = args.schedule
        spacing = args.spacing if args.schedule not in ("karras", "logsnr") else None
    else:
        path = Path(args.schedule)
        if path.suffix.lower() != ".json" and not path.exists():
            raise InputError(
                f"--schedule: {args.schedule!r} is neither a baseline ({', '.join(BASELINES)}) "
                "nor a schedule JSON file"
            )
        sched = Schedule.load(path)
        ab = sched.alphas_cumprod
        if args.steps is not None and args.steps != ab.size:
            raise InputError(
                f"--steps: {args.steps} disagrees with {path}, which has {ab.size} steps"
            )
        if sampler is None and sched.sampler in ("ddim", "ddpm"):
            sampler = sched.sampler
            eta = sched.eta if eta is None else eta
        label, spacing = str(path), None
    sampler = sampler or "ddim"
    eta = resolve_eta(sampler, eta)
    spectrum = load_spectrum(args.spectrum)
    r = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, eta=eta, init=args.init)
    record = {
        "w2": r.w2, "kl": r.kl, "kl_excluded_directions": r.kl_excluded,
        "steps": int(ab.size), "sampler": sampler, "eta": eta, "init": args.init,
        "schedule": label, "spacing": spacing, "spectrum": spectrum.provenance(),
    }
    if args.json:
        print(json.dumps(record))
    else:
        where = f"{label}/{spacing}" if spacing else label
        print(f"{where}, S = {ab.size}, {sampler} (eta = {eta:g}) on {spectrum.source}: "
              f"W2 = {r.w2:.6g}, KL(gen||data) = {r.kl:.6g} nats "
              f"({r.kl_excluded} directions below the KL floor)")
    return 0


COMMANDS = {"optimize": cmd_optimize, "evaluate": cmd_evaluate}


def main(argv=None) -> int:
    """Entry point of the ``specsched`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None) or COMMANDS[args.command]
    try:
        with np.errstate(all="ignore"):
            return run(args)
    except SpecschedError as exc:
        print(f"specsched {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"specsched {args.command}: interrupted; finished files are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
