"""W2 and KL of k-diffusion's samplers at equal NFE: optimised schedules against the baselines.

For every sampler x NFE budget, optimises a schedule for that sampler (SLSQP on logSNR,
:func:`specsched.optimize.optimize_schedule`) and evaluates it beside the karras,
kl_optimal, exponential, linear and cosine baselines with the closed form
(:func:`specsched.theory.evaluate_schedule`, docs/theory.md sections 3-4). Writes, under
``--out``:

- ``table.csv``: one row per (sampler, NFE, schedule): spectrum, sampler, nfe_budget, nfe
  (the NFE actually spent), steps, schedule, w2, kl (gen || data, nats), kl_data_gen, success
  (the optimiser's, optimised rows only); rewritten atomically after every finished cell, so
  a crash loses at most the cell under way, and a rerun skips the cells already there;
- ``schedules/<sampler>_nfe<N>.json``: each optimised schedule (specsched.schedules.Schedule),
  reused (not re-optimised) by a rerun;
- ``w2_vs_nfe.png``: log-y W2 against NFE, one panel per sampler, one line per schedule;
- ``README.md``: the best sampler + schedule per budget and DPM-Solver++(2M) at NFE 10.

NFE rule: a budget N runs the largest step count S with ``nfe(S) <= N``; two-stage samplers
(heun, dpm-2, dpm-2-ancestral, dpmpp-2s-ancestral, dpmpp-sde) spend ``2 S - 1``, so an even
budget runs at ``N - 1`` evaluations, recorded in the ``nfe`` column.

    python benchmarks/solvers_table.py --spectrum cifar10 [--nfe 5 8 10 15 20 50]
        [--samplers dpmpp-2m heun ...] [--out results/solvers_cifar10/] [--loss w2]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from specsched.fileio import atomic_write
from specsched.optimize import AB_MAX, AB_MIN, optimize_schedule
from specsched.provenance import header, header_lines, png_metadata
from specsched.schedules import (
    SIGMA_BASELINES,
    Schedule,
    baseline_alphas_cumprod,
    sigma_range_from_bounds,
)
from specsched.spectrum import load_spectrum
from specsched.theory import LOSSES, evaluate_schedule
from specsched.theory.ksolvers import KSAMPLERS
from specsched.theory.samplers import steps_within_nfe

#: The baselines of every cell, in the figure's order.
BASELINE_NAMES = ("karras", "kl_optimal", "exponential", "linear", "cosine")
OPTIMISED = "optimised"
COLUMNS = ["spectrum", "sampler", "nfe_budget", "nfe", "steps", "schedule", "w2", "kl",
           "kl_data_gen", "success", "note"]
QUICK_NFE = (5, 10, 20)


def losses(spectrum, sampler, ab):
    """The closed-form :class:`LossReport` of ``sampler`` on ``ab`` (finite, or an error)."""
    r = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, sampler=sampler)
    if not np.isfinite(r.w2):
        raise RuntimeError(f"{sampler}: W2 = {r.w2} on {spectrum.source}")
    return r


def row(spectrum, sampler, budget, steps, schedule, ab, success=None):
    """One table row: the closed-form losses of ``sampler`` on ``ab``."""
    r = losses(spectrum, sampler, ab)
    return {"spectrum": spectrum.source, "sampler": sampler, "nfe_budget": budget,
            "nfe": KSAMPLERS[sampler].nfe(steps), "steps": steps, "schedule": schedule,
            "w2": r.w2, "kl": r.kl, "kl_data_gen": r.kl_data_gen, "success": success,
            "note": ""}


def finite_only(d):
    """``d`` without its non-finite numbers (a Schedule file takes finite ones only)."""
    if isinstance(d, dict):
        return {k: finite_only(v) for k, v in d.items()
                if not (isinstance(v, float) and not np.isfinite(v))}
    return d


def optimised_schedule(spectrum, sampler, steps, loss, path: Path) -> Schedule:
    """The schedule optimised for ``sampler`` at ``steps``, loaded from ``path`` if saved."""
    if path.exists():
        sched = Schedule.load(path)
        if sched.sampler == sampler and sched.steps == steps and sched.loss == loss:
            return sched
    res = optimize_schedule(spectrum.eigenvalues, spectrum.mean, steps, sampler=sampler,
                            loss=loss)
    sched = Schedule(alphas_cumprod=res.x, name=f"optimized-{loss}", sampler=sampler,
                     loss=loss, loss_value=res.fun,
                     baselines=finite_only({k: {"w2": v["w2"], "kl": v["kl"]}
                                            for k, v in res.baselines.items()}),
                     spectrum=spectrum.provenance(),
                     optimizer=finite_only(res.summary()))
    sched.save(path, force=True)
    return sched


def run_cell(spectrum, sampler, budget, loss, sigma_range, schedule_dir):
    """All rows of one (sampler, budget) cell."""
    steps = steps_within_nfe(sampler, budget)
    sched = optimised_schedule(spectrum, sampler, steps, loss,
                               schedule_dir / f"{sampler}_nfe{budget}.json")
    rows = [row(spectrum, sampler, budget, steps, OPTIMISED, sched.alphas_cumprod,
                success=bool(sched.optimizer.get("success")))]
    for name in BASELINE_NAMES:
        extra = {"sigma_range": sigma_range} if name in SIGMA_BASELINES else {}
        rows.append(row(spectrum, sampler, budget, steps, name,
                        baseline_alphas_cumprod(name, steps, **extra)))
    return rows


def write_table(rows, path: Path, command: str):
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(
        ["sampler", "nfe_budget", "schedule"], kind="stable")
    with atomic_write(path, force=True) as fh:
        fh.write(header(command))
        table.to_csv(fh, index=False, float_format="%.10g")
    return table


def plot(table: pd.DataFrame, path: Path, title: str, command: str):
    """One log-log W2-vs-NFE panel per sampler (a line per schedule), and a last panel with
    every sampler's optimised schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samplers = [s for s in KSAMPLERS if s in set(table["sampler"])]
    n = len(samplers) + (len(samplers) > 1)
    cols = min(4, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False,
                             sharey=True)
    ticks = sorted(set(table["nfe_budget"]))
    styles = {OPTIMISED: dict(color="k", lw=2.2, marker="o", ms=3)}
    flat = list(axes.flat)
    for ax, sampler in zip(flat, samplers, strict=False):
        sub = table[table["sampler"] == sampler]
        for name in (OPTIMISED, *BASELINE_NAMES):
            line = sub[sub["schedule"] == name].sort_values("nfe")
            ax.plot(line["nfe"], line["w2"], label=name,
                    **styles.get(name, dict(lw=1, marker=".", alpha=0.8)))
        ax.set_title(sampler, fontsize=9)
    if len(samplers) > 1:
        ax = flat[len(samplers)]
        opt = table[table["schedule"] == OPTIMISED]
        for i, sampler in enumerate(samplers):
            line = opt[opt["sampler"] == sampler].sort_values("nfe")
            ax.plot(line["nfe"], line["w2"], lw=1.3, marker=".", label=sampler,
                    ls="-" if i < 10 else "--")
        ax.set_title("optimised schedule, every sampler", fontsize=9)
        ax.legend(fontsize=5.5, ncol=2)
    for ax in flat[:n]:
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("NFE (spent)")
    for ax in axes[:, 0]:
        ax.set_ylabel("W2")
    flat[0].legend(fontsize=6.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, force=True, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110, metadata=png_metadata(command))
    plt.close(fig)


def range_check(spectrum, schedule_dir: Path, sampler="dpmpp-2m", budget=10) -> list[str]:
    """README lines: how much of the optimised schedule's gain is its wider sigma range.

    Evaluates the sigma baselines on the optimiser's own range (``sigma_range_from_bounds``
    of the default bounds) beside the optimised schedule's end levels.
    """
    path = schedule_dir / f"{sampler}_nfe{budget}.json"
    if not path.exists():
        return []
    sched = Schedule.load(path)
    lo, hi = sigma_range_from_bounds(AB_MIN, AB_MAX)
    sig = sched.sigmas
    found = []
    for name in SIGMA_BASELINES:
        ab = baseline_alphas_cumprod(name, sched.steps, sigma_range=(lo, hi))
        found.append(f"{name} W2 = {losses(spectrum, sampler, ab).w2:.4g}")
    return [f"Range check: the optimised schedule runs from sigma = {sig.max():.4g} down to "
            f"{sig.min():.4g}; the optimiser may use sigma in [{lo:.3g}, {hi:.3g}], Karras's",
            "default is [0.002, 80]. The sigma baselines on the optimiser's full range, "
            f"{sampler} at S = {sched.steps}: {'; '.join(found)}.", ""]


def floor_line(spectrum) -> list[str]:
    """README line: the W2 of one exact denoising at the least noisy level the bounds allow.

    An exact marginal at ``sigma_min`` denoised by the Wiener filter has variance
    ``lambda^2 / (lambda + sigma_min^2)`` (docs/theory.md section 2): the scale below which no
    schedule within the bounds gets much.
    """
    lam, smin = spectrum.eigenvalues, sigma_range_from_bounds(AB_MIN, AB_MAX)[0]
    floor = np.sqrt(np.sum((lam / np.sqrt(lam + smin**2) - np.sqrt(lam)) ** 2))
    return [f"Scale of the floor: one exact Wiener denoising of the exact marginal at the "
            f"least noisy level allowed (sigma = {smin:.3g}) has W2 = {floor:.3g}: a scale, not a "
            "bound (a solver's own error can offset that shrinkage, and optimised schedules "
            "go below it). A larger NFE with a worse optimum than a smaller one means the "
            "optimiser stopped short (see success in table.csv).", ""]


def readme(table: pd.DataFrame, command: str, args, extra=()) -> str:
    """The folder's README: what it holds, the winners, and DPM-Solver++(2M) at NFE 10."""
    lines = [f"# k-diffusion samplers at equal NFE on the `{args.spectrum}` spectrum",
             "",
             "Closed-form W2 and KL(gen || data) of the Gaussian model (exact Wiener denoiser of",
             f"the `{args.spectrum}` spectrum; docs/theory.md sections 3-4) for each k-diffusion",
             f"sampler run on a schedule optimised for it (loss `{args.loss}`) and on the",
             "karras, kl_optimal, exponential (sigma range "
             f"{'EDM 0.002..80' if args.sigma_range == 'edm' else 'of the optimiser bounds'}),",
             "linear and cosine (T = 1000 training grid, linspace spacing) baselines.",
             "",
             "**This is the Gaussian model's ranking, not a trained network's**: the denoiser is",
             "exact, so the only error is the solver's discretisation (and, for the ancestral",
             "and SDE samplers, the noise they inject). A real network adds its own errors,",
             "and the ranking under it may differ.",
             "",
             "NFE rule: a budget N runs the largest step count S whose NFE is <= N. heun, dpm-2,",
             "dpm-2-ancestral, dpmpp-2s-ancestral and dpmpp-sde spend 2 S - 1 (two per step, one",
             "on the last step onto sigma = 0), so even budgets (8, 10, 20, 50) run them at",
             "N - 1 evaluations; `table.csv` records both `nfe_budget` and the `nfe` spent.",
             "The optimiser's bounds are the library's defaults (ab in [2.4e-9, 1/(1 + 0.002^2)],",
             "sigma in [0.002, 2.0e4]): wider at the noisy end than Karras's sigma_max = 80.",
             "",
             "Regenerate this folder (resumes: cells already in table.csv and saved schedules are",
             "kept; delete the folder to recompute):",
             "",
             f"    {command}",
             "",
             f"Code: {header_lines(command)[1][2:]}.",
             ""]
    budgets = sorted(set(table["nfe_budget"]))
    samplers = [s for s in KSAMPLERS if s in set(table["sampler"])]
    missing = [(s, b) for s in samplers for b in budgets
               if not ((table["sampler"] == s) & (table["nfe_budget"] == b)).any()]
    lines += [f"Cells held: samplers {', '.join(samplers)} x NFE budgets "
              f"{', '.join(map(str, budgets))}"
              + (f"; missing: {', '.join(f'{s}@{b}' for s, b in missing)}." if missing else
                 " (all of them)."), ""]
    failed = table[(table["schedule"] == OPTIMISED) & (table["success"] == False)]  # noqa: E712
    if len(failed):
        lines += ["Optimiser reported non-convergence for: "
                  + ", ".join(f"{r.sampler}@{r.nfe_budget}" for r in failed.itertuples())
                  + " (its schedule is still the best start found).", ""]
    lines += ["## Best sampler + schedule per NFE budget (lowest W2)", "",
              "| NFE budget | best (W2) | W2 | KL | best with a baseline schedule | W2 | "
              "best for dpmpp-2m | W2 |",
              "|---|---|---|---|---|---|---|---|"]
    for b in budgets:
        sub = table[table["nfe_budget"] == b]
        best = sub.loc[sub["w2"].idxmin()]
        base = sub[sub["schedule"] != OPTIMISED]
        bb = base.loc[base["w2"].idxmin()]
        m2 = sub[sub["sampler"] == "dpmpp-2m"]
        m2txt = ("-", "-")
        if len(m2):
            m2b = m2.loc[m2["w2"].idxmin()]
            m2txt = (m2b["schedule"], f"{m2b['w2']:.4g}")
        lines.append(f"| {b} | {best['sampler']} + {best['schedule']} (NFE {best['nfe']}) | "
                     f"{best['w2']:.4g} | {best['kl']:.4g} | {bb['sampler']} + "
                     f"{bb['schedule']} | {bb['w2']:.4g} | {m2txt[0]} | {m2txt[1]} |")
    opt = table[table["schedule"] == OPTIMISED].set_index(["sampler", "nfe_budget"])
    base_kl = table[table["schedule"] != OPTIMISED].groupby(["sampler", "nfe_budget"])["kl"].min()
    worse = int((opt["kl"] > base_kl.reindex(opt.index)).sum())
    lines += ["", f"In {worse} of {len(opt)} cells the W2-optimised schedule has a larger "
              "KL(gen || data) than the best baseline's: W2 weights a direction by its "
              "variance, KL by its relative error, so the small-eigenvalue directions that "
              f"dominate KL are cheap for W2 (optimise with `--loss kl` for KL).", ""]
    lines += ["Lowest KL(gen || data) per budget: " + "; ".join(
        f"NFE {b}: {r['sampler']} + {r['schedule']} ({r['kl']:.4g} nats)"
        for b in budgets for r in [table[table["nfe_budget"] == b].sort_values("kl").iloc[0]]
    ) + ".", ""]
    m2 = table[(table["sampler"] == "dpmpp-2m") & (table["nfe_budget"] == 10)]
    if len(m2):
        opt = m2[m2["schedule"] == OPTIMISED]["w2"].iloc[0]
        kar = m2[m2["schedule"] == "karras"]["w2"].iloc[0]
        lines += ["## DPM-Solver++(2M) (dpmpp-2m) at NFE 10: optimised vs Karras", "",
                  f"W2 optimised {opt:.4g}, Karras {kar:.4g}: Karras / optimised = "
                  f"{kar / opt:.3g}x, difference {kar - opt:.4g} (data units).", "",
                  "| schedule | W2 | KL |", "|---|---|---|"]
        lines += [f"| {r.schedule} | {r.w2:.4g} | {r.kl:.4g} |"
                  for r in m2.sort_values("w2").itertuples()]
        lines += ["", *extra]
    lines += ["## W2 per sampler and budget (optimised / best baseline)", "",
              "| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
              "|---|" + "---|" * len(budgets)]
    for s in samplers:
        cells = []
        for b in budgets:
            sub = table[(table["sampler"] == s) & (table["nfe_budget"] == b)]
            if not len(sub):
                cells.append("-")
                continue
            opt = sub[sub["schedule"] == OPTIMISED]["w2"].iloc[0]
            base = sub[sub["schedule"] != OPTIMISED].sort_values("w2").iloc[0]
            cells.append(f"{opt:.3g} / {base['w2']:.3g} ({base['schedule']})")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Figure: `w2_vs_nfe.png`. Schedules: `schedules/<sampler>_nfe<budget>.json`",
              "(re-evaluate with `specsched evaluate`).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectrum", default="cifar10",
                        help="built-in spectrum (cifar10, natural-patches) or a spectrum file")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20, 50])
    parser.add_argument("--quick", action="store_true",
                        help=f"NFE budgets {' '.join(map(str, QUICK_NFE))} only")
    parser.add_argument("--samplers", nargs="+", default=list(KSAMPLERS),
                        choices=list(KSAMPLERS), metavar="SAMPLER")
    parser.add_argument("--loss", choices=list(LOSSES), default="w2")
    parser.add_argument("--sigma-range", choices=["edm", "bounds"], default="edm",
                        help="range of the karras/exponential/kl_optimal baselines")
    parser.add_argument("--out", default=None,
                        help="output folder (default results/solvers_<spectrum>/)")
    args = parser.parse_args(argv)
    budgets = list(QUICK_NFE) if args.quick else list(dict.fromkeys(args.nfe))
    out = Path(args.out or f"results/solvers_{Path(args.spectrum).stem}")
    schedule_dir = out / "schedules"
    schedule_dir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/solvers_table.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    spectrum = load_spectrum(args.spectrum)
    sigma_range = None
    if args.sigma_range == "bounds":
        sigma_range = sigma_range_from_bounds(AB_MIN, AB_MAX)
    table_path = out / "table.csv"
    rows = []
    if table_path.exists():
        rows = pd.read_csv(table_path, comment="#").replace({np.nan: None}).to_dict("records")
    done = {(r["sampler"], int(r["nfe_budget"])) for r in rows}
    cells = [(s, b) for b in budgets for s in args.samplers if (s, b) not in done]
    for sampler, budget in tqdm(cells, desc=f"{spectrum.source} cells", unit="cell"):
        tqdm.write(f"{sampler} NFE {budget} (S = {steps_within_nfe(sampler, budget)})")
        rows.extend(run_cell(spectrum, sampler, budget, args.loss, sigma_range, schedule_dir))
        write_table(rows, table_path, command)
    table = write_table(rows, table_path, command)
    plot(table, out / "w2_vs_nfe.png",
         f"{spectrum.source}: W2 of k-diffusion samplers (Gaussian model, exact denoiser)",
         command)
    with atomic_write(out / "README.md", force=True) as fh:
        fh.write(readme(table, command, args, [*range_check(spectrum, schedule_dir),
                                                *floor_line(spectrum)]))
    print(f"wrote {table_path}, {out / 'w2_vs_nfe.png'}, {out / 'README.md'}")


if __name__ == "__main__":
    main()
