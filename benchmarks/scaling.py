"""Scaling: time and peak memory against the dimension d and the steps S, with fitted exponents.

Three workloads, each case in a fresh process (so that its peak resident memory, measured
with :func:`resource.getrusage` above the process's footprint after the imports, is its own):

- ``loss``: :func:`specsched.theory.loss_and_grad` (DDIM, W2; the numba kernel) on a power-law
  spectrum ``lambda_k = k^-1.5`` of d = 1e3 ... 1e6 directions, S = 10 ... 1000;
- ``optimiser``: :func:`specsched.optimize.optimize_schedule` with its defaults on the same
  spectra (quadrature above 20000 directions, the staged quadrature + exact polish between
  1025 and 20000 and above 50 steps; baselines evaluated exactly);
- ``estimator``: :func:`specsched.spectrum.estimate_spectrum` on random float32 samples:
  ``full`` (streaming covariance + ``eigh``; n = 2048 in chunks of 512) for d = 1024 ... 4096
  (``eigh`` is O(d^3): d = 1e4 takes minutes here, d = 1e5 needs an 80 GB covariance),
  ``fourier`` (gray images of side sqrt(d), sides 32 ... 1000; n = 256 in chunks of 32) for
  d = 1e3 ... 1e6. The memory above the start is then bounded by the chunk, not by n.

Exponents: least squares of log time (and log memory) on log d at each fixed S (and on log S
at each fixed d), in ``results/scaling_exponents.csv``; the cases in ``results/scaling.csv``;
the figure ``results/scaling.png``. Times are the best of 3 runs (loss) or one run (optimiser,
estimator) after a warm-up on a small problem of the same kind, on this 2-core machine.

    python benchmarks/scaling.py [--quick] [--out results/scaling.csv]

``--quick`` stops at d = 1e5 and S = 100 (about a minute).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsched.analysis.plots import save_figure
from specsched.fileio import atomic_write
from specsched.provenance import command_line, header, png_metadata

DIMS = (1_000, 10_000, 100_000, 1_000_000)
STEPS = (10, 100, 1000)
FULL_DIMS = (1_024, 2_048, 4_096)
FOURIER_DIMS = (1_024, 10_000, 102_400, 1_000_000)  # 32^2, 100^2, 320^2, 1000^2 (fast FFTs)
#: Samples and chunk size of the estimator cases: (n, chunk_size).
FULL_SAMPLES = (2048, 512)
FOURIER_SAMPLES = (256, 32)
#: Best of this many runs for the loss; the optimiser and the estimator run once (minutes at
#: the largest sizes), all after a warm-up on a small problem of the same kind.
REPEATS = 3

_CHILD = r"""
import json, resource, sys, time
import numpy as np
kind, (d, S, repeats, n, chunk) = sys.argv[1], map(int, sys.argv[2:7])
from specsched.theory import loss_and_grad
from specsched.optimize import optimize_schedule
from specsched.schedules import baseline_alphas_cumprod
from specsched.spectrum import estimate_spectrum
lam = np.arange(1, d + 1, dtype=np.float64) ** -1.5
ab = baseline_alphas_cumprod("linear", S) if kind == "loss" else None
if kind == "estimator-fourier":
    side = int(round(d ** 0.5))
    x = np.random.default_rng(0).standard_normal((n, side, side)).astype(np.float32)
elif kind == "estimator-full":
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
def run(small=False):
    k = 1000 if small else d
    if kind == "loss":
        return loss_and_grad(lam[:k], None, ab, backend="numba")
    if kind == "optimiser":
        return optimize_schedule(lam[:k], None, 60 if small else S, spacings=())
    return estimate_spectrum(x[:64] if small else x, kind.split("-")[1], chunk_size=chunk)
run(small=True)  # warm-up: numba compilation or its cache, imports of the solvers
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best = float("inf")
for _ in range(repeats):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": best, "peak_rss_mib": peak / 1024,
                  "peak_above_start_mib": max(peak - base, 0) / 1024}))
"""


def case(kind, d, S, repeats):
    """Time and memory of one case in a fresh Python process."""
    n, chunk = FOURIER_SAMPLES if kind == "estimator-fourier" else FULL_SAMPLES
    args = [str(v) for v in (d, S, repeats, n, chunk)]
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, *args],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"case {kind} d={d} S={S} failed:\n{out.stderr}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {"workload": kind, "d": d, "steps": S, **row}


def fit_exponents(table):
    """Slopes of log time / log memory against log d (per S) and log S (per d)."""
    rows = []
    for kind, t in table.groupby("workload"):
        for var, fixed in (("d", "steps"), ("steps", "d")):
            for value, u in t.groupby(fixed):
                if u[var].nunique() < 2:
                    continue
                x = np.log(u[var].to_numpy(float))
                for col in ("seconds", "peak_rss_mib"):
                    slope = np.polyfit(x, np.log(u[col].to_numpy(float)), 1)[0]
                    rows.append({"workload": kind, "against": var, "at": f"{fixed}={value}",
                                 "quantity": col, "exponent": slope,
                                 "points": int(u[var].nunique())})
    return pd.DataFrame(rows)


def plot(table, path, command):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(table["workload"]))
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.6 * len(kinds), 6.4), squeeze=False)
    for j, kind in enumerate(kinds):
        t = table[table["workload"] == kind]
        for S, u in t.groupby("steps"):
            label = f"S={S}" if kind in ("loss", "optimiser") else kind
            axes[0, j].loglog(u["d"], u["seconds"], "o-", label=label)
            axes[1, j].loglog(u["d"], u["peak_rss_mib"], "o-", label=label)
        axes[0, j].set_title(kind)
        axes[0, j].set_ylabel("time (s, best of 3)")
        axes[1, j].set_ylabel("peak RSS (MiB)")
        for ax in axes[:, j]:
            ax.set_xlabel("dimension d")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, force=True, metadata=png_metadata(command))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="d <= 1e5 and S <= 100")
    ap.add_argument("--out", default="results/scaling.csv")
    args = ap.parse_args(argv)
    dims = [d for d in DIMS if not args.quick or d <= 100_000]
    steps = [S for S in STEPS if not args.quick or S <= 100]
    plan = [("loss", d, S) for d in dims for S in steps]
    plan += [("optimiser", d, S) for d in dims for S in steps]
    plan += [("estimator-full", d, 0) for d in FULL_DIMS]
    plan += [("estimator-fourier", d, 0) for d in FOURIER_DIMS
             if not args.quick or d <= 100_000]
    rows = []
    t0 = time.perf_counter()
    for kind, d, S in plan:
        rows.append(case(kind, d, S, REPEATS if kind == "loss" else 1))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    command = command_line("python benchmarks/scaling.py", argv)
    lines = header(command) + f"# {time.perf_counter() - t0:.0f} s in all\n"
    with atomic_write(args.out, force=True) as fh:
        fh.write(lines)
        table.to_csv(fh, index=False, float_format="%.6g")
    exps = fit_exponents(table)
    with atomic_write(Path(args.out).with_name(Path(args.out).stem + "_exponents.csv"),
                      force=True) as fh:
        fh.write(lines)
        exps.to_csv(fh, index=False, float_format="%.3f")
    plot(table, Path(args.out).with_suffix(".png"), command)
    print(table.to_string())
    print(exps.to_string())


if __name__ == "__main__":
    main()
