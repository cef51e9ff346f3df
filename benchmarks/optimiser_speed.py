"""Optimiser speed: today's default against the slow paths it replaced, in one process.

For the CIFAR-10 spectrum with its mean (what ``specsched optimize --spectrum cifar10`` uses),
W2, at S = 10 ... 1000 steps, for DDIM and k-diffusion's ``dpmpp-2m``:

- ``specsched``: :func:`specsched.optimize.optimize_schedule` with its defaults
  (``method="auto"``: SLSQP on logSNR up to 50 steps; above, on a 64-bin quadrature polished
  on the exact spectrum, Newton's method in logSNR for DDIM and L-BFGS on the log-increments
  for dpmpp-2m);
- ``lbfgs``: the default before Newton's method, ``method="lbfgs-log-increments"`` with the
  same quadrature stage and polish (DDIM only: for dpmpp-2m it is the default);
- ``baseline``: the slow path of issue 16 (the default before the log-increments),
  re-created from public options: SLSQP on logSNR up to 200 steps; above, the optimum at S/10
  steps resampled (``warm_start``) and L-BFGS-B on the logSNR increments from it
  (``lbfgs-logsnr``), exact for DDIM and on 512 quadrature bins for dpmpp-2m (the old
  ``quadrature="auto"`` rule of k-diffusion's samplers).

All report the exact W2 of their schedule, so ``relative_gap = (W2 - W2_baseline) /
W2_baseline`` compares the optima (negative: today's default found a lower one), and
``lbfgs_gap`` likewise against ``lbfgs``. A third set of rows times the command line a
user runs (``specsched optimize --spectrum cifar10 --steps S``, a subprocess, start-up and
file writing included).

Writes results/optimiser_speed.csv and results/optimiser_speed.png.

    python benchmarks/optimiser_speed.py [--quick] [--out results/optimiser_speed.csv]

``--quick`` skips the dpmpp-2m baselines above 50 steps (minutes each).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsched.analysis.plots import save_figure
from specsched.fileio import atomic_write
from specsched.optimize import optimize_schedule, warm_start
from specsched.provenance import command_line, header, png_metadata
from specsched.spectrum import load_spectrum

STEPS = (10, 50, 100, 200, 500, 1000)
SAMPLERS = ("ddim", "dpmpp-2m")
CLI_STEPS = (200, 1000)


def previous_default(lam, m, S, sampler):
    """The optimiser's default before the log-increments method (module docstring)."""
    quad = 512 if sampler != "ddim" else None
    if S <= 200:
        return optimize_schedule(lam, m, S, sampler=sampler, method="slsqp-logsnr",
                                 spacings=(), quadrature=quad)
    coarse = optimize_schedule(lam, m, max(100, S // 10), sampler=sampler,
                               method="slsqp-logsnr", spacings=(), quadrature=quad)
    return optimize_schedule(lam, m, S, sampler=sampler, method="lbfgs-logsnr",
                             x0=warm_start(coarse.x, S), starts=("linear",), spacings=(),
                             quadrature=quad)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_in_process(rows, quick):
    spectrum = load_spectrum("cifar10")
    lam, m = spectrum.eigenvalues, spectrum.mean
    for sampler in SAMPLERS:
        optimize_schedule(lam, m, 60, sampler=sampler, spacings=())  # compile, warm caches
        for S in STEPS:
            ours, t_ours = timed(lambda S=S, s=sampler: optimize_schedule(lam, m, S, sampler=s))
            if quick and sampler != "ddim" and S > 50:
                base, t_base = None, float("nan")
            else:
                base, t_base = timed(lambda S=S, s=sampler: previous_default(lam, m, S, s))
            w2_base = base.fun if base is not None else float("nan")
            lbfgs, t_lbfgs = (timed(lambda S=S: optimize_schedule(
                lam, m, S, method="lbfgs-log-increments")) if sampler == "ddim" and S > 50
                else (None, float("nan")))
            w2_lbfgs = lbfgs.fun if lbfgs is not None else float("nan")
            rows.append({
                "benchmark": "in process", "sampler": sampler, "steps": S,
                "specsched_s": t_ours, "baseline_s": t_base, "speedup": t_base / t_ours,
                "lbfgs_s": t_lbfgs, "lbfgs_w2": w2_lbfgs,
                "lbfgs_gap": (ours.fun - w2_lbfgs) / w2_lbfgs,
                "specsched_w2": ours.fun, "baseline_w2": w2_base,
                "relative_gap": (ours.fun - w2_base) / w2_base,
                "specsched_method": ours.method, "specsched_nit": ours.nit,
                "specsched_nfev": ours.nfev, "specsched_success": ours.success,
                "baseline_method": base.method if base is not None else "",
                "baseline_nit": base.nit if base is not None else np.nan,
                "baseline_success": base.success if base is not None else "",
            })
            print(rows[-1], flush=True)


def bench_cli(rows):
    """Wall time of ``specsched optimize`` (a fresh process each: import, numba cache load,
    optimisation, baselines, file write) against the in-process optimisation."""
    with tempfile.TemporaryDirectory() as tmp:
        for S in CLI_STEPS:
            out = Path(tmp) / f"s{S}"
            cmd = [sys.executable, "-m", "specsched.cli", "optimize", "--spectrum", "cifar10",
                   "--steps", str(S), "--out", str(out), "--force"]
            subprocess.run(cmd, check=True, capture_output=True)  # warm the numba cache
            _, wall = timed(lambda cmd=cmd: subprocess.run(cmd, check=True,
                                                           capture_output=True))
            rows.append({"benchmark": "command line", "sampler": "ddim", "steps": S,
                         "specsched_s": wall,
                         "note": "specsched optimize --spectrum cifar10 --steps "
                         f"{S} (wall, one process)"})
            print(rows[-1], flush=True)


def plot(table, path, command):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    t = table[table["benchmark"] == "in process"]
    for sampler, ax in zip(SAMPLERS, axes, strict=True):
        u = t[t["sampler"] == sampler]
        ax.loglog(u["steps"], u["specsched_s"], "o-", label="default")
        if u["lbfgs_s"].notna().any():
            ax.loglog(u["steps"], u["lbfgs_s"], "^:", label="L-BFGS log-increments")
        ax.loglog(u["steps"], u["baseline_s"], "s--", label="slow path (SLSQP, L-BFGS logSNR)")
        ax.set_title(f"CIFAR-10, {sampler}, W2")
        ax.set_xlabel("steps S")
        ax.set_ylabel("optimisation time (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, force=True, metadata=png_metadata(command))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="skip the dpmpp-2m baselines above 50 steps")
    ap.add_argument("--out", default="results/optimiser_speed.csv")
    args = ap.parse_args(argv)
    rows = []
    bench_in_process(rows, args.quick)
    bench_cli(rows)
    table = pd.DataFrame(rows)
    command = command_line("python benchmarks/optimiser_speed.py", argv)
    with atomic_write(args.out, force=True) as fh:
        fh.write(header(command))
        table.to_csv(fh, index=False, float_format="%.10g")
    plot(table, Path(args.out).with_suffix(".png"), command)
    print(table.to_string())


if __name__ == "__main__":
    main()
