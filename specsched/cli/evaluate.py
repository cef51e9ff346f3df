"""``specsched evaluate``: closed-form W2 and KL of a schedule on a spectrum."""

from __future__ import annotations

import json
import math
from pathlib import Path

from specsched.cli.common import add_sampler_args, eta_text, positive_int, resolve_sampler
from specsched.errors import InputError


def add_parser(sub):
    """Register the ``evaluate`` subcommand on an argparse subparsers object."""
    from specsched.schedules import BASELINES, SPACINGS
    from specsched.theory import SAMPLERS
    from specsched.theory.sde import BETA_MAX, BETA_MIN, SDE_SOLVERS

    discrete = list(SAMPLERS)
    p = sub.add_parser("evaluate", help="W2 and KL of a schedule on a spectrum",
                       description="Closed-form W2 and KL(gen || data) of a sampler run on "
                       "a schedule, for Gaussian data with the given spectrum.")
    p.add_argument("--spectrum", metavar="SRC", default="natural-patches",
                   help="spectrum .npz, eigenvalues .npy, samples, image folder or built-in")
    p.add_argument("--schedule", metavar="NAME|FILE.json",
                   help=f"a baseline ({', '.join(BASELINES)}) or a schedule JSON file "
                   "(required for discrete samplers; continuous-time solvers use linear "
                   "beta(t) and take none)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="number of steps (required with a baseline name)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="linspace",
                   help="timestep spacing of a baseline on the T = 1000 grid")
    add_sampler_args(p, discrete + list(SDE_SOLVERS) + ["diffusers-ddim"], default=None)
    p.add_argument("--param", choices=["vp", "ve"], default=None,
                   help="vp or ve: with ve, ddim and ddpm mean ddim-ve and ddpm-ve")
    p.add_argument("--t-eps", type=float, default=0.0,
                   help="truncation time eps of the continuous-time solvers (default 0)")
    p.add_argument("--beta-min", type=float, default=BETA_MIN,
                   help=f"beta(0) of the continuous-time solvers (default {BETA_MIN})")
    p.add_argument("--beta-max", type=float, default=BETA_MAX,
                   help=f"beta(1) of the continuous-time solvers (default {BETA_MAX})")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p.set_defaults(run=run)
    return p


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
        raise InputError(f"--schedule: required with the discrete sampler {sampler or 'ddim'!r}")
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
    sampler = resolve_sampler(sampler or "ddim", args.param)
    eta = resolve_eta(sampler, eta)
    r = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, sampler=sampler, eta=eta,
                          init=args.init)
    return r, int(ab.size), eta, label, spacing, {"sampler": sampler}


def run(args) -> int:
    """Evaluate the schedule and print the result (one JSON object with ``--json``)."""
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
        print(f"{where}, S = {steps}, {sampler} (eta = {eta_text(eta)}) on {spectrum.source}: "
              f"W2 = {r.w2:.6g}, KL(gen||data) = {r.kl:.6g}, KL(data||gen) = "
              f"{r.kl_data_gen:.6g} nats ({r.kl_excluded} directions below the KL floor)")
    return 0


