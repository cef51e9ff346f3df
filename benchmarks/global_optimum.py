"""Is the optimised schedule the global optimum? Two independent optimisers on CIFAR-10.

For DDIM / W2 on the CIFAR-10 spectrum, runs SLSQP on logSNR (the default) and L-BFGS-B on
logSNR increments, each from all five baseline starts, beside the paper's SLSQP on
alphas_cumprod, and writes their losses and the best baseline's into
results/cifar10_global_optimum.csv (default bounds: the range of the baselines).

    python benchmarks/global_optimum.py [--steps 5 10 20 50] [--out FILE.csv]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from tqdm.auto import tqdm

from specsched.fileio import atomic_write
from specsched.optimize import optimize_schedule
from specsched.provenance import command_line, header
from specsched.spectrum import load_spectrum


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--sampler-eta", type=float, default=0.0)
    parser.add_argument("--out", default="results/cifar10_global_optimum.csv")
    args = parser.parse_args(argv)
    spectrum = load_spectrum("cifar10")
    rows = []
    for S in tqdm(args.steps, desc="steps"):
        row = {"steps": S}
        for method in ("slsqp-logsnr", "lbfgs-logsnr", "slsqp"):
            t0 = time.perf_counter()
            r = optimize_schedule(spectrum.eigenvalues, spectrum.mean, S, eta=args.sampler_eta,
                                  method=method, agree_rtol=None)
            row[f"{method}_w2"] = r.fun
            row[f"{method}_success"] = r.success
            row[f"{method}_seconds"] = time.perf_counter() - t0
            row[f"{method}_worst_start_w2"] = max(r.starts.values())
        best = min(r.baselines.items(), key=lambda kv: kv[1]["w2"])
        row["best_baseline"], row["best_baseline_w2"] = best[0], best[1]["w2"]
        row["relative_gap"] = (abs(row["slsqp-logsnr_w2"] - row["lbfgs-logsnr_w2"])
                               / row["slsqp-logsnr_w2"])
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_write(args.out, force=True) as fh:
        fh.write(header(command_line("python benchmarks/global_optimum.py", argv)))
        fh.write(f"# cifar10 spectrum, DDIM eta={args.sampler_eta:g}, W2\n")
        table.to_csv(fh, index=False, float_format="%.10g")
    print(table.to_string())


if __name__ == "__main__":
    main()
