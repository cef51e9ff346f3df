"""The ``specsched`` command line (names and flags as in DESIGN.md).

Exit codes: 0 success; 2 bad input (a message names the file, field or argument); 3 an
optimisation did not converge (its files are written and marked ``success: false``);
130 interrupted. Output files are written atomically and never overwritten without
``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from specsched import __version__
from specsched.argtypes import positive_float, positive_int, unit_interval
from specsched.errors import InputError, SpecschedError

EXIT_INPUT = 2
EXIT_NOT_CONVERGED = 3

#: Modules that add a subcommand: each defines ``add_parser(subparsers)`` (registering a
#: parser whose ``set_defaults(run=...)`` names a function ``run(args) -> int``).
COMMAND_MODULES: tuple[str, ...] = (
    "specsched.spectrum.command",
    "specsched.optimize.sweep",
    "specsched.sampling.command",
    "specsched.schedules.export_command",
    "specsched.analysis.command",
    "specsched.unet.command",
    "specsched.metrics.command",
)


_positive_int, _positive_float, _unit_interval = positive_int, positive_float, unit_interval


DISCRETE_HELP = ("ddim (DDIM-eta, eta = 0), ddpm (eta = 1, posterior variance beta-tilde), "
                 "ddpm-large (variance beta), ddim-ve, ddpm-ve (SMLD ancestral)")
SDE_HELP = ("continuous-time VP solvers (Pierret & Galerne 2025): euler, heun (probability-flow "
            "ODE), em (Euler-Maruyama), ei (exponential integrator), pg-ddpm")


def _add_sampler_args(p, choices, default="ddim"):
    p.add_argument("--sampler", choices=choices, default=default, metavar="SAMPLER",
                   help=f"one of {', '.join(choices)}: {DISCRETE_HELP}"
                   + (f"; {SDE_HELP}" if "euler" in choices else "")
                   + ("; diffusers-ddim: diffusers' DDIMScheduler as it behaves (its step "
                      "lands on t - T//S, not on the next grid timestep)"
                      if "diffusers-ddim" in choices else "")
                   + ("" if default else "; default: the schedule file's sampler, else ddim"))
    p.add_argument("--eta", type=_unit_interval, default=None,
                   help="DDIM-eta stochasticity in [0, 1] (with --sampler ddim)")
    p.add_argument("--init", choices=["normal", "marginal"], default="normal",
                   help="start of the reverse process: N(0, I) (N(0, sigma_S^2) for VE) or "
                   "the true marginal")


def _resolve_sampler(sampler, param):
    """Combine --sampler and --param: ``ddim --param ve`` is ``ddim-ve``."""
    from specsched.theory import get_sampler

    if param == "ve" and sampler in ("ddim", "ddpm"):
        sampler = f"{sampler}-ve"
    spec = get_sampler(sampler)
    if param is not None and spec.param != param:
        raise InputError(f"--param: sampler {sampler!r} is {spec.param.upper()}, not {param}")
    return sampler


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specsched`` command (also used to document the CLI)."""
    from specsched.optimize import AB_MAX, AB_MIN, DELTA, METHODS
    from specsched.schedules import BASELINES, SPACINGS
    from specsched.theory import LOSSES, SAMPLERS
    from specsched.theory.sde import BETA_MAX, BETA_MIN, SDE_SOLVERS

    discrete = list(SAMPLERS)

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
    _add_sampler_args(p, discrete)
    p.add_argument("--param", choices=["vp", "ve"], default=None,
                   help="vp or ve: with ve, ddim and ddpm mean ddim-ve and ddpm-ve")
    p.add_argument("--loss", choices=list(LOSSES), default="w2",
                   help="loss to minimise: W2, KL(gen || data) or KL(data || gen)")
    p.add_argument("--method", choices=list(METHODS), default="auto",
                   help="auto (default: slsqp-logsnr up to 200 steps, lbfgs-logsnr above), "
                   "slsqp (the paper's SLSQP on alphas_cumprod), slsqp-logsnr, lbfgs-logsnr")
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
    p.add_argument("--schedule", metavar="NAME|FILE.json",
                   help=f"a baseline ({', '.join(BASELINES)}) or a schedule JSON file "
                   "(required for discrete samplers; continuous-time solvers use linear "
                   "beta(t) and take none)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="number of steps (required with a baseline name)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="linspace",
                   help="timestep spacing of a baseline on the T = 1000 grid")
    _add_sampler_args(p, discrete + list(SDE_SOLVERS) + ["diffusers-ddim"], default=None)
    p.add_argument("--param", choices=["vp", "ve"], default=None,
                   help="vp or ve: with ve, ddim and ddpm mean ddim-ve and ddpm-ve")
    p.add_argument("--t-eps", type=float, default=0.0,
                   help="truncation time eps of the continuous-time solvers (default 0)")
    p.add_argument("--beta-min", type=float, default=BETA_MIN,
                   help=f"beta(0) of the continuous-time solvers (default {BETA_MIN})")
    p.add_argument("--beta-max", type=float, default=BETA_MAX,
                   help=f"beta(1) of the continuous-time solvers (default {BETA_MAX})")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


#: Training grid of the baselines every optimised schedule is compared with (THEORY.md s. 1).
NUM_TRAIN_TIMESTEPS = 1000


def check_steps_fit_training_grid(steps) -> None:
    """Refuse step counts above T = 1000 before any work (baselines live on that grid)."""
    too_many = [S for S in steps if S > NUM_TRAIN_TIMESTEPS]
    if too_many:
        raise InputError(
            f"--steps: {max(too_many)} sampling steps do not fit on a training grid of "
            f"T = {NUM_TRAIN_TIMESTEPS} timesteps; expected integers in [1, {NUM_TRAIN_TIMESTEPS}]"
        )


def _spectrum_from_args(args):
    from specsched.data import DEFAULT_DATASET
    from specsched.spectrum import load_spectrum

    if getattr(args, "data", None):
        return load_spectrum(args.data, as_data=True)
    return load_spectrum(args.spectrum or DEFAULT_DATASET)


def _eta_text(eta):
    return "-" if eta is None else f"{eta:g}"


def cmd_optimize(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.fileio import atomic_write, check_writable
    from specsched.optimize import optimize_schedule
    from specsched.plots import plot_schedules
    from specsched.schedules import Schedule, baseline_alphas_cumprod
    from specsched.theory import get_sampler, resolve_eta

    sampler = _resolve_sampler(args.sampler, args.param)
    eta = resolve_eta(sampler, args.eta)
    steps = sorted(set(args.steps))
    check_steps_fit_training_grid(steps)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    tag = sampler + (f"-eta{eta:g}" if sampler == "ddim" and eta else "")
    names = {S: out / f"schedule_{tag}_{args.loss}_S{S}.json" for S in steps}
    csv_path, png_path = out / "summary.csv", out / "schedules.png"
    for path in [*names.values(), csv_path, png_path]:  # refuse before any work is done
        check_writable(path, args.force)

    spectrum = _spectrum_from_args(args)
    print(f"spectrum: {spectrum.source} ({spectrum.method}), d = {spectrum.dimension}, "
          f"n_samples = {spectrum.n_samples}; sampler {sampler} (eta = {_eta_text(eta)}), "
          f"loss {args.loss}, method {args.method}")
    loss_col = args.loss.replace("-", "_")
    rows, panels, failed = [], [], []
    for S in tqdm(steps, desc="optimising", unit="S", disable=None):
        res = optimize_schedule(
            spectrum.eigenvalues, spectrum.mean, S, loss=args.loss, sampler=sampler, eta=eta,
            init=args.init, ab_min=args.ab_min, ab_max=args.ab_max, delta=args.delta,
            method=args.method, spacings=tuple(args.spacing), maxiter=args.maxiter,
        )
        if not res.success:
            failed.append((S, res.message))
        sched = Schedule(
            alphas_cumprod=res.x, name=f"optimized-{args.loss}", sampler=sampler, eta=eta,
            param=get_sampler(sampler).param, loss=args.loss, loss_value=res.fun,
            baselines=res.baselines, spectrum=spectrum.provenance(), optimizer=res.summary(),
        )
        sched.save(names[S], force=args.force)
        rows.append({"steps": S, "schedule": f"optimized-{args.loss}", "w2": res.w2,
                     "kl": res.kl, "kl_data_gen": res.kl_data_gen, "optimized": True,
                     "success": res.success, "file": names[S].name})
        for name, vals in res.baselines.items():
            rows.append({"steps": S, "schedule": name, **vals, "optimized": False,
                         "success": None, "file": ""})
        base_abs = {}
        for name in res.baselines:
            fam, _, spacing = name.partition("/")
            base_abs[name] = baseline_alphas_cumprod(fam, S, spacing=spacing or "linspace")
        panels.append((S, res.x, base_abs))

    table = pd.DataFrame(rows)
    with atomic_write(csv_path, force=args.force) as fh:
        table.to_csv(fh, index=False, float_format="%.10g")
    plot_schedules(panels, png_path, force=args.force,
                   title=f"{spectrum.source}: {sampler}, loss {args.loss}")
    shown = ["w2", loss_col] if loss_col != "w2" else ["w2", "kl"]
    wide = table.pivot(index="schedule", columns="steps", values=shown)
    wide = wide.sort_values((loss_col, steps[0]))
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {len(names)} schedule file(s), {csv_path.name} and {png_path.name} to {out}/")
    if failed:
        for S, msg in failed:
            print(f"specsched: optimisation did not converge for S = {S}: {msg} "
                  f"(its file records success: false)", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def _evaluate_sde(args, sampler, spectrum):
    from specsched.theory.sde import sde_closed_form

    if args.schedule is not None:
        raise InputError(
            f"--schedule: the continuous-time solver {sampler!r} runs on linear beta(t) "
            "(--beta-min/--beta-max) and takes no schedule"
        )
    if args.steps is None:
        raise InputError(f"--steps: required with the continuous-time solver {sampler!r}")
    if args.eta is not None:
        raise InputError(f"--eta: the continuous-time solver {sampler!r} has no eta")
    traj = sde_closed_form(
        spectrum.eigenvalues, spectrum.mean, args.steps, sampler, beta_min=args.beta_min,
        beta_max=args.beta_max, t_eps=args.t_eps, init=args.init,
    )
    extra = {"beta_min": args.beta_min, "beta_max": args.beta_max, "t_eps": args.t_eps,
             "trajectory": {"t": traj.times.tolist(), "w2": traj.w2.tolist()}}
    label = f"vp-sde linear beta(t) [{args.beta_min:g}, {args.beta_max:g}]"
    return traj.report, args.steps, None, label, None, extra


def _evaluate_diffusers_ddim(args, spectrum):
    from specsched.schedules import TRAINING_FAMILIES
    from specsched.theory import resolve_eta
    from specsched.theory.unchained import diffusers_ddim_levels, evaluate_unchained

    family = args.schedule or "linear"
    if family not in TRAINING_FAMILIES:
        raise InputError(
            f"--schedule: diffusers-ddim runs on a T = 1000 training schedule "
            f"({', '.join(TRAINING_FAMILIES)}), got {family!r}"
        )
    if args.steps is None:
        raise InputError("--steps: required with --sampler diffusers-ddim")
    eta = resolve_eta("ddim", args.eta)
    a_denoise, a_land, timesteps = diffusers_ddim_levels(args.spacing, args.steps,
                                                         family=family)
    r = evaluate_unchained(spectrum.eigenvalues, spectrum.mean, a_denoise, a_land, eta=eta)
    extra = {"timesteps": [int(t) for t in timesteps]}
    return r, int(a_denoise.size), eta, family, args.spacing, extra


def _evaluate_discrete(args, sampler, eta, spectrum):
    from specsched.schedules import BASELINES, Schedule, baseline_alphas_cumprod
    from specsched.theory import evaluate_schedule, resolve_eta

    if args.schedule is None:
        raise InputError(f"--schedule: required with the discrete sampler {sampler!r}")
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
        if sampler is None and sched.sampler is not None:
            sampler = sched.sampler
            eta = sched.eta if eta is None else eta
        label, spacing = str(path), None
    sampler = _resolve_sampler(sampler or "ddim", args.param)
    eta = resolve_eta(sampler, eta)
    r = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, sampler=sampler, eta=eta,
                          init=args.init)
    return r, int(ab.size), eta, label, spacing, {"sampler": sampler}


def cmd_evaluate(args) -> int:
    from specsched.spectrum import load_spectrum
    from specsched.theory.sde import SDE_SOLVERS

    spectrum = load_spectrum(args.spectrum)
    if args.sampler in SDE_SOLVERS:
        r, steps, eta, label, spacing, extra = _evaluate_sde(args, args.sampler, spectrum)
        sampler = args.sampler
    elif args.sampler == "diffusers-ddim":
        r, steps, eta, label, spacing, extra = _evaluate_diffusers_ddim(args, spectrum)
        sampler = args.sampler
    else:
        r, steps, eta, label, spacing, extra = _evaluate_discrete(
            args, args.sampler, args.eta, spectrum
        )
        sampler = extra.pop("sampler")
    bad = {k: v for k, v in (("w2", r.w2), ("kl", r.kl), ("kl_data_gen", r.kl_data_gen))
           if not math.isfinite(v)}
    if bad:  # never print NaN/Infinity as a result (and never as invalid JSON)
        blame = ("--steps, --beta-min/--beta-max, --t-eps" if sampler in SDE_SOLVERS
                 else "--schedule, --steps")
        raise InputError(
            f"{blame}: the closed form is not finite for this spectrum and schedule "
            f"({', '.join(f'{k} = {v}' for k, v in bad.items())}): floating-point overflow; "
            "use more steps or a less extreme schedule"
        )
    record = {
        "w2": r.w2, "kl": r.kl, "kl_data_gen": r.kl_data_gen,
        "kl_excluded_directions": r.kl_excluded, "steps": steps, "sampler": sampler,
        "eta": eta, "init": args.init, "schedule": label, "spacing": spacing,
        "spectrum": spectrum.provenance(), **extra,
    }
    if args.json:
        print(json.dumps(record, allow_nan=False))
    else:
        where = f"{label}/{spacing}" if spacing else label
        print(f"{where}, S = {steps}, {sampler} (eta = {_eta_text(eta)}) on {spectrum.source}: "
              f"W2 = {r.w2:.6g}, KL(gen||data) = {r.kl:.6g}, KL(data||gen) = "
              f"{r.kl_data_gen:.6g} nats ({r.kl_excluded} directions below the KL floor)")
    return 0


COMMANDS = {"optimize": cmd_optimize, "evaluate": cmd_evaluate}


def main(argv=None) -> int:
    """Entry point of the ``specsched`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None) or COMMANDS[args.command]

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"specsched {args.command}: warning: {message}", file=sys.stderr)

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.showwarning = show_warning  # one plain line, no source excerpt
            return run(args)
    except SpecschedError as exc:
        print(f"specsched {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"specsched {args.command}: interrupted; finished files are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
