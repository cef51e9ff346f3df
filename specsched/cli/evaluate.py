"""``specsched evaluate``: closed-form W2 and KL of a schedule on a spectrum."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from specsched.cli.common import (
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
    fm_samplers,
    ksampler_options,
    noise_from_args,
    positive_int,
    resolve_sampler,
    resolve_sigma_range,
    spectrum_from_args,
)
from specsched.errors import InputError


def add_parser(sub):
    """Register the ``evaluate`` subcommand on an argparse subparsers object."""
    from specsched.schedules import BASELINES, SPACINGS, TRAINING_FAMILIES
    from specsched.schedules.exported import LEVELS
    from specsched.schedules.flow import FM_BASELINES
    from specsched.theory.samplers import sampler_names
    from specsched.theory.sde import BETA_MAX, BETA_MIN, SDE_SOLVERS, renamed_solver_message
    from specsched.theory.wiener import PARAMS

    discrete = sampler_names()
    p = sub.add_parser("evaluate", help="W2 and KL of a schedule on a spectrum",
                       description="Closed-form W2 and KL(gen || data) of a sampler run on "
                       "a schedule, for Gaussian data with the given spectrum. The schedule "
                       "may be what `specsched export` wrote, so that what is evaluated is "
                       "what a library will run.")
    p.add_argument("--spectrum", metavar="SRC", default="natural-patches",
                   help="spectrum .npz, eigenvalues .npy, samples, image folder or built-in")
    p.add_argument("--schedule", metavar="NAME|FILE",
                   help=f"a baseline ({', '.join(BASELINES)}; flow matching: "
                   f"{', '.join(FM_BASELINES)}), a schedule JSON file, or what "
                   "export wrote: a diffusers export (its folder or diffusers_schedule.json) "
                   "or an exported array (.json, .txt, .npy) (required for discrete samplers; "
                   "continuous-time solvers use linear beta(t) and take none)")
    p.add_argument("--levels", choices=list(LEVELS), default=None,
                   help="which levels of an export to run: a diffusers export's timesteps "
                   "(what DDPMScheduler / DPMSolverMultistepScheduler run; the default for VP "
                   "samplers) or sigmas (what EulerDiscreteScheduler runs; the default for VE "
                   "samplers); the kind of a bare .npy (sigmas: step 1 first, ascending; "
                   "k-diffusion: descending with a final 0, inferred when so; ab; betas)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="number of steps (required with a baseline name)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="linspace",
                   help="timestep spacing of a baseline on the T = 1000 grid")
    add_sigma_range_arg(p, bounds=False)
    p.add_argument("--training-schedule", choices=list(TRAINING_FAMILIES), default="linear",
                   help="training grid (T = 1000) onto which diffusers-ddpm-large rounds a "
                   "schedule that is not a diffusers export, as export --to diffusers does "
                   "(default linear)")
    add_sampler_args(p, discrete + list(SDE_SOLVERS) + ["diffusers-ddim",
                                                        "diffusers-ddpm-large"], default=None,
                     retired=renamed_solver_message)
    add_ksampler_option_args(p)
    p.add_argument("--param", choices=list(PARAMS), default=None,
                   help="vp, ve or fm: with ve, ddim and ddpm mean ddim-ve and ddpm-ve; with fm, "
                   "ddim and euler mean fm-euler and heun fm-heun (flow matching); a schedule "
                   "file made for one parametrisation is refused under another")
    add_fm_args(p)
    add_noise_spectrum_arg(p)
    p.add_argument("--t-eps", type=float, default=0.0,
                   help="truncation time eps of the continuous-time solvers (default 0)")
    p.add_argument("--beta-min", type=float, default=BETA_MIN,
                   help=f"beta(0) of the continuous-time solvers (default {BETA_MIN})")
    p.add_argument("--beta-max", type=float, default=BETA_MAX,
                   help=f"beta(1) of the continuous-time solvers (default {BETA_MAX})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_source_args(p)
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


def _read_file(args, want_ve: bool):
    """The levels of ``--schedule FILE`` (:func:`specsched.schedules.exported.read_levels`)."""
    from specsched.schedules import BASELINES
    from specsched.schedules.exported import read_levels

    path = Path(args.schedule)
    if path.suffix.lower() not in (".json", ".npy", ".txt") and not path.exists():
        raise InputError(
            f"--schedule: {args.schedule!r} is neither a baseline ({', '.join(BASELINES)}) "
            "nor a schedule or export file"
        )
    lv = read_levels(path, args.levels,
                     diffusers_default="sigmas" if want_ve else "timesteps")
    if args.steps is not None and args.steps != lv.alphas_cumprod.size:
        raise InputError(f"--steps: {args.steps} disagrees with {path}, which has "
                         f"{lv.alphas_cumprod.size} steps")
    return lv


def _file_sampler(lv, sampler, eta, param):
    """The sampler and eta a schedule file names, when --sampler does not; errors name it."""
    from specsched.theory import resolve_eta
    from specsched.theory.samplers import sampler_names

    sched = lv.schedule
    if sched is not None and sched.sampler is not None and sampler is not None \
            and sampler != sched.sampler:
        warnings.warn(f"{lv.source}: this schedule was made for the sampler "
                      f"{sched.sampler!r}; evaluating it with {sampler!r} as --sampler asks",
                      stacklevel=2)
    if sampler is not None or sched is None or sched.sampler is None:
        return sampler, eta
    if sched.sampler not in sampler_names():  # as sample: the file's name, then the choices
        raise InputError(f"{lv.source}: sampler {sched.sampler!r} (from the file): expected one "
                         f"of {', '.join(sampler_names())}; pass --sampler to choose one")
    try:
        sampler = resolve_sampler(sched.sampler, param)
        return sampler, resolve_eta(sampler, sched.eta if eta is None else eta)
    except InputError as exc:
        given = "" if sched.eta is None else f", eta {sched.eta:g}"
        raise InputError(f"{lv.source}: sampler {sched.sampler!r}{given} (from the file): "
                         f"{exc}; pass --sampler to choose another") from None


def _check_file_param(lv, sampler, param) -> None:
    """Refuse a schedule file made for flow matching under ``--param vp`` or ``ve``, and a VP
    or VE file under ``--param fm``: the same levels mean another process (docs/theory.md
    section 10). Without ``--param`` another sampler runs the levels where its mapping
    carries them (a warning names the file's sampler)."""
    from specsched.theory.samplers import sampler_param

    sched = lv.schedule
    if sched is None or param is None:
        return
    own = sched.param
    if (own == "fm") != (param == "fm"):
        hint = (f"--param fm ({', '.join(fm_samplers())})" if own == "fm"
                else f"--param {own} and a {own.upper()} sampler")
        raise InputError(f"{lv.source}: param: the schedule was made for {own!r} "
                         f"(sampler {sched.sampler!r}), not for --param {param} (sampler "
                         f"{sampler!r}, {sampler_param(sampler).upper()}); evaluate it with "
                         f"{hint}", param="param")


def _check_file_noise(lv, noise) -> None:
    """Refuse a schedule file made for another forward noise than ``--noise-spectrum``
    (:meth:`specsched.schedules.Schedule.check_noise_spectrum`); an export's arrays record
    none and are evaluated as asked."""
    if lv.schedule is not None:
        lv.schedule.check_noise_spectrum(noise.label, lv.source)


def _levels_extra(lv) -> dict:
    extra = {"levels": lv.levels}
    if lv.timesteps is not None:
        extra["timesteps"] = [int(t) for t in lv.timesteps]
    return extra


def _evaluate_diffusers_ddpm(args, spectrum, noise):
    from specsched.schedules import BASELINES, TRAINING_FAMILIES, baseline_alphas_cumprod
    from specsched.schedules.export import export_diffusers
    from specsched.theory.unchained import diffusers_ddpm_levels, evaluate_diffusers_ddpm

    if args.eta is not None:
        raise InputError("--eta: diffusers-ddpm-large (DDPMScheduler, variance beta) has no eta")
    if args.init != "normal":
        raise InputError("--init: diffusers-ddpm-large starts from N(0, I), as diffusers does")
    family = args.schedule or "linear"
    extra = {"variance_type": "fixed_large"}
    if family in TRAINING_FAMILIES:
        if args.steps is None:
            raise InputError("--steps: required with --sampler diffusers-ddpm-large and a "
                             "training schedule")
        ab, ts = diffusers_ddpm_levels(args.spacing, args.steps, family=family)
        label, spacing = family, args.spacing
    else:
        if family in BASELINES:
            if args.steps is None:
                raise InputError(f"--steps: required with the baseline schedule {family!r}")
            ab = baseline_alphas_cumprod(family, args.steps, sigma_range=_sigma_range(args))
            label = family
            lv = None
        else:
            lv = _read_file(args, want_ve=False)
            _check_file_noise(lv, noise)
            ab, label = lv.alphas_cumprod, lv.source
            extra.update(_levels_extra(lv))
        if lv is not None and lv.levels == "timesteps":
            ts = lv.timesteps
        elif lv is not None and lv.levels == "sigmas" and lv.training_schedule is not None:
            raise InputError(f"--levels: diffusers-ddpm-large runs DDPMScheduler, which takes "
                             f"timesteps, not the sigmas of {lv.source}")
        else:  # round to the nearest training steps, as export --to diffusers does
            info = export_diffusers(ab, training_schedule=args.training_schedule)
            if info["timesteps"] is None:
                raise InputError(f"--schedule: {info['timesteps_problem']}")
            ab, ts = np.array(info["alphas_cumprod_run"]), np.array(info["timesteps"])
            extra["training_schedule"] = args.training_schedule
        spacing = None
    extra["timesteps"] = [int(t) for t in ts]
    r = evaluate_diffusers_ddpm(spectrum.eigenvalues, spectrum.mean, ab, int(ts[-1]))
    return r, int(ab.size), None, label, spacing, extra


def _sigma_range(args):
    """``--sigma-range`` of a baseline ``--schedule`` (None: EDM's default)."""
    if args.schedule is None and args.sigma_range is not None:
        from specsched.schedules import SIGMA_BASELINES

        raise InputError(f"--sigma-range: applies to --schedule {', '.join(SIGMA_BASELINES)}; "
                         "no --schedule was given")
    return resolve_sigma_range(args, baseline=args.schedule)


def _evaluate_discrete(args, sampler, eta, spectrum, noise):
    from specsched.schedules import BASELINES, TRAINING_FAMILIES, baseline_alphas_cumprod
    from specsched.schedules.flow import FM_BASELINES, fm_baseline_alphas_cumprod
    from specsched.theory import evaluate_schedule, resolve_eta
    from specsched.theory.ksolvers import KSAMPLERS
    from specsched.theory.samplers import sampler_param

    if args.schedule is None:  # name the sampler that would run, as --param makes it
        would_run = resolve_sampler(sampler or "ddim", args.param)
        kind = "the sampler" if would_run in KSAMPLERS else "the discrete sampler"
        raise InputError(f"--schedule: required with {kind} {would_run!r}")
    extra = {}
    if args.schedule in FM_BASELINES:
        if args.levels is not None:
            raise InputError("--levels: applies to export files, not to a baseline name")
        if args.steps is None:
            raise InputError(f"--steps: required with the baseline schedule {args.schedule!r}")
        sampler = resolve_sampler(sampler or "fm-euler", args.param or "fm")
        check_fm_args(args, sampler)
        ab = fm_baseline_alphas_cumprod(args.schedule, args.steps,
                                        **fm_kwargs_from_args(args, spectrum))
        label, spacing = args.schedule, None
    elif args.schedule in BASELINES:
        if args.levels is not None:
            raise InputError("--levels: applies to export files, not to a baseline name")
        if args.steps is None:
            raise InputError(f"--steps: required with the baseline schedule {args.schedule!r}")
        check_steps_fit_training_grid([args.steps])  # the flag's name, as optimize says it
        ab = baseline_alphas_cumprod(args.schedule, args.steps, spacing=args.spacing,
                                     sigma_range=_sigma_range(args))
        label = args.schedule
        spacing = args.spacing if args.schedule in TRAINING_FAMILIES else None
    else:
        want_ve = args.param == "ve" or (sampler is not None
                                         and sampler_param(sampler) == "ve")
        lv = _read_file(args, want_ve)
        _check_file_noise(lv, noise)
        sampler, eta = _file_sampler(lv, sampler, eta, args.param)
        ab, label, spacing = lv.alphas_cumprod, lv.source, None
        extra = _levels_extra(lv)
        _check_file_param(lv, sampler or "ddim", args.param)
    sampler = resolve_sampler(sampler or "ddim", args.param)
    check_fm_args(args, sampler)
    eta = resolve_eta(sampler, eta)
    options = {k: v for k, v in ksampler_options(args).items() if v is not None}
    check_noise_samplers(noise, [sampler])
    r = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, sampler=sampler, eta=eta,
                          init=args.init, options=options, noise=noise)
    return r, int(ab.size), eta, label, spacing, {"sampler": sampler, **extra}


def run(args) -> int:
    """Evaluate the schedule and print the result (one JSON object with ``--json``)."""
    from specsched.theory.sde import SDE_SOLVERS

    if args.sigma_range is not None:  # refused before the spectrum is read
        _sigma_range(args)
    spectrum = spectrum_from_args(args)
    noise = noise_from_args(args, spectrum.eigenvalues)
    if not noise.is_white and args.sampler in (*SDE_SOLVERS, "diffusers-ddim",
                                               "diffusers-ddpm-large"):
        raise InputError(f"--noise-spectrum: {noise.label}: the closed form of "
                         f"{args.sampler!r} is derived for white noise only; use a discrete "
                         "or k-diffusion sampler (--sampler ddim, ...)")
    if args.sampler in SDE_SOLVERS:
        r, steps, eta, label, spacing, extra = _evaluate_sde(args, args.sampler, spectrum)
        sampler = args.sampler
    elif args.sampler == "diffusers-ddim":
        r, steps, eta, label, spacing, extra = _evaluate_diffusers_ddim(args, spectrum)
        sampler = args.sampler
    elif args.sampler == "diffusers-ddpm-large":
        r, steps, eta, label, spacing, extra = _evaluate_diffusers_ddpm(args, spectrum, noise)
        sampler = args.sampler
    else:
        r, steps, eta, label, spacing, extra = _evaluate_discrete(
            args, args.sampler, args.eta, spectrum, noise
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
        "noise_spectrum": noise.label, "spectrum": spectrum.provenance(), **extra,
    }
    if args.sigma_range not in (None, "edm"):
        record["sigma_range"] = list(_sigma_range(args))
    if args.json:
        print(json.dumps(record, allow_nan=False))
    else:
        where = f"{label}/{spacing}" if spacing else label
        forward = "" if noise.is_white else f" under forward noise {noise.label}"
        print(f"{where}, S = {steps}, {sampler}{eta_text(eta)} on {spectrum.source}"
              f"{forward}: "
              f"W2 = {r.w2:.6g}, KL(gen||data) = {r.kl:.6g}, KL(data||gen) = "
              f"{r.kl_data_gen:.6g} nats ({r.kl_excluded} directions below the KL floor)")
    return 0


