"""``specsched sweep``: optimise and compare schedules over step counts, samplers and losses.

Each (steps, sampler, loss) cell is optimised once and saved as it finishes, so a sweep
killed at any point resumes where it stopped; the table and plot are written at the end.
"""

from __future__ import annotations

import contextlib
import json
import sys
from concurrent.futures.process import BrokenProcessPool

from specsched.cli.common import (
    add_bounds_args,
    add_data_args,
    add_noise_spectrum_arg,
    add_sigma_range_arg,
    add_source_args,
    check_noise_samplers,
    check_steps_fit_training_grid,
    noise_from_args,
    positive_int,
    resolve_sigma_range,
    spectrum_from_args,
)
from specsched.cli.pool import run_in_worker, stop_workers, worker_count, worker_pool
from specsched.errors import InputError, OutputExistsError, ResourceError
from specsched.optimize.sweep import (
    MANIFEST_FORMAT,
    cell_name,
    load_cells,
    plot_sweep,
    read_json,
    run_chain,
    stale_temporaries,
    sweep_files,
    sweep_rows,
    wait_any,
)
from specsched.provenance import command_line, header


def add_parser(sub):
    """Register the ``sweep`` subcommand."""
    from specsched.optimize import METHODS, STARTS
    from specsched.schedules import BASELINES, SPACINGS
    from specsched.theory import LOSSES
    from specsched.theory.samplers import sampler_names

    p = sub.add_parser("sweep", help="optimise and compare schedules over step counts",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    add_data_args(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, nargs="+", default=[5, 10, 20, 50, 100])
    budget.add_argument("--nfe", type=positive_int, nargs="+", default=None,
                        help="network-evaluation budgets instead of --steps: each sampler gets "
                        "the most steps that fit (2 S - 1 <= NFE for Heun, DPM-2 and the "
                        "two-stage ancestral/SDE samplers, S <= NFE for the others); sweep.csv "
                        "has the nfe spent")
    names = sampler_names()
    p.add_argument("--samplers", nargs="+", choices=names, default=["ddim", "ddpm"],
                   metavar="SAMPLER", help=f"samplers ({', '.join(names)}); k-diffusion's "
                   "run on the schedule's sigmas with their functions' defaults")
    p.add_argument("--schedules", nargs="+", choices=list(BASELINES), default=list(BASELINES),
                   metavar="NAME", help=f"baselines to compare ({', '.join(BASELINES)})")
    p.add_argument("--losses", nargs="+", choices=list(LOSSES), default=["w2", "kl"],
                   help="losses to optimise, one optimised schedule each")
    add_noise_spectrum_arg(p)
    p.add_argument("--spacing", nargs="+", choices=list(SPACINGS), default=["linspace"])
    p.add_argument("--init", choices=["normal", "marginal"], default="normal")
    p.add_argument("--method", choices=list(METHODS), default="auto")
    add_bounds_args(p)
    add_sigma_range_arg(p, bounds=True)
    p.add_argument("--starts", nargs="+", choices=list(BASELINES), default=list(STARTS),
                   metavar="NAME", help="baseline starts of each optimisation, besides the "
                   "warm start from the previous step count (default: "
                   f"{' '.join(STARTS)})")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="worker processes, at most one per (sampler, loss) chain and per "
                   "available core (default: as many as there are cores)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true",
                   help="discard the files of an earlier sweep in DIR (only those: cells, "
                   "schedules, sweep.csv/png/json) and start over")
    add_source_args(p)
    p.set_defaults(run=run)
    return p


def _prepare_folder(out, manifest, force):
    """Check ``out`` against the manifest; with ``force`` delete an earlier sweep's files."""
    manifest_path = out / "sweep.json"
    if manifest_path.exists() and not force:
        try:
            old = read_json(manifest_path)
        except InputError as exc:  # unreadable, truncated, nested too deeply, ...
            raise InputError(f"{exc}: an unreadable sweep manifest; use --force to start "
                             "over") from None
        if old != json.loads(json.dumps(manifest)):
            raise InputError(
                f"{out}: holds a sweep of another spectrum or options ({manifest_path}); "
                "use another --out, or --force to discard it and start over"
            )
    elif not force:  # a new sweep: never overwrite files it did not write
        earlier = [p for p in sweep_files(out) if p != manifest_path]
        if earlier:
            raise OutputExistsError(
                f"{earlier[0]}: output file exists already, and no {manifest_path.name} says "
                "which sweep wrote it; pass --force to overwrite it (and the files of a sweep "
                "in this folder), or use another --out")
    if force:
        for path in sweep_files(out):
            path.unlink()
    for stale in stale_temporaries(out):  # a run killed while writing
        stale.unlink()


def _run_chains(jobs, processes, cores, progress):
    """Run the chains, in this process or on ``processes`` workers; stop them on any error."""
    if processes == 1:
        for job in jobs:
            run_chain(job)
            progress()
        return
    pool = worker_pool(processes, cores)
    try:
        futures = {pool.submit(run_in_worker, run_chain, job) for job in jobs}
        while futures:
            finished = {f for f in futures if f.done()}
            for f in finished:
                try:
                    f.result()  # re-raise a worker's error
                except BrokenProcessPool:
                    raise ResourceError(
                        "a worker process ended abruptly (killed, or out of memory?); the "
                        "finished cells are kept: run the same sweep again to resume") from None
            futures -= finished
            progress()
            if futures:
                wait_any(futures, timeout=1.0)
    except BaseException:  # Ctrl-C, SIGTERM, a worker's error: no worker outlives the sweep
        stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _steps_of(args, sampler: str) -> list[int]:
    """The step counts of ``sampler``'s cells: ``--steps``, or the most within each ``--nfe``."""
    from specsched.theory.samplers import steps_within_nfe

    if args.nfe is None:
        return sorted(set(args.steps))
    return sorted({steps_within_nfe(sampler, n) for n in args.nfe})


def run(args) -> int:
    """Run (or resume) a sweep; exit code 0, or 3 when a cell did not converge."""
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.fileio import atomic_write, check_output_folder
    from specsched.optimize import check_bounds

    all_steps = sorted({S for smp in args.samplers for S in _steps_of(args, smp)})
    check_steps_fit_training_grid(all_steps)
    check_bounds(max(all_steps), args.ab_min, args.ab_max, args.delta)
    out = check_output_folder(args.out)
    spectrum = spectrum_from_args(args)
    noise = noise_from_args(args, spectrum.eigenvalues)
    check_noise_samplers(noise, args.samplers, flag="--samplers")
    options = {"init": args.init, "method": args.method, "spacings": list(args.spacing),
               "ab_min": args.ab_min, "ab_max": args.ab_max, "delta": args.delta,
               "maxiter": args.maxiter}
    srange = resolve_sigma_range(args)
    if srange is not None:  # only then: a default sweep's manifest stays what it was
        options["sigma_range"] = list(srange)
    if not noise.is_white:  # likewise: a white sweep's manifest is what it was
        options["noise_spectrum"] = noise.label
    # the problem each cell solves; the starts only steer the search, so a sweep resumed
    # with other --starts keeps its finished cells
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "spectrum": spectrum.provenance(),
                "options": options}
    options = {**options, "starts": list(args.starts),
               "noise": None if noise.is_white else noise}  # pickled to the workers
    cell_dir, sched_dir = out / "cells", out / "schedules"
    _prepare_folder(out, manifest, args.force)
    with atomic_write(out / "sweep.json", force=True) as fh:  # creates out/ too
        json.dump(manifest, fh, indent=2)
    for folder in (cell_dir, sched_dir):
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"{folder}: cannot create the folder ({exc.strerror}); "
                             "choose another --out") from None

    wanted = [(S, smp, loss) for smp in args.samplers for S in _steps_of(args, smp)
              for loss in args.losses]
    done = load_cells(cell_dir, noise.label)
    todo = [c for c in wanted if cell_name(*c) not in done]
    lam, m = spectrum.eigenvalues, spectrum.mean
    chains = {}
    for S, smp, loss in wanted:
        chains.setdefault((smp, loss), []).append(S)
    jobs = [(lam, m, steps, smp, loss, options, str(cell_dir), str(sched_dir),
             spectrum.provenance())
            for (smp, loss), steps in chains.items()
            if any(cell_name(S, smp, loss) not in done for S in steps)]
    processes, cores = worker_count(args.jobs, len(jobs))
    jobs_text = f"--jobs {args.jobs}, " if args.jobs is not None else ""
    forward = "" if noise.is_white else f" under forward noise {noise.label}"
    print(f"sweep of {spectrum.source}{forward}: {len(wanted)} cells, {len(wanted) - len(todo)} "
          f"already done, {len(todo)} to run: {len(jobs)} chain(s) on {processes} "
          f"process(es) ({jobs_text}{cores} core(s))")
    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc="cells", unit="cell",
               disable=None)

    def progress():
        finished = {p.stem for p in cell_dir.glob("S*.json")}
        bar.n = sum(cell_name(*c) in finished for c in wanted)
        bar.refresh()

    try:
        _run_chains(jobs, processes, cores, progress)
    finally:
        bar.close()
        for stale in stale_temporaries(out):  # a stopped worker's, should it have left one
            with contextlib.suppress(OSError):
                stale.unlink()
    done = load_cells(cell_dir, noise.label)

    cells = [done[cell_name(*c)] for c in wanted]
    table = pd.DataFrame(sweep_rows(cells, set(args.schedules)))
    with atomic_write(out / "sweep.csv", force=True) as fh:
        fh.write(header(command_line(  # the command and the code version
            "specsched sweep", sys.argv[2:] if sys.argv[1:2] == ["sweep"] else [])))
        table.to_csv(fh, index=False, float_format="%.10g")
    plot_sweep(table, out / "sweep.png", force=True)
    failed = [c for c in cells if not c["success"]]
    print(f"wrote {out / 'sweep.csv'} ({len(table)} rows), {out / 'sweep.png'} and "
          f"{len(cells)} schedule files in {sched_dir}/")
    if failed:
        names = ", ".join(cell_name(c["steps"], c["sampler"], c["loss"]) for c in failed)
        print(f"specsched sweep: {len(failed)} cell(s) did not converge: {names}",
              file=sys.stderr)
        return 3
    return 0
