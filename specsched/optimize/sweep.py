"""Sweeps over step counts, samplers and losses: the cells, their chains and the summary table.

A sweep is a grid of *cells* (steps S, sampler, loss), all under one forward noise spectrum
(``--noise-spectrum``, docs/theory.md section 9; white by default). Each cell optimises one
schedule (:func:`specsched.optimize.optimize_schedule`) and evaluates every baseline at the same
(S, sampler); its result is written at once, atomically, to ``OUT/cells/`` and its schedule
to ``OUT/schedules/``. The cells of one (sampler, loss) form a chain over increasing S, each
warm-started from the previous optimum (:func:`specsched.optimize.warm_start`); chains run
in parallel on ``--jobs`` processes. An interrupted sweep
(Ctrl-C, ``kill -9``) resumes where it stopped: finished cells are read back, not redone; a
cell file that is unreadable, malformed or not of this cell is redone. ``OUT/sweep.json``
records the configuration that the cells depend on; a sweep into a folder of another
configuration is refused (``--force`` starts over, deleting only the files a sweep writes:
:func:`sweep_files`).

Outputs: ``OUT/sweep.csv``, one row per (steps, sampler, schedule, loss) with the schedule's
W2, KL(gen || data) and KL(data || gen), its value of ``loss``, the optimised schedule's
value of the same loss and the noise spectrum's label; ``OUT/sweep.png``, loss against steps
(log-log) per sampler, one line per schedule. Both are derived from the cells and rewritten
by every run.
"""

from __future__ import annotations

import functools
import json
import re
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as _wait
from pathlib import Path

import numpy as np

from specsched.errors import InputError
from specsched.fileio import temporary_files
from specsched.theory.noise import noise_spectrum_label
from specsched.theory.samplers import nfe_of

CELL_FORMAT = "specsched.sweep-cell"
MANIFEST_FORMAT = "specsched.sweep"
SCHEDULE_FORMAT = "specsched.schedule"
#: Names of the files a sweep writes, per folder (relative to OUT): what ``--force`` may
#: delete, and whose temporary files a new run removes.
CELL_RE = re.compile(
    r"^S(?P<steps>[0-9]{4,})_(?P<sampler>[a-z0-9-]+)_(?P<loss>[a-z0-9-]+)\.json$")
SCHEDULE_RE = re.compile(r"^schedule_[a-z0-9-]+_[a-z0-9-]+_S[0-9]+\.json$")
TABLE_NAMES = ("sweep.json", "sweep.csv", "sweep.png")

_NUMBER = {"type": "number"}
_LOSSES = {"type": "object", "required": ["w2", "kl", "kl_data_gen"],
           "properties": {"w2": _NUMBER, "kl": _NUMBER, "kl_data_gen": _NUMBER}}
#: What :func:`read_cell` accepts (besides steps/sampler/loss matching the file name).
CELL_SCHEMA = {
    "type": "object",
    "required": ["format", "steps", "sampler", "eta", "loss", "success", "optimized",
                 "optimizer", "baselines"],
    "properties": {
        "format": {"const": CELL_FORMAT},
        "steps": {"type": "integer", "minimum": 1},
        "sampler": {"type": "string"}, "loss": {"type": "string"},
        "noise_spectrum": {"type": "string"},
        "eta": {"type": ["number", "null"]},
        "success": {"type": "boolean"},
        "optimized": {
            "type": "object", "required": ["alphas_cumprod", "w2", "kl", "kl_data_gen", "value"],
            "properties": {
                "alphas_cumprod": {"type": "array", "minItems": 1,
                                   "items": {"type": "number", "exclusiveMinimum": 0,
                                             "exclusiveMaximum": 1}},
                "w2": _NUMBER, "kl": _NUMBER, "kl_data_gen": _NUMBER, "value": _NUMBER}},
        "optimizer": {"type": "object"},
        "baselines": {"type": "object", "additionalProperties": _LOSSES},
    },
}


@functools.cache
def _cell_validator():
    import jsonschema  # deferred, as in specsched.schedules: `specsched --help` stays light

    return jsonschema.Draft202012Validator(CELL_SCHEMA)


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
        ``maxiter`` and optionally ``starts``, ``sigma_range`` (``[sigma_min,
        sigma_max]`` of the sigma baselines) and ``noise`` (a
        :class:`~specsched.theory.noise.NoiseSpectrum` or None for white) for
        :func:`~specsched.optimize.optimize_schedule`.
    x0 : ndarray of shape (steps,), optional
        A warm start.

    Returns
    -------
    dict
        ``format``, ``steps``, ``sampler``, ``eta``, ``loss``, ``noise_spectrum`` (the
        noise's label), ``optimized`` (``alphas_cumprod`` list, ``w2``, ``kl``,
        ``kl_data_gen``, ``value``), ``optimizer`` summary, ``success``, ``baselines``
        (name -> w2/kl/kl_data_gen).
    """
    from specsched.optimize import STARTS, optimize_schedule

    res = optimize_schedule(
        eigenvalues, mean, steps, loss=loss, sampler=sampler, init=options["init"],
        method=options["method"], spacings=tuple(options["spacings"]),
        ab_min=options["ab_min"], ab_max=options["ab_max"], delta=options["delta"],
        maxiter=options["maxiter"], x0=x0, starts=tuple(options.get("starts", STARTS)),
        sigma_range=options.get("sigma_range"), noise=options.get("noise"),
    )
    return {
        "format": CELL_FORMAT, "steps": steps, "sampler": sampler, "eta": res.eta,
        "loss": loss, "noise_spectrum": noise_spectrum_label(options.get("noise")),
        "success": bool(res.success),
        "optimized": {"alphas_cumprod": res.x.tolist(), "w2": res.w2, "kl": res.kl,
                      "kl_data_gen": res.kl_data_gen, "value": res.fun},
        "optimizer": res.summary(), "baselines": res.baselines,
    }


def _write_cell(record, cell_dir: Path, sched_dir: Path, provenance: dict) -> None:
    """Write a cell's schedule file, then its record (the record marks the cell done)."""
    from specsched.fileio import atomic_write
    from specsched.schedules import Schedule
    from specsched.theory.samplers import sampler_param

    sched = Schedule(
        alphas_cumprod=np.asarray(record["optimized"]["alphas_cumprod"]),
        name=f"optimized-{record['loss']}", sampler=record["sampler"], eta=record["eta"],
        param=sampler_param(record["sampler"]), noise_spectrum=cell_noise(record),
        loss=record["loss"],
        loss_value=record["optimized"]["value"], baselines=record["baselines"],
        spectrum=provenance, optimizer=record["optimizer"],
    )
    sched.save(sched_dir / f"schedule_{record['sampler']}_{record['loss']}_"
               f"S{record['steps']}.json", force=True)
    name = cell_name(record["steps"], record["sampler"], record["loss"])
    with atomic_write(cell_dir / f"{name}.json", force=True) as fh:
        json.dump(record, fh)


def run_chain(args):
    """Run one (sampler, loss) chain over increasing S, warm-starting each cell."""
    from specsched.optimize import warm_start

    lam, m, steps, sampler, loss, options, cell_dir, sched_dir, provenance = args
    noise = noise_spectrum_label(options.get("noise"))
    prev = None
    for S in steps:
        record = read_cell(Path(cell_dir) / f"{cell_name(S, sampler, loss)}.json", noise)
        if record is None:
            x0 = None if prev is None else warm_start(prev, S)
            with np.errstate(all="ignore"):
                record = run_cell(lam, m, S, sampler, loss, options, x0=x0)
            _write_cell(record, Path(cell_dir), Path(sched_dir), provenance)
        prev = np.asarray(record["optimized"]["alphas_cumprod"])
    return sampler, loss


def sweep_rows(cells, schedules) -> list[dict]:
    """Rows of ``sweep.csv`` from cell records, keeping the baseline families ``schedules``.

    One row per (steps, sampler, schedule, loss), with ``nfe`` the network evaluations the
    sampler spends in those steps (:func:`specsched.theory.samplers.nfe_of`) and
    ``noise_spectrum`` the forward noise of the cell (:func:`cell_noise`): the optimised
    schedule of the cell's loss
    (``schedule = "optimized-<loss>"``) and each baseline, with ``value`` its value of the
    cell's loss and ``optimized_value`` the optimised schedule's.
    """
    rows = []
    for c in cells:
        key = c["loss"].replace("-", "_")
        base = {"steps": c["steps"], "nfe": nfe_of(c["sampler"], c["steps"]),
                "sampler": c["sampler"], "eta": c["eta"],
                "loss": c["loss"], "noise_spectrum": cell_noise(c),
                "optimized_value": c["optimized"]["value"]}
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


def wait_any(futures, timeout):
    """Wait until one of ``futures`` finishes or ``timeout`` seconds pass."""
    _wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)


def read_json(path: Path):
    """The JSON value in ``path``; InputError naming the file if it cannot be read or parsed
    (truncated, not UTF-8, NaN literals, nested too deeply for the parser)."""

    def no_constants(name):
        raise ValueError(f"{name} is not a finite number")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read") from None
    except ValueError as exc:  # json.JSONDecodeError, NaN/Infinity
        raise InputError(f"{path}: invalid JSON ({exc})") from None


def cell_noise(record: dict) -> str:
    """The forward noise label of a cell record (a cell of an earlier version, without the
    field, is white)."""
    return record.get("noise_spectrum", "white")


def read_cell(path: Path, noise_spectrum: str = "white") -> dict | None:
    """A finished cell's record, or None: absent, unreadable, malformed (:data:`CELL_SCHEMA`),
    not the cell its name says, or of another forward noise than ``noise_spectrum`` (a
    :attr:`~specsched.theory.noise.NoiseSpectrum.label`). Such a cell is redone."""
    try:
        record = read_json(path)
    except InputError:
        return None
    m = CELL_RE.match(path.name)
    if m is None or next(_cell_validator().iter_errors(record), None) is not None:
        return None
    ab = record["optimized"]["alphas_cumprod"]
    if (record["steps"], record["sampler"], record["loss"]) != \
            (int(m["steps"]), m["sampler"], m["loss"]) or len(ab) != record["steps"] \
            or not np.all(np.diff(ab) < 0) or cell_noise(record) != noise_spectrum:
        return None
    return record


def load_cells(cell_dir: Path, noise_spectrum: str = "white") -> dict:
    """Every finished cell in ``cell_dir`` of the forward noise ``noise_spectrum``:
    ``{file stem: record}`` (see :func:`read_cell`)."""
    done = {}
    for path in sorted(cell_dir.glob("S*.json")):
        record = read_cell(path, noise_spectrum)
        if record is not None:
            done[path.stem] = record
    return done


def _holds_format(path: Path, fmt: str) -> bool:
    try:
        value = read_json(path)
    except InputError:
        return False
    return isinstance(value, dict) and value.get("format") == fmt


def sweep_files(out: Path) -> list[Path]:
    """The files of an earlier sweep in ``out``, and only those: what ``--force`` deletes.

    Cells (``cells/S0010_ddim_w2.json``) and schedules
    (``schedules/schedule_ddim_w2_S10.json``) named as a sweep names them *and* holding a
    sweep cell's or a schedule file's ``format``, with ``sweep.csv``, ``sweep.png`` and the
    manifest ``sweep.json``. Any other file (a user's own ``.json`` files in these folders)
    is not listed.
    """
    found = []
    for folder, pattern, fmt in ((out / "cells", CELL_RE, CELL_FORMAT),
                                 (out / "schedules", SCHEDULE_RE, SCHEDULE_FORMAT)):
        if folder.is_dir():
            found += [p for p in sorted(folder.iterdir())
                      if pattern.match(p.name) and p.is_file() and not p.is_symlink()
                      and _holds_format(p, fmt)]
    found += [out / name for name in TABLE_NAMES
              if (out / name).is_file() and not (out / name).is_symlink()]
    return found


def stale_temporaries(out: Path) -> list[Path]:
    """Temporary files that a sweep killed while writing left in ``out`` (only a sweep's)."""
    return [*temporary_files(out / "cells", "S*.json"),
            *temporary_files(out / "schedules", "schedule_*.json"),
            *(p for name in TABLE_NAMES for p in temporary_files(out, name))]
