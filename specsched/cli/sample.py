"""``specsched sample``: draw samples with the torch-free sampler and the exact Wiener denoiser.

The samples are written to a ``.npy`` file of shape ``(n, *sample_shape)`` (pixel space when
the spectrum has eigenvectors, eigenbasis coordinates ``(n, d)`` otherwise), float64, batch
by batch into a temporary file renamed at the end (memory O(batch_size x d)). ``--report``
prints one JSON object comparing the empirical W2 of the samples with the closed form
(:mod:`specsched.sampling.stats` for the estimator and its Monte Carlo error).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from specsched.cli.common import (
    add_source_args,
    nonnegative_int,
    positive_int,
    spectrum_from_args,
    unit_interval,
)
from specsched.errors import InputError

#: Arrays of one batch alive at once while sampling (state, denoised estimate, noise, step).
BATCH_ARRAYS = 4


def add_parser(sub):
    """Register the ``sample`` subcommand on an argparse subparsers object."""
    from specsched.sampling.samplers import SAMPLER_NAMES

    p = sub.add_parser("sample", help="sample with a schedule and the exact Wiener denoiser",
                       description="Run a sampler (numpy, no torch) on a schedule file with "
                       "the exact Wiener denoiser of a spectrum and save the samples as .npy.")
    p.add_argument("--schedule", required=True, metavar="FILE.json", help="schedule file")
    p.add_argument("--spectrum", required=True, metavar="SRC",
                   help="spectrum .npz, eigenvalues .npy, samples, image folder or built-in")
    p.add_argument("--n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of numpy's default_rng, an integer >= 0 (default 0)")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy file")
    p.add_argument("--sampler", choices=list(SAMPLER_NAMES), default=None,
                   help="default: the schedule file's sampler if it is one of these, else ddim")
    p.add_argument("--eta", type=unit_interval, default=None,
                   help="DDIM-eta in [0, 1] (with --sampler ddim)")
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


def check_sizes(n: int, batch_size: int, shape, out) -> None:
    """Refuse, before any work, a ``--n`` whose file cannot fit on the disk and a
    ``--batch-size`` whose arrays cannot fit in memory (float64)."""
    d = math.prod(shape)
    need, free = 8 * n * d, _free_bytes(Path(out))
    if free is not None and need > free:
        raise InputError(f"--n: {n} samples of shape {tuple(shape)} take {need / 2**30:.3g} GiB "
                         f"as float64, and the folder of {out} has {free / 2**30:.3g} GiB free; "
                         "lower --n or choose another --out")
    batch = BATCH_ARRAYS * 8 * min(n, batch_size) * d
    memory = _physical_memory()
    if memory is not None and batch > memory:
        raise InputError(f"--batch-size: batches of {min(n, batch_size)} samples of shape "
                         f"{tuple(shape)} need about {batch / 2**30:.3g} GiB, and this machine "
                         f"has {memory / 2**30:.3g} GiB of memory; lower --batch-size")


def run(args) -> int:
    """Sample, write ``args.out`` atomically, optionally print the report; exit code."""
    import numpy as np

    from specsched.fileio import atomic_write, check_writable
    from specsched.sampling.denoisers import WienerDenoiser
    from specsched.sampling.samplers import SAMPLER_NAMES, sample_batches
    from specsched.sampling.stats import RunningMoments, empirical_w2
    from specsched.schedules import Schedule
    from specsched.theory import evaluate_schedule, resolve_eta

    check_writable(args.out, args.force)
    sched = Schedule.load(args.schedule)
    if args.sampler is None and sched.sampler is not None and sched.sampler not in SAMPLER_NAMES:
        # never run a schedule made for another sampler as if it were DDIM's, silently
        raise InputError(f"{args.schedule}: made for the sampler {sched.sampler!r}, which "
                         f"`specsched sample` does not run (it runs {', '.join(SAMPLER_NAMES)}); "
                         "pass --sampler to sample it with one of those, or use "
                         "specsched.sampling.ksamplers.sample_k from Python")
    sampler = args.sampler or sched.sampler or "ddim"
    eta = args.eta
    if eta is None and args.sampler is None and sampler == "ddim":
        eta = sched.eta
    eta = resolve_eta(sampler, eta)
    spectrum = spectrum_from_args(args)
    den = WienerDenoiser.from_spectrum(spectrum)
    pixel = spectrum.eigenvectors is not None
    shape = spectrum.sample_shape if pixel and spectrum.sample_shape else (spectrum.dimension,)
    check_sizes(args.n, args.batch_size, shape, args.out)
    moments = RunningMoments()
    rng = np.random.default_rng(args.seed)
    with atomic_write(args.out, force=args.force, mode="wb") as fh:
        _write_npy_header(fh, (args.n, *shape))
        for _, batch in sample_batches(den, sched, args.n, shape, sampler=sampler, eta=eta,
                                       rng=rng, batch_size=args.batch_size):
            batch = np.ascontiguousarray(batch, dtype="<f8")
            fh.write(batch.tobytes())
            if args.report:
                flat = batch.reshape(batch.shape[0], -1)
                moments.partial_fit(flat @ spectrum.eigenvectors if pixel else flat)
    if not args.report:
        print(f"wrote {args.n} samples of shape {tuple(shape)} ({sampler}, S = {sched.steps}, "
              f"seed {args.seed}) to {args.out}")
        return 0
    lam = spectrum.eigenvalues
    th = evaluate_schedule(lam, spectrum.mean, sched.alphas_cumprod, sampler=sampler, eta=eta)
    record = {"sampler": sampler, "eta": eta, "steps": sched.steps, "seed": args.seed,
              "schedule": str(args.schedule), "out": str(args.out),
              "space": "pixel" if pixel else "eigenbasis", "w2_closed_form": th.w2}
    if args.n >= 2:
        emp = empirical_w2(moments.mean_, moments.variance_, args.n, lam, spectrum.mean)
        record.update(emp.summary())
        record["z_score_w2_squared"] = (
            (emp.w2_squared_debiased - th.w2**2) / emp.se_w2_squared
            if emp.se_w2_squared > 0 else None)
    record["spectrum"] = spectrum.provenance()
    print(json.dumps(record))
    return 0
