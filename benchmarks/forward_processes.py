"""Which forward process? White, EqualSNR, the best power:GAMMA and FANS, each with its schedule.

For a spectrum, every step count S and each of ``ddim`` and ``ddpm``, optimises a schedule for
each forward noise spectrum (docs/theory.md section 9; :func:`specsched.optimize.optimize_schedule`
with ``noise=``): ``white``, ``equal-snr``, ``fans`` and the best ``power:GAMMA``, GAMMA found by
a grid over [0, 2] then a bounded 1-D search (:func:`scipy.optimize.minimize_scalar`) around the
best grid point, each optimisation warm-started from its neighbour's optimum. The W2 optimum
and, separately, the KL optimum are reported, with what the same noise gives on schedules not
made for it (the white optimum and cosine). Writes, under ``--out``
(``results/forward_processes_<data>/`` by default):

- ``best.csv``: one row per (steps, sampler, noise, loss): gamma (NaN for white/fans), w2, kl,
  kl_data_gen of the schedule optimised for that loss under that noise, success, and
  ``w2_white_schedule`` / ``w2_cosine`` (W2 under this noise of the white optimum and of
  cosine on the T = 1000 linspace grid); rewritten after every cell, and a rerun skips the
  cells already there;
- ``gamma.csv``: the optimised W2 of power:GAMMA against GAMMA (the grid and the search's
  points) per (steps, sampler);
- ``w2_vs_steps.png``: best W2 and KL against S per forward process;
- ``README.md``: the command, the tables and what the theory recommends.

The maps of ``specsched analyze`` under each noise are in ``maps_<noise>/`` when
``--maps`` is given (the per-frequency SNR and f_max(t) under that forward process).

    python benchmarks/forward_processes.py --data cifar10 [--steps 5 10 20 50 100]
        [--samplers ddim ddpm] [--out DIR] [--maps]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from specsched.analysis.plots import save_figure
from specsched.fileio import atomic_write
from specsched.optimize import optimize_schedule, warm_start
from specsched.optimize.exponent import optimize_power_exponent, power_label
from specsched.provenance import header, header_lines, png_metadata
from specsched.schedules import baseline_alphas_cumprod
from specsched.spectrum import load_spectrum
from specsched.theory import evaluate_schedule

COLUMNS = ["data", "steps", "sampler", "noise", "gamma", "loss", "w2", "kl", "kl_data_gen",
           "success", "w2_white_schedule", "w2_cosine"]
NOISES = ("white", "equal-snr", "best-gamma", "fans")


class Cell:
    """The optimisations of one (spectrum, steps, sampler), sharing warm starts."""

    def __init__(self, spectrum, steps, sampler, previous=None):
        self.spectrum, self.steps, self.sampler = spectrum, steps, sampler
        self.previous = previous or {}  # noise label -> optimum at the previous step count
        self.optima = {}  # (noise label, loss) -> OptimizeResult

    def optimise(self, noise: str, loss: str = "w2", x0=None):
        key = (noise, loss)
        if key not in self.optima:
            if x0 is None and key in self.previous:
                x0 = warm_start(self.previous[key], self.steps)
            self.optima[key] = optimize_schedule(
                self.spectrum.eigenvalues, self.spectrum.mean, self.steps, loss=loss,
                sampler=self.sampler, noise=noise, spacings=(), x0=x0,
                starts=("linear", "karras") if x0 is None else ("linear",))
        return self.optima[key]

    def gamma_search(self):
        """Optimised W2 of power:GAMMA over [0, 2]: ``(best gamma, points)``
        (:func:`specsched.optimize.exponent.optimize_power_exponent`)."""
        prev = self.previous.get(("white", "w2"))
        found = optimize_power_exponent(
            self.spectrum.eigenvalues, self.spectrum.mean, self.steps, sampler=self.sampler,
            spacings=(), x0=None if prev is None else warm_start(prev, self.steps))
        for gamma, r in found.optima.items():
            self.optima[(power_label(gamma), "w2")] = r
        return found.gamma, found.points


def rows_of_cell(cell: Cell, data: str):
    """Rows of best.csv and gamma.csv for one cell."""
    lam, m = cell.spectrum.eigenvalues, cell.spectrum.mean
    best_gamma, points = cell.gamma_search()
    white_x = cell.optimise("white").x
    cosine = baseline_alphas_cumprod("cosine", cell.steps, spacing="linspace")
    rows = []
    for noise in NOISES:
        label = power_label(best_gamma) if noise == "best-gamma" else (
            "fans" if noise == "fans" else noise)
        gamma = best_gamma if noise == "best-gamma" else {"white": 0.0, "equal-snr": 1.0}.get(
            noise, np.nan)
        for loss in ("w2", "kl"):
            r = cell.optimise(label, loss)
            rep = evaluate_schedule(lam, m, r.x, sampler=cell.sampler, noise=label)

            def w2_of(ab, label=label):
                return evaluate_schedule(lam, m, ab, sampler=cell.sampler, noise=label).w2

            rows.append(dict(data=data, steps=cell.steps, sampler=cell.sampler, noise=noise,
                             gamma=gamma, loss=loss, w2=rep.w2, kl=rep.kl,
                             kl_data_gen=rep.kl_data_gen, success=bool(r.success),
                             w2_white_schedule=w2_of(white_x), w2_cosine=w2_of(cosine)))
    gam = [dict(steps=cell.steps, sampler=cell.sampler, gamma=g, w2=w)
           for g, w in sorted(points.items())]
    return rows, gam


def write_csv(frame: pd.DataFrame, path: Path, command: str):
    with atomic_write(path, force=True, mode="w") as fh:
        fh.write(header(command))
        frame.to_csv(fh, index=False, float_format="%.10g")


def read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, comment="#") if path.exists() else None


def plot(best: pd.DataFrame, path: Path, title: str, command: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samplers = list(dict.fromkeys(best["sampler"]))
    fig, axes = plt.subplots(2, len(samplers), figsize=(5 * len(samplers), 7.5), squeeze=False)
    for j, sampler in enumerate(samplers):
        for i, loss in enumerate(("w2", "kl")):
            ax = axes[i, j]
            sub = best[(best.sampler == sampler) & (best.loss == loss)]
            for noise in NOISES:
                s = sub[sub.noise == noise].sort_values("steps")
                # a zero optimum is drawn at the plot's floor
                y = np.maximum(s[loss].to_numpy(), 1e-10)
                ax.plot(s.steps, y, "o-", label=noise)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("steps S")
            ax.set_ylabel("W2" if loss == "w2" else "KL(gen || data), nats")
            ax.set_title(f"{sampler}: optimised for {loss}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, force=True, metadata=png_metadata(command))


def table(best: pd.DataFrame, loss: str) -> list[str]:
    """Markdown: the optimum of ``loss`` per (sampler, steps) and forward process."""
    out = ["| sampler | S | " + " | ".join(NOISES) + " | best GAMMA (for W2) |",
           "| --- | ---: | " + " | ".join("---:" for _ in NOISES) + " | ---: |"]
    sub = best[best.loss == loss]
    for (sampler, steps), g in sub.groupby(["sampler", "steps"], sort=True):
        vals = {r.noise: getattr(r, loss) for r in g.itertuples()}
        gamma = g[g.noise == "best-gamma"].gamma.iloc[0]
        out.append(f"| {sampler} | {steps} | "
                   + " | ".join(f"{vals[n]:.4g}" for n in NOISES) + f" | {gamma:.3f} |")
    return out


def readme(best: pd.DataFrame, data: str, command: str, spectrum) -> str:
    """README.md of one data set: the command, the tables, and the recommendations read off
    them (every number in the prose is computed here from ``best``)."""
    lam = spectrum.eigenvalues
    mean_lam = float(lam.mean())
    mean_sq = 0.0 if spectrum.mean is None else float(np.sum(spectrum.mean ** 2))
    w2 = best[best.loss == "w2"]
    piv = w2.pivot_table(index=["sampler", "steps"], columns="noise", values="w2")
    kl = best[best.loss == "kl"].pivot_table(index=["sampler", "steps"], columns="noise",
                                             values="kl")
    winners = piv[list(NOISES)].idxmin(axis=1)
    eq_zero = int((piv["equal-snr"] < 1e-6 * piv["white"]).sum())
    gammas = w2[w2.noise == "best-gamma"].gamma
    ratio = lambda a, b: (piv[a] / piv[b])  # noqa: E731
    eq_white = ratio("equal-snr", "white")
    fans_white = ratio("fans", "white")
    mismatch = w2[w2.noise != "white"]
    white_own = piv["white"].reindex(pd.MultiIndex.from_frame(mismatch[["sampler", "steps"]]))
    lost = int((mismatch.w2_white_schedule.to_numpy() > white_own.to_numpy()).sum())
    lines = [
        f"# Which forward process? `{data}`",
        "",
        "Closed-form W2 and KL(gen || data) of the Gaussian model of the data (exact Wiener",
        "denoiser; docs/theory.md sections 3, 4 and 9) for DDIM and DDPM, each forward noise",
        "spectrum with a schedule optimised for it: white, EqualSNR (`c ~ lambda`), the best",
        "`power:GAMMA` (`c ~ lambda^GAMMA`, GAMMA in [0, 2]: a grid, then a bounded 1-D",
        "search, `specsched.optimize.exponent`) and FANS as docs/theory.md section 9 reads",
        "it (band shape annealed to white). Every W2 is measured in pixels (x), so the",
        "columns compare like with like.",
        "",
        "**This is the Gaussian model's answer, not a trained network's**: with an exact",
        "denoiser the only error is the sampler's discretisation, so a forward process is",
        "rated by how well one schedule can serve every direction at once.",
        "",
        "Regenerate (resumes from best.csv; delete it to recompute):",
        "",
        f"    {command}",
        "",
        f"Code: {header_lines(command)[1][2:]}.",
        "",
        f"Spectrum: {spectrum.source}, d = {lam.size}, mean eigenvalue {mean_lam:.4g}, "
        f"squared norm of the data mean {mean_sq:.4g}.",
        "Figure: `w2_vs_steps.png`; the GAMMA search: `gamma.csv`.",
        "",
        "## Optimised for W2: W2 of each forward process's own optimum",
        "",
        *table(best, "w2"),
        "",
        "## Optimised for KL: KL(gen || data) in nats",
        "",
        *table(best, "kl"),
        "",
        "## Schedules not made for the noise (W2 under each noise, W2-optimised rows)",
        "",
        "| sampler | S | noise | own optimum | white's optimum | cosine |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in w2.sort_values(["sampler", "steps"]).itertuples():
        lines.append(f"| {r.sampler} | {r.steps} | {r.noise} | {r.w2:.4g} | "
                     f"{r.w2_white_schedule:.4g} | {r.w2_cosine:.4g} |")
    count = winners.value_counts()
    lines += [
        "",
        "## What the theory recommends",
        "",
        f"- Lowest W2 per (sampler, S), of {len(piv)} cells: "
        + ", ".join(f"{n} {count.get(n, 0)}" for n in NOISES) + ". EqualSNR's W2 is "
        f"{eq_white.min():.3g} to {eq_white.max():.3g} times white's; its KL "
        f"{(kl['equal-snr'] / kl['white']).min():.3g} to "
        f"{(kl['equal-snr'] / kl['white']).max():.3g} times.",
        f"- The best exponent lies in [{gammas.min():.3g}, {gammas.max():.3g}]: EqualSNR "
        "(GAMMA = 1) or next to it. Under EqualSNR every direction of `y = x / sqrt(c)`",
        f"  has the same variance ({mean_lam:.4g} here), so one schedule fits all of them"
        + (f"; W2 reaches zero (below 1e-6 of white's) at {eq_zero} of {len(piv)} cells."
           if eq_zero else
           "; what is left is the data mean, which the start N(0, C) lacks and which "
           "shares the one transfer function with the variance (docs/theory.md section 9)."),
        f"- FANS (as read here) against white: W2 ratio {fans_white.median():.3g} "
        f"(median; {fans_white.min():.3g} to {fans_white.max():.3g}): between white and "
        "EqualSNR, as its noise is banded EqualSNR at the noisy end and white at the clean.",
        f"- Change the schedule with the noise: at {lost} of {len(mismatch)} coloured rows the "
        "schedule optimised for white noise, run under that noise, does worse than white "
        "noise on the same schedule: switching the forward process without re-optimising "
        "the schedule can lose what the switch gains (table above).",
        "- When the recommendation holds: only as far as the network's own errors are "
        "small against these discretisation errors. The closed form does not model them;",
        "  Falck et al. (2025) report comparable FID for EqualSNR and DDPM networks, and",
        "  docs/unet.md (section \"Coloured forward noise\") measures it on Fashion-MNIST.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10", help="spectrum source (built-in name, file)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--samplers", nargs="+", choices=["ddim", "ddpm"],
                        default=["ddim", "ddpm"])
    parser.add_argument("--out", default=None, help="output folder "
                        "(default results/forward_processes_<data>)")
    parser.add_argument("--maps", action="store_true",
                        help="also run specsched analyze under each noise into maps_<noise>/")
    args = parser.parse_args(argv)
    data = Path(args.data).stem if Path(args.data).suffix else args.data
    out = Path(args.out or f"results/forward_processes_{data}")
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/forward_processes.py " + shlex.join(
        ["--data", args.data, "--steps", *map(str, args.steps), "--samplers", *args.samplers]
        + (["--maps"] if args.maps else []))
    spectrum = load_spectrum(args.data)
    best = read_csv(out / "best.csv")
    gam = read_csv(out / "gamma.csv")
    best_rows = [] if best is None else best.to_dict("records")
    gam_rows = [] if gam is None else gam.to_dict("records")
    done = {(r["steps"], r["sampler"]) for r in best_rows}
    todo = [(s, smp) for smp in args.samplers for s in sorted(args.steps)]
    previous = {}
    for steps, sampler in tqdm(todo, desc=f"forward processes ({data})"):
        if (steps, sampler) in done:
            continue
        cell = Cell(spectrum, steps, sampler, previous.get(sampler))
        rows, g = rows_of_cell(cell, data)
        previous[sampler] = {k: v.x for k, v in cell.optima.items()}
        best_rows += rows
        gam_rows += g
        write_csv(pd.DataFrame(best_rows, columns=COLUMNS), out / "best.csv", command)
        write_csv(pd.DataFrame(gam_rows), out / "gamma.csv", command)
    best = pd.DataFrame(best_rows, columns=COLUMNS)
    plot(best, out / "w2_vs_steps.png", f"{data}: each forward process with its own schedule",
         command)
    if args.maps:
        from specsched.analysis.report import analyze

        for noise in ("white", "equal-snr", "fans"):
            analyze(args.data, out / f"maps_{noise}", noise=noise, force=True)
    with atomic_write(out / "README.md", force=True, mode="w") as fh:
        fh.write(readme(best, data, command, spectrum))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
