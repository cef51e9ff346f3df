"""``specsched sweep``: optimise and compare schedules over step counts, samplers and losses.

A sweep is a grid of *cells* (steps S, sampler, loss). Each cell optimises one schedule
(:func:`specsched.optimize.optimize_schedule`) and evaluates every baseline at the same
(S, sampler); its result is written at once, atomically, to ``OUT/cells/`` and its schedule
to ``OUT/schedules/``. The cells of one (sampler, loss) form a chain over increasing S, each
warm-started from the previous optimum (:func:`specsched.optimize.warm_start`); chains run
in parallel on ``--jobs`` processes. An interrupted sweep
(Ctrl-C, ``kill -9``) resumes where it stopped: finished cells are read back, not redone.
``OUT/sweep.json`` records the configuration that the cells depend on; a sweep into a
folder of another configuration is refused (``--force`` starts over).

Outputs: ``OUT/sweep.csv``, one row per (steps, sampler, schedule, loss) with the schedule's
W2, KL(gen || data) and KL(data || gen), its value of ``loss`` and the optimised schedule's
value of the same loss; ``OUT/sweep.png``, loss against steps (log-log) per sampler, one line
per schedule. Both are derived from the cells and rewritten by every run.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as _wait
from pathlib import Path

import numpy as np

from specsched.errors import InputError

CELL_FORMAT = "specsched.sweep-cell"
MANIFEST_FORMAT = "specsched.sweep"


def cell_name(steps: int, sampler: str, loss: str) -> str:
    """File stem of a cell, e.g. ``S0010_ddim_w2``."""
    return f"S{steps:04d}_{sampler}_{loss}"


def run_cell(eigenvalues, mean, steps, sampler, loss, options, x0=None) -> dict:
    """Optimise one cell and return its JSON-ready record (pure; no files).

    Parameters
    ----------
    eigenvalues, mean : ndarray of shape (n_directions,)
    steps : int
    sampler : str
        A discrete sampler (eta: its own).
    loss : {"w2", "kl", "kl-data-gen"}
    options : dict
        ``init``, ``method``, ``spacings`` (list), ``ab_min``, ``ab_max``, ``delta``,
        ``maxiter`` and optionally ``starts`` for
        :func:`~specsched.optimize.optimize_schedule`.
    x0 : ndarray of shape (steps,), optional
        A warm start.

    Returns
    -------
    dict
        ``format``, ``steps``, ``sampler``, ``eta``, ``loss``, ``optimized``
        (``alphas_cumprod`` list, ``w2``, ``kl``, ``kl_data_gen``, ``value``), ``optimizer``
        summary, ``success``, ``baselines`` (name -> w2/kl/kl_data_gen).
    """
    from specsched.optimize import STARTS, optimize_schedule

    res = optimize_schedule(
        eigenvalues, mean, steps, loss=loss, sampler=sampler, init=options["init"],
        method=options["method"], spacings=tuple(options["spacings"]),
        ab_min=options["ab_min"], ab_max=options["ab_max"], delta=options["delta"],
        maxiter=options["maxiter"], x0=x0, starts=tuple(options.get("starts", STARTS)),
    )
    return {
        "format": CELL_FORMAT, "steps": steps, "sampler": sampler, "eta": res.eta,
        "loss": loss, "success": bool(res.success),
        "optimized": {"alphas_cumprod": res.x.tolist(), "w2": res.w2, "kl": res.kl,
                      "kl_data_gen": res.kl_data_gen, "value": res.fun},
        "optimizer": res.summary(), "baselines": res.baselines,
    }


def _write_cell(record, cell_dir: Path, sched_dir: Path, provenance: dict) -> None:
    """Write a cell's schedule file, then its record (the record marks the cell done)."""
    from specsched.fileio import atomic_write
    from specsched.schedules import Schedule
    from specsched.theory import get_sampler

    sched = Schedule(
        alphas_cumprod=np.asarray(record["optimized"]["alphas_cumprod"]),
        name=f"optimized-{record['loss']}", sampler=record["sampler"], eta=record["eta"],
        param=get_sampler(record["sampler"]).param, loss=record["loss"],
        loss_value=record["optimized"]["value"], baselines=record["baselines"],
        spectrum=provenance, optimizer=record["optimizer"],
    )
    sched.save(sched_dir / f"schedule_{record['sampler']}_{record['loss']}_"
               f"S{record['steps']}.json", force=True)
    name = cell_name(record["steps"], record["sampler"], record["loss"])
    with atomic_write(cell_dir / f"{name}.json", force=True) as fh:
        json.dump(record, fh)


def _chain_job(args):
    """Run one (sampler, loss) chain over increasing S, warm-starting each cell."""
    from specsched.optimize import warm_start

    lam, m, steps, sampler, loss, options, cell_dir, sched_dir, provenance = args
    prev = None
    for S in steps:
        record = _read_cell(Path(cell_dir) / f"{cell_name(S, sampler, loss)}.json")
        if record is None:
            x0 = None if prev is None else warm_start(prev, S)
            with np.errstate(all="ignore"):
                record = run_cell(lam, m, S, sampler, loss, options, x0=x0)
            _write_cell(record, Path(cell_dir), Path(sched_dir), provenance)
        prev = np.asarray(record["optimized"]["alphas_cumprod"])
    return sampler, loss


def sweep_rows(cells, schedules) -> list[dict]:
    """Rows of ``sweep.csv`` from cell records, keeping the baseline families ``schedules``.

    One row per (steps, sampler, schedule, loss): the optimised schedule of the cell's loss
    (``schedule = "optimized-<loss>"``) and each baseline, with ``value`` its value of the
    cell's loss and ``optimized_value`` the optimised schedule's.
    """
    rows = []
    for c in cells:
        key = c["loss"].replace("-", "_")
        base = {"steps": c["steps"], "sampler": c["sampler"], "eta": c["eta"],
                "loss": c["loss"], "optimized_value": c["optimized"]["value"]}
        opt = c["optimized"]
        rows.append({**base, "schedule": f"optimized-{c['loss']}", "w2": opt["w2"],
                     "kl": opt["kl"], "kl_data_gen": opt["kl_data_gen"], "value": opt["value"],
                     "success": c["success"]})
        for name, vals in c["baselines"].items():
            if name.split("/")[0] not in schedules:
                continue
            rows.append({**base, "schedule": name, **vals, "value": vals[key], "success": None})
    return rows


def plot_sweep(table, path, force=True):
    """Loss against steps (log-log): rows of panels = losses, columns = samplers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specsched.fileio import atomic_write

    losses, samplers = sorted(table["loss"].unique()), sorted(table["sampler"].unique())
    fig, axes = plt.subplots(len(losses), len(samplers), squeeze=False,
                             figsize=(4.6 * len(samplers), 3.6 * len(losses)))
    for i, loss in enumerate(losses):
        for j, sampler in enumerate(samplers):
            ax = axes[i][j]
            sub = table[(table["loss"] == loss) & (table["sampler"] == sampler)]
            for name, g in sub.groupby("schedule"):
                g = g.sort_values("steps")
                opt = name.startswith("optimized")
                ax.loglog(g["steps"], g["value"], "k-o" if opt else "-", lw=2.2 if opt else 1,
                          ms=3, label="optimised for this loss" if opt else name)
            ticks = sorted(sub["steps"].unique())
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_title(f"{sampler}: {loss}")
            ax.set_xlabel("steps S")
            ax.set_ylabel({"w2": "W2", "kl": "KL(gen || data) [nats]",
                           "kl-data-gen": "KL(data || gen) [nats]"}[loss])
            ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, force=force, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


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
    from specsched.argtypes import positive_int as _positive_int

    p.add_argument("--maxiter", type=_positive_int, default=1000)
    p.add_argument("--starts", nargs="+", choices=list(BASELINES), default=list(STARTS),
                   metavar="NAME", help="baseline starts of each optimisation, besides the "
                   "warm start from the previous step count (default: "
                   f"{' '.join(STARTS)})")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel worker processes (default: all cores)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true",
                   help="discard the finished cells of an earlier sweep in DIR and start over")
    p.set_defaults(run=run)
    return p


def wait_any(futures, timeout):
    """Wait until one of ``futures`` finishes or ``timeout`` seconds pass."""
    _wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)


def _read_cell(path: Path) -> dict | None:
    """A finished cell's record, or None (absent, or unreadable: then it is redone)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("format") == CELL_FORMAT else None


def _load_cells(cell_dir: Path) -> dict:
    done = {}
    for path in sorted(cell_dir.glob("S*.json")):
        record = _read_cell(path)
        if record is not None:
            done[path.stem] = record
    return done


def run(args) -> int:
    """Run (or resume) a sweep; exit code 0, or 3 when a cell did not converge."""
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.cli import _spectrum_from_args
    from specsched.fileio import atomic_write

    if any(s < 1 for s in args.steps):
        raise InputError(f"--steps: expected integers >= 1, got {args.steps}")
    from specsched.cli import check_steps_fit_training_grid

    check_steps_fit_training_grid(args.steps)
    if args.jobs < 1:
        raise InputError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    spectrum = _spectrum_from_args(args)
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
    done = _load_cells(cell_dir)
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
                _chain_job(job)
                progress()
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = {pool.submit(_chain_job, job) for job in jobs}
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
    done = _load_cells(cell_dir)

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
