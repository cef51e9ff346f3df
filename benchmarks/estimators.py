"""Schedules optimised from full, PCA and Fourier spectra, judged under the full spectrum.

For each dataset (natural-patches; Fashion-MNIST when Debian's dataset-fashion-mnist is
installed) and step count, a DDIM schedule is optimised for W2 on the spectrum of each
estimator (full covariance, PCA at several ranks, the Fourier model), then its W2 is
evaluated with the FULL spectrum (eigenvalues and mean) with
:func:`specsched.theory.evaluate_schedule`. Writes results/estimators.csv (first lines: the
command and the code version, :mod:`specsched.provenance`) and results/estimators.png (the same
in its PNG metadata).

Usage: python benchmarks/estimators.py [--steps 10 20] [--ranks 8 32 128] [--out results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import pandas as pd

    from specsched.data.sources import FASHION_MNIST_DIR, open_source
    from specsched.fileio import atomic_write
    from specsched.optimize import optimize_schedule
    from specsched.provenance import command_line, header, png_metadata
    from specsched.spectrum import estimate_spectrum
    from specsched.theory import evaluate_schedule

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    datasets = ["natural-patches"] + (["fashion-mnist"] if FASHION_MNIST_DIR.is_dir() else [])
    rows = []
    for name in datasets:
        src = open_source(name)
        full = estimate_spectrum(src, "full")
        spectra = {"full": full, "fourier": estimate_spectrum(src, "fourier")}
        for k in args.ranks:
            spectra[f"pca-{k}"] = estimate_spectrum(src, "pca", rank=k)
        for S in args.steps:
            for label, sp in spectra.items():
                res = optimize_schedule(sp.eigenvalues, sp.mean, S, loss="w2")
                w2 = evaluate_schedule(full.eigenvalues, full.mean, res.x).w2
                rows.append({"dataset": name, "steps": S, "estimator": label,
                             "w2_under_full": w2, "w2_under_own": res.w2})
                print(f"{name} S={S} {label}: W2 (full spectrum) {w2:.5f}", flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    command = command_line("python benchmarks/estimators.py")
    with atomic_write(out / "estimators.csv", force=True) as fh:
        fh.write(header(command))
        table.to_csv(fh, index=False, float_format="%.8g")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        t = table[table.dataset == name]
        labels = list(dict.fromkeys(t.estimator))
        x = np.arange(len(labels))
        for j, S in enumerate(args.steps):
            v = [t[(t.estimator == e) & (t.steps == S)].w2_under_full.iloc[0] for e in labels]
            ax.bar(x + 0.8 * j / len(args.steps), v, width=0.8 / len(args.steps),
                   label=f"S = {S}")
        ax.set_xticks(x + 0.4 - 0.4 / len(args.steps), labels, rotation=30)
        ax.set_ylabel("W2 under the full spectrum")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(out / "estimators.png", force=True, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110, metadata=png_metadata(command))


if __name__ == "__main__":
    main()
