"""``specsched optimize``: optimise one schedule per step count for a dataset's spectrum."""

from __future__ import annotations

import sys

import numpy as np

from specsched.cli.common import (
    EXIT_NOT_CONVERGED,
    add_bounds_args,
    add_data_args,
    add_fm_args,
    add_ksampler_option_args,
    add_noise_spectrum_arg,
    add_sampler_args,
    add_sigma_range_arg,
    add_source_args,
    check_fm_args,
    check_noise_samplers,
    check_steps_fit_training_grid,
    eta_text,
    fm_kwargs_from_args,
    ksampler_options,
    n_samples_text,
    noise_from_args,
    positive_int,
    resolve_sampler,
    resolve_sigma_range,
    spectrum_from_args,
    steps_from_nfe,
)
from specsched.errors import InputError

#: The row (and baselines entry) of the best SD3 shift of a flow-matching run.
BEST_SHIFT = "sd3-shift/best"


def add_parser(sub):
    """Register the ``optimize`` subcommand on an argparse subparsers object."""
    from specsched.optimize import METHODS
    from specsched.schedules import SPACINGS
    from specsched.theory import LOSSES
    from specsched.theory.samplers import sampler_names
    from specsched.theory.wiener import PARAMS

    discrete = sampler_names()
    p = sub.add_parser("optimize", help="optimise schedules for a dataset's spectrum",
                       description="Optimise a monotone alphas_cumprod schedule per step "
                       "count and write schedule JSON files, a CSV summary and a plot.")
    add_data_args(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, nargs="+", default=[10, 20, 50],
                        help="numbers of sampling steps (default: 10 20 50)")
    budget.add_argument("--nfe", type=positive_int, nargs="+", default=None,
                        help="network-evaluation budgets instead of --steps: Heun, DPM-2 and "
                        "the two-stage ancestral/SDE samplers spend 2 S - 1 (one on the last "
                        "step), the others S")
    add_sampler_args(p, discrete)
    add_ksampler_option_args(p)
    p.add_argument("--param", choices=list(PARAMS), default=None,
                   help="vp, ve or fm: with ve, ddim and ddpm mean ddim-ve and ddpm-ve; with fm "
                   "(flow matching, x_t = (1 - t) x_0 + t eps), ddim and euler mean fm-euler, "
                   "heun fm-heun, the last level is pure noise (t_S = 1), the baselines are "
                   "fm-uniform, sd3-shift, flux-shift and shifted-cosine, and the best SD3 "
                   "shift is reported beside the optimised schedule")
    add_fm_args(p)
    p.add_argument("--loss", choices=list(LOSSES), default="w2",
                   help="loss to minimise: W2, KL(gen || data) or KL(data || gen)")
    add_noise_spectrum_arg(p)
    p.add_argument("--method", choices=list(METHODS), default="auto",
                   help="auto (default: slsqp-logsnr up to 50 steps; above, newton-logsnr for a "
                   "sampler that injects no noise, lbfgs-log-increments for the others), "
                   "slsqp (the paper's SLSQP on alphas_cumprod), slsqp-logsnr, lbfgs-logsnr, "
                   "lbfgs-log-increments (L-BFGS on the logs of the logSNR increments), "
                   "newton-logsnr (Newton's method in logSNR: ddim with eta = 0, ddim-ve)")
    p.add_argument("--spacing", choices=list(SPACINGS), nargs="+", default=["linspace"],
                   help="spacings at which baselines are reported (default linspace)")
    add_bounds_args(p)
    add_sigma_range_arg(p, bounds=True)
    p.add_argument("--out", default="specsched-out", metavar="DIR",
                   help="output folder (default ./specsched-out)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_source_args(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Optimise, write the schedule files, summary.csv and schedules.png; exit code."""
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.fileio import atomic_write, check_output_folder, check_writable
    from specsched.optimize import check_bounds, optimal_shift, optimize_schedule
    from specsched.plots import plot_schedules
    from specsched.schedules import SIGMA_BASELINES, Schedule, baseline_alphas_cumprod
    from specsched.schedules.flow import fm_baseline_alphas_cumprod
    from specsched.theory import resolve_eta
    from specsched.theory.samplers import check_sampler_options, sampler_param

    sampler = resolve_sampler(args.sampler, args.param)
    eta = resolve_eta(sampler, args.eta)
    options = check_sampler_options(sampler, eta, ksampler_options(args))  # before any work
    check_fm_args(args, sampler)
    fm = sampler_param(sampler) == "fm"
    steps = steps_from_nfe(sampler, args.nfe) if args.nfe else sorted(set(args.steps))
    if fm and steps[0] == 1 and args.loss != "w2":
        raise InputError(f"--steps: 1 step from pure noise (t = 1) outputs the data mean, a "
                         f"point mass whose {args.loss} is infinite; use --loss w2 or 2 steps "
                         "or more")
    if not fm:  # the flow-matching baselines live on no training grid
        check_steps_fit_training_grid(steps)
    free = steps[-1] - 1 if fm else steps[-1]  # flow matching holds t_S = 1 fixed
    check_bounds(max(free, 1), args.ab_min, args.ab_max, args.delta)
    srange = resolve_sigma_range(args)
    out = check_output_folder(args.out)
    default_eta = resolve_eta(sampler, None)
    tag = sampler + (f"-eta{eta:g}" if eta is not None and eta != default_eta else "")
    tag += "".join(f"-{k.replace('_', '')}{v:g}" if isinstance(v, float) else f"-{v}"
                   for k, v in options.items())
    names = {S: out / f"schedule_{tag}_{args.loss}_S{S}.json" for S in steps}
    csv_path, png_path = out / "summary.csv", out / "schedules.png"
    for path in [*names.values(), csv_path, png_path]:  # refuse before any work is done
        check_writable(path, args.force)

    spectrum = spectrum_from_args(args)
    noise = noise_from_args(args, spectrum.eigenvalues)
    check_noise_samplers(noise, [sampler])
    fm_kwargs = fm_kwargs_from_args(args, spectrum) if fm else None
    forward = "" if noise.is_white else f", forward noise {noise.label}"
    print(f"spectrum: {spectrum.source} ({spectrum.method}), d = {spectrum.dimension}"
          f"{n_samples_text(spectrum.n_samples)}; sampler {sampler}{eta_text(eta)}, "
          f"loss {args.loss}, method {args.method}{forward}")
    loss_col = args.loss.replace("-", "_")
    rows, panels, failed = [], [], []
    for S in tqdm(steps, desc="optimising", unit="S", disable=None):
        res = optimize_schedule(
            spectrum.eigenvalues, spectrum.mean, S, loss=args.loss, sampler=sampler, eta=eta,
            init=args.init, ab_min=args.ab_min, ab_max=args.ab_max, delta=args.delta,
            method=args.method, spacings=tuple(args.spacing), maxiter=args.maxiter,
            options=options or None,
            sigma_range=srange, noise=noise, fm_kwargs=fm_kwargs,
        )
        if not res.success:
            failed.append((S, res.message))
        baselines = dict(res.baselines)
        best_shift = None
        if fm:  # the best single shift, beside the full schedule
            best_shift = optimal_shift(spectrum.eigenvalues, spectrum.mean, S,
                                       sampler=sampler, loss=args.loss, init=args.init)
            baselines[BEST_SHIFT] = {"w2": best_shift.w2, "kl": best_shift.kl,
                                     "kl_data_gen": best_shift.kl_data_gen,
                                     "shift": best_shift.shift}
            edge = ", at the end of the range searched" if best_shift.on_bound else ""
            tqdm.write(f"S = {S}: best SD3 shift {best_shift.shift:.4g} ({args.loss} "
                       f"{best_shift.fun:.6g}{edge}); sd3-shift {fm_kwargs['shift']:g}: "
                       f"{res.baselines['sd3-shift'][loss_col]:.6g}; optimised: {res.fun:.6g}")
        sched = Schedule(
            alphas_cumprod=res.x, name=f"optimized-{args.loss}", sampler=sampler, eta=eta,
            param=sampler_param(sampler), noise_spectrum=noise.label, loss=args.loss,
            loss_value=res.fun,
            baselines={k: {n: (float(v) if np.isfinite(v) else None) for n, v in d.items()}
                       for k, d in baselines.items()},  # an infinite KL (S = 1) as null
            spectrum=spectrum.provenance(), optimizer=res.summary(),
        )
        sched.save(names[S], force=args.force)
        rows.append({"steps": S, "schedule": f"optimized-{args.loss}", "w2": res.w2,
                     "kl": res.kl, "kl_data_gen": res.kl_data_gen, "optimized": True,
                     "success": res.success, "file": names[S].name,
                     "noise_spectrum": noise.label})
        for name, vals in baselines.items():
            rows.append({"steps": S, "schedule": name, **vals, "optimized": False,
                         "success": None, "file": "", "noise_spectrum": noise.label})
        base_abs = {}
        for name in res.baselines:
            fam, _, spacing = name.partition("/")
            if fm:
                base_abs[name] = fm_baseline_alphas_cumprod(fam, S, **fm_kwargs)
                continue
            extra = {"sigma_range": srange} if fam in SIGMA_BASELINES else {}
            base_abs[name] = baseline_alphas_cumprod(fam, S, spacing=spacing or "linspace",
                                                     **extra)
        if best_shift is not None:
            base_abs[BEST_SHIFT] = best_shift.alphas_cumprod
        panels.append((S, res.x, base_abs))

    table = pd.DataFrame(rows)
    with atomic_write(csv_path, force=args.force) as fh:
        table.to_csv(fh, index=False, float_format="%.10g")
    plot_schedules(panels, png_path, force=args.force,
                   title=f"{spectrum.source}: {sampler}, loss {args.loss}{forward}",
                   param=sampler_param(sampler))
    shown = ["w2", loss_col] if loss_col != "w2" else ["w2", "kl"]
    wide = table.pivot(index="schedule", columns="steps", values=shown)
    wide = wide.sort_values((loss_col, steps[0]))
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        text = wide.to_string(float_format=lambda v: f"{v:.4f}")
    # pandas pads the header rows to the table's width; trailing blanks help no reader
    print("\n".join(line.rstrip() for line in text.splitlines()))
    print(f"wrote {len(names)} schedule file(s), {csv_path.name} and {png_path.name} to {out}/")
    if failed:
        for S, msg in failed:
            print(f"specsched optimize: optimisation did not converge for S = {S}: {msg} "
                  f"(its file records success: false)", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


