"""``specsched sweep``: optimise and compare schedules over step counts, samplers and losses.

Each (steps, sampler, loss) cell is optimised once and saved as it finishes, so a sweep
killed at any point resumes where it stopped; the table and plot are written at the end.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from specsched.cli.common import (
    add_source_args,
    check_steps_fit_training_grid,
    positive_int,
    spectrum_from_args,
)
from specsched.errors import InputError
from specsched.optimize import check_problem
from specsched.optimize.sweep import (
    MANIFEST_FORMAT,
    cell_name,
    load_cells,
    plot_sweep,
    run_chain,
    sweep_rows,
    wait_any,
)


def add_parser(sub):
    """Register the ``sweep`` subcommand."""
    from specsched.optimize import AB_MAX, AB_MIN, DELTA, METHODS, STARTS
    from specsched.schedules import BASELINES, SPACINGS
    from specsched.theory import LOSSES, SAMPLERS

    p = sub.add_parser("sweep", help="optimise and compare schedules over step counts",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="SRC", help="samples (as for optimize)")
    src.add_argument("--spectrum", metavar="SRC", help="spectrum (as for optimize)")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=["ddim", "ddpm"],
                   metavar="SAMPLER", help=f"discrete samplers ({', '.join(SAMPLERS)})")
    p.add_argument("--schedules", nargs="+", choices=list(BASELINES), default=list(BASELINES),
                   metavar="NAME", help=f"baselines to compare ({', '.join(BASELINES)})")
    p.add_argument("--losses", nargs="+", choices=list(LOSSES), default=["w2", "kl"],
                   help="losses to optimise, one optimised schedule each")
    p.add_argument("--spacing", nargs="+", choices=list(SPACINGS), default=["linspace"])
    p.add_argument("--init", choices=["normal", "marginal"], default="normal")
    p.add_argument("--method", choices=list(METHODS), default="auto")
    p.add_argument("--ab-min", type=float, default=AB_MIN)
    p.add_argument("--ab-max", type=float, default=AB_MAX)
    p.add_argument("--delta", type=float, default=DELTA)
    p.add_argument("--maxiter", type=positive_int, default=1000)
    p.add_argument("--starts", nargs="+", choices=list(BASELINES), default=list(STARTS),
                   metavar="NAME", help="baseline starts of each optimisation, besides the "
                   "warm start from the previous step count (default: "
                   f"{' '.join(STARTS)})")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel worker processes (default: all cores)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true",
                   help="discard the finished cells of an earlier sweep in DIR and start over")
    add_source_args(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Run (or resume) a sweep; exit code 0, or 3 when a cell did not converge."""
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.fileio import atomic_write

    if any(s < 1 for s in args.steps):
        raise InputError(f"--steps: expected integers >= 1, got {args.steps}")
    check_steps_fit_training_grid(args.steps)
    if args.jobs < 1:
        raise InputError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    for S in args.steps:  # bounds before the data are read
        for loss in args.losses:
            check_problem(S, loss, args.ab_min, args.ab_max, args.delta, args.method)
    spectrum = spectrum_from_args(args)
    options = {"init": args.init, "method": args.method, "spacings": list(args.spacing),
               "ab_min": args.ab_min, "ab_max": args.ab_max, "delta": args.delta,
               "maxiter": args.maxiter}
    # the problem each cell solves; the starts only steer the search, so a sweep resumed
    # with other --starts keeps its finished cells
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "spectrum": spectrum.provenance(),
                "options": options}
    options = {**options, "starts": list(args.starts)}
    cell_dir, sched_dir = out / "cells", out / "schedules"
    manifest_path = out / "sweep.json"
    if manifest_path.exists() and not args.force:
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{manifest_path}: unreadable sweep manifest ({exc}); "
                             "use --force to start over") from exc
        if old != json.loads(json.dumps(manifest)):
            raise InputError(
                f"{out}: holds a sweep of another spectrum or options ({manifest_path}); "
                "use another --out, or --force to discard it and start over"
            )
    if args.force:
        for path in [*cell_dir.glob("*.json"), *sched_dir.glob("*.json")]:
            path.unlink()
    cell_dir.mkdir(parents=True, exist_ok=True)
    sched_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*cell_dir.glob(".*.tmp"), *sched_dir.glob(".*.tmp"), *out.glob(".*.tmp")]:
        stale.unlink()  # temporary files of a run that was killed while writing
    with atomic_write(manifest_path, force=True) as fh:
        json.dump(manifest, fh, indent=2)

    wanted = [(S, smp, loss) for S in sorted(set(args.steps)) for smp in args.samplers
              for loss in args.losses]
    done = load_cells(cell_dir)
    todo = [c for c in wanted if cell_name(*c) not in done]
    lam, m = spectrum.eigenvalues, spectrum.mean
    chains = {}
    for S, smp, loss in wanted:
        chains.setdefault((smp, loss), []).append(S)
    jobs = [(lam, m, steps, smp, loss, options, str(cell_dir), str(sched_dir),
             spectrum.provenance())
            for (smp, loss), steps in chains.items()
            if any(cell_name(S, smp, loss) not in done for S in steps)]
    print(f"sweep of {spectrum.source}: {len(wanted)} cells, {len(wanted) - len(todo)} "
          f"already done, {len(todo)} to run in {len(jobs)} chain(s) on "
          f"{max(1, min(args.jobs, len(jobs)))} process(es)")
    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc="cells", unit="cell",
               disable=None)

    def progress():
        finished = {p.stem for p in cell_dir.glob("S*.json")}
        bar.n = sum(cell_name(*c) in finished for c in wanted)
        bar.refresh()

    try:
        if args.jobs == 1 or len(jobs) <= 1:
            for job in jobs:
                run_chain(job)
                progress()
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = {pool.submit(run_chain, job) for job in jobs}
                while futures:
                    finished = {f for f in futures if f.done()}
                    for f in finished:
                        f.result()  # re-raise a worker's error
                    futures -= finished
                    progress()
                    if futures:
                        wait_any(futures, timeout=1.0)
    finally:
        bar.close()
    done = load_cells(cell_dir)

    cells = [done[cell_name(*c)] for c in wanted]
    table = pd.DataFrame(sweep_rows(cells, set(args.schedules)))
    with atomic_write(out / "sweep.csv", force=True) as fh:
        fh.write(f"# specsched sweep {' '.join(sys.argv[2:]) if sys.argv[1:2] == ['sweep'] else ''}"
                 .rstrip() + "\n")
        table.to_csv(fh, index=False, float_format="%.10g")
    plot_sweep(table, out / "sweep.png")
    failed = [c for c in cells if not c["success"]]
    print(f"wrote {out / 'sweep.csv'} ({len(table)} rows), {out / 'sweep.png'} and "
          f"{len(cells)} schedule files in {sched_dir}/")
    if failed:
        names = ", ".join(cell_name(c["steps"], c["sampler"], c["loss"]) for c in failed)
        print(f"specsched sweep: {len(failed)} cell(s) did not converge: {names}",
              file=sys.stderr)
        return 3
    return 0
