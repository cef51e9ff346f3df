"""``specsched sample``: draw samples with a sampler and the exact Wiener denoiser (no torch).

Every sampler runs: the discrete ones (ddim, ddpm, ddpm-large, ddim-ve, ddpm-ve) through
:func:`specsched.sampling.sample_batches`, k-diffusion's (and diffusers' unipc) through
:func:`specsched.sampling.ksamplers.sample_k_batches`, which runs the steps of
:mod:`specsched.theory.ksolvers` (those the closed form is read from) on the schedule's sigmas
(:func:`specsched.theory.kclosed.kdiffusion_sigmas`) in the eigenbasis of the spectrum, then
rotates the samples to pixel space. The samples are written to a ``.npy`` file of shape
``(n, *sample_shape)`` (pixel space when the spectrum has eigenvectors, eigenbasis
coordinates ``(n, d)`` otherwise), float64, batch by batch into a temporary file renamed at
the end (memory O(batch_size x d)). ``--report`` prints one JSON object comparing the
empirical W2 of the samples with the closed form (:mod:`specsched.sampling.stats` for the
estimator and its Monte Carlo error).

``--noise-spectrum`` (docs/theory.md section 9) draws coloured forward noise with the
matching Wiener denoiser (:mod:`specsched.sampling.colour`): the start and every injected
draw are ``C^(1/2) z`` in the eigenbasis (rotated to pixel space by the eigenvectors), for
every sampler under a constant spectrum, and FANS' level-dependent shape runs ddim and ddpm
per direction. A schedule file made for another forward noise is refused before any work
(:meth:`specsched.schedules.Schedule.check_noise_spectrum`), and ``--report`` compares with
:func:`specsched.theory.evaluate_schedule` under the same noise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

from specsched.cli.common import (
    add_eta_arg,
    add_ksampler_option_args,
    add_noise_spectrum_arg,
    add_source_args,
    ksampler_options,
    noise_from_args,
    nonnegative_int,
    positive_int,
    sampler_help,
    spectrum_from_args,
)
from specsched.errors import InputError

#: Arrays of one batch alive at once while sampling (state, denoised estimate, noise, step).
BATCH_ARRAYS = 4
#: The same for k-diffusion's samplers, with the rotation to pixel space: the peak that
#: tracemalloc measured, in arrays of one batch, is 12 for dpmpp-3m-sde (10 for dpmpp-sde and
#: unipc, at most 7 for the others).
KSAMPLER_BATCH_ARRAYS = 12
#: Arrays of one batch that coloured noise adds to the peak (the coloured copy of a draw):
#: tracemalloc measured +1 for k-diffusion's samplers and FANS' ddpm, 0 for the others
#: (d = 256, batches of 4000, pixel space).
COLOURED_BATCH_ARRAYS = 1


def add_parser(sub):
    """Register the ``sample`` subcommand on an argparse subparsers object."""
    from specsched.theory.samplers import sampler_names

    names = sampler_names()
    p = sub.add_parser("sample", help="sample with a schedule and the exact Wiener denoiser",
                       description="Run a sampler (numpy, no torch) on a schedule file with "
                       "the exact Wiener denoiser of a spectrum and save the samples as .npy. "
                       "The same --seed and --batch-size give the same file; another "
                       "--batch-size draws other samples (of the same law).")
    p.add_argument("--schedule", required=True, metavar="FILE.json", help="schedule file")
    p.add_argument("--spectrum", required=True, metavar="SRC",
                   help="spectrum .npz, eigenvalues .npy, samples, image folder or built-in")
    p.add_argument("--n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of numpy's default_rng, an integer >= 0 (default 0)")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy file")
    p.add_argument("--sampler", choices=names, default=None, metavar="SAMPLER",
                   help=sampler_help(names, None) + " (and its eta, when --eta is not given)")
    add_eta_arg(p)
    add_ksampler_option_args(p)
    add_noise_spectrum_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=1024,
                   help="samples per batch (memory bound; default 1024)")
    p.add_argument("--report", action="store_true",
                   help="print JSON: empirical W2 vs closed form with a Monte Carlo error")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_source_args(p)
    p.set_defaults(run=run)
    return p


def _write_npy_header(fh, shape):
    import numpy as np

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f8")),
              "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_2_0(fh, header)


def _free_bytes(path: Path) -> int | None:
    """Free space of the file system that will hold ``path`` (its nearest existing folder)."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_sizes(n: int, batch_size: int, shape, out, arrays: int = BATCH_ARRAYS) -> None:
    """Refuse, before any work, a ``--n`` whose file cannot fit on the disk and a
    ``--batch-size`` whose ``arrays`` arrays of one batch cannot fit in memory (float64)."""
    d = math.prod(shape)
    need, free = 8 * n * d, _free_bytes(Path(out))
    if free is not None and need > free:
        raise InputError(f"--n: {n} samples of shape {tuple(shape)} take {need / 2**30:.3g} GiB "
                         f"as float64, and the folder of {out} has {free / 2**30:.3g} GiB free; "
                         "lower --n or choose another --out")
    batch = arrays * 8 * min(n, batch_size) * d
    memory = _physical_memory()
    if memory is not None and batch > memory:
        raise InputError(f"--batch-size: batches of {min(n, batch_size)} samples of shape "
                         f"{tuple(shape)} need about {batch / 2**30:.3g} GiB, and this machine "
                         f"has {memory / 2**30:.3g} GiB of memory; lower --batch-size")


def resolve_sampling(args, sched) -> tuple[str, float | None, dict]:
    """``(sampler, eta, options)`` to run: the flags, else the schedule file's sampler and
    eta, else ddim; checked before any work (errors name the flag, or the file for what it
    holds). :func:`warn_other_sampler` says, once all is known to run, when the sampler is
    not the file's.

    ``options`` are the k-diffusion options given (``s_noise``, ``r``, ``solver_type``;
    :func:`specsched.theory.samplers.check_sampler_options`). The file's eta is taken only
    with its own sampler, when neither ``--sampler`` nor ``--eta`` is given, as
    ``specsched evaluate`` does.
    """
    from specsched.theory import resolve_eta
    from specsched.theory.samplers import check_sampler_options, sampler_names

    if args.sampler is not None:
        sampler, eta = args.sampler, resolve_eta(args.sampler, args.eta)
    elif sched.sampler is None:
        sampler, eta = "ddim", resolve_eta("ddim", args.eta)
    elif sched.sampler not in sampler_names():  # never run it as if it were DDIM's
        raise InputError(f"{args.schedule}: sampler {sched.sampler!r} (from the file): "
                         f"expected one of {', '.join(sampler_names())}; pass --sampler to "
                         "choose one")
    elif args.eta is not None:
        sampler, eta = sched.sampler, resolve_eta(sched.sampler, args.eta)
    else:
        sampler = sched.sampler
        try:
            eta = resolve_eta(sampler, sched.eta)
        except InputError as exc:
            raise InputError(f"{args.schedule}: sampler {sampler!r}, eta {sched.eta!r} (from "
                             f"the file): {exc}; pass --sampler or --eta to choose "
                             "another") from None
    return sampler, eta, check_sampler_options(sampler, eta, ksampler_options(args))


def warn_other_sampler(args, sched, sampler: str) -> None:
    """One warning when ``sampler`` is not the one the schedule file was made for; called
    once every check has passed, so that a refusal is one line with no warning before it."""
    if sched.sampler is not None and sched.sampler != sampler:
        warnings.warn(f"{args.schedule}: this schedule was made for the sampler "
                      f"{sched.sampler!r}; sampling it with {sampler!r} as --sampler asks",
                      stacklevel=2)


def _k_batches(spectrum, sched, sampler, eta, options, args, shape, rng, noise):
    """``(start, batch)`` of a k-diffusion sampler, run in the eigenbasis: batches of shape
    ``(b, *shape)``, ``x = U v`` in pixel space when the spectrum has eigenvectors ``U`` (the
    layout :func:`~specsched.sampling.sample_batches` gives). The arguments are checked here,
    before the first batch; ``noise``: the forward noise (its model the coloured Wiener
    filter in VE form)."""
    from specsched.sampling.denoisers import WienerDenoiser
    from specsched.sampling.ksamplers import WienerModel, sample_k_batches
    from specsched.theory.kclosed import kdiffusion_sigmas

    # the eigenbasis, mean m = U^T mu
    model = (WienerModel(spectrum.eigenvalues, spectrum.mean) if noise.is_white else
             WienerDenoiser(spectrum.eigenvalues, spectrum.mean, None, "ve", noise))
    U = spectrum.eigenvectors
    batches = sample_k_batches(model, kdiffusion_sigmas(sched.alphas_cumprod), sampler,
                               args.n, spectrum.dimension, rng=rng,
                               options={**options, "eta": eta}, batch_size=args.batch_size,
                               noise_spectrum=noise)
    return ((start, (v if U is None else v @ U.T).reshape(v.shape[0], *shape))
            for start, v in batches)


def run(args) -> int:
    """Sample, write ``args.out`` atomically, optionally print the report; exit code."""
    import numpy as np

    from specsched.fileio import atomic_write, check_writable
    from specsched.sampling.denoisers import WienerDenoiser
    from specsched.sampling.samplers import sample_batches
    from specsched.sampling.stats import RunningMoments, empirical_w2
    from specsched.schedules import Schedule
    from specsched.theory import evaluate_schedule
    from specsched.theory.ksolvers import KSAMPLERS, resolve_options

    check_writable(args.out, args.force)
    sched = Schedule.load(args.schedule)
    sampler, eta, options = resolve_sampling(args, sched)
    spectrum = spectrum_from_args(args)
    noise = noise_from_args(args, spectrum.eigenvalues)
    sched.check_noise_spectrum(noise.label, str(args.schedule))
    pixel = spectrum.eigenvectors is not None
    shape = spectrum.sample_shape if pixel and spectrum.sample_shape else (spectrum.dimension,)
    k = sampler in KSAMPLERS
    check_sizes(args.n, args.batch_size, shape, args.out,
                (KSAMPLER_BATCH_ARRAYS if k else BATCH_ARRAYS)
                + (0 if noise.is_white else COLOURED_BATCH_ARRAYS))
    moments = RunningMoments()
    rng = np.random.default_rng(args.seed)
    if k:
        batches = _k_batches(spectrum, sched, sampler, eta, options, args, shape, rng, noise)
    else:
        batches = sample_batches(WienerDenoiser.from_spectrum(spectrum, noise=noise), sched,
                                 args.n, shape, sampler=sampler, eta=eta, rng=rng,
                                 batch_size=args.batch_size, noise=noise,
                                 eigenvectors=spectrum.eigenvectors)
    warn_other_sampler(args, sched, sampler)  # the samplers checked their arguments
    with atomic_write(args.out, force=args.force, mode="wb") as fh:
        _write_npy_header(fh, (args.n, *shape))
        for _, batch in batches:
            batch = np.ascontiguousarray(batch, dtype="<f8")
            fh.write(batch.tobytes())
            if args.report:
                flat = batch.reshape(batch.shape[0], -1)
                moments.partial_fit(flat @ spectrum.eigenvectors if pixel else flat)
    if not args.report:
        print(f"wrote {args.n} samples of shape {tuple(shape)} ({sampler}, S = {sched.steps}, "
              f"noise {noise.label}, seed {args.seed}) to {args.out}")
        return 0
    lam = spectrum.eigenvalues
    th = evaluate_schedule(lam, spectrum.mean, sched.alphas_cumprod, sampler=sampler, eta=eta,
                           options=options, noise=noise)
    resolved = resolve_options(sampler, eta, **options) if k else {}
    record = {"sampler": sampler, "eta": eta,
              "options": {key: v for key, v in resolved.items() if key != "eta"},
              "steps": sched.steps, "seed": args.seed, "batch_size": args.batch_size,
              "schedule": str(args.schedule), "out": str(args.out),
              "space": "pixel" if pixel else "eigenbasis", "noise_spectrum": noise.label,
              "w2_closed_form": th.w2}
    if args.n >= 2:
        emp = empirical_w2(moments.mean_, moments.variance_, args.n, lam, spectrum.mean)
        record.update(emp.summary())
        record["z_score_w2_squared"] = (
            (emp.w2_squared_debiased - th.w2**2) / emp.se_w2_squared
            if emp.se_w2_squared > 0 else None)
    record["spectrum"] = spectrum.provenance()
    print(json.dumps(record))
    return 0
