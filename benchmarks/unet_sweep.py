"""Does the spectral theory rank schedules as a trained network does? A U-Net on Fashion-MNIST.

For a U-Net trained with ``specsched train-unet`` (Fashion-MNIST at 16 x 16, linear T = 1000
training grid), samples ``--n-samples`` images per seed for every cell

    steps S in --steps (5 10 20 50 100) x sampler in --samplers (ddim ddpm) x schedule in
    --schedules (linear cosine karras logsnr optimized-w2 optimized-kl)

through the torch-free sampler (the network conditioned on the training step nearest in
logSNR), and measures the Frechet distance to the data in pixels (= W2^2 of the Gaussian
fits) and in the features of the project's classifier (``--classifier PATH``, trained there
when absent), mean and standard error over ``--seeds``. Beside each cell: the theory's
prediction, ``W2^2`` of the same sampler and schedule on the data's own spectrum
(:func:`specsched.theory.evaluate_schedule`), and ``optimized-w2`` / ``optimized-kl`` are
:func:`specsched.optimize.optimize_schedule` on that spectrum. The data side (spectrum and FD
reference) is the 60,000 training images at the network's size (``--reference-split``).

Outputs (``--out``, default results/unet_fashion_mnist.csv; first lines: the command, the code
version):

- the CSV, one row per (sampler, steps, schedule) cell;
- ``<out>_spearman.csv``: Spearman rank correlation between predicted W2^2 and measured FD
  over the schedules, per (sampler, steps) and over all cells; ``*_without_kl`` leaves out
  optimized-kl, whose last place both agree on and which would carry the correlation alone;
- ``<out>_vs_baselines.csv``: optimised minus baseline FD per (sampler, steps), paired over
  seeds (the same seeds draw the same initial noise for every schedule), with its standard
  error and the ratio of the means;
- ``<out>_floor.csv``: FD of ``--n-samples`` held-out real images per seed (the other
  split), the value a perfect sampler would score at this sample size;
- ``<out>.png``: FD against steps per schedule (theory dashed in the pixel panels);
- ``<out>_S10_<sampler>_{best,worst}.png``: 8 x 8 sample grids of the best and worst
  schedule (classifier FD, else pixel FD) at S = 10.

``optimized-*`` schedules are optimised within the training grid's range
``[ab_train[T-1], ab_train[0]]`` (``--optimize-bounds training-grid``, the default): a level
outside it is one the network never saw (the nearest-step rule would condition it on an end
step). ``--optimize-bounds default`` uses the theory's default bounds instead (the hull of the
baselines, down to cosine's 2.4e-9). Baselines keep their own end points. KID (polynomial
kernel MMD^2, 100 subsets of 500) in classifier features sits beside the FD.

Cells run in ``--jobs`` worker processes (one torch thread each; default 2, this machine's
cores), the largest step counts first.

``x0_hat`` is clipped to [-1, 1] unless ``--no-clip`` (column ``clip``): measured on the
default U-Net after 2657 steps, DDIM S = 10, 500 samples, the pixel FD of the cosine schedule
is 3.6e7 unclipped and 1.9 clipped (its last level, ab ~ 1e-9, divides the network's eps
error by sqrt(ab)); linear 2.6 / 2.2, karras 2.8 / 2.8, logsnr 3.7 / 3.2. Resumable: cells
whose rows exist (same n-samples, seeds and clipping) are skipped; the CSV is
rewritten after every cell.

    python benchmarks/unet_sweep.py --checkpoint unet.pt --classifier clf16.pt \\
        [--n-samples 1000] [--seeds 0 1 2] [--steps 5 10 20 50 100] [--jobs 2]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsched.analysis.plots import save_figure
from specsched.fileio import atomic_write
from specsched.provenance import header

SCHEDULES = ("linear", "cosine", "karras", "logsnr", "optimized-w2", "optimized-kl")
KEY = ["sampler", "steps", "schedule"]


def schedule_for(name, steps, sampler, spectrum, cache, bounds=None):
    """alphas_cumprod (S,) of a baseline or of an optimised schedule on the spectrum.

    ``bounds``: (ab_min, ab_max) of the optimiser, None for its defaults.
    """
    from specsched.schedules import baseline_alphas_cumprod

    if not name.startswith("optimized-"):
        return baseline_alphas_cumprod(name, steps)
    key = (name, steps, sampler)
    if key not in cache:
        from specsched.optimize import optimize_schedule

        kw = {} if bounds is None else {"ab_min": bounds[0], "ab_max": bounds[1]}
        r = optimize_schedule(spectrum.eigenvalues, spectrum.mean, steps,
                              loss=name.split("-", 1)[1], sampler=sampler, **kw)
        cache[key] = np.asarray(r.x)
    return cache[key]


def read_rows(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, comment="#")


def write_csv(df: pd.DataFrame, path: Path, command: str) -> None:
    """Write ``df`` to ``path`` under the provenance header (the command, the code version)."""
    with atomic_write(path, force=True) as fh:
        fh.write(header(command))
        df.to_csv(fh, index=False)


def spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import spearmanr

    rows = []
    fds = [c for c in ("fd_pixels_mean", "fd_classifier_mean") if c in df]
    groups = [((s, S), g) for (s, S), g in df.groupby(["sampler", "steps"])]
    groups.append((("all", "all"), df))
    for (sampler, steps), g in groups:
        row = {"sampler": sampler, "steps": steps, "n_cells": len(g)}
        for c in fds:
            name = c.removesuffix("_mean").removeprefix("fd_")
            for suffix, h in (("", g), ("_without_kl", g[g["schedule"] != "optimized-kl"])):
                ok = h[["predicted_w2_squared", c]].dropna()
                rho = (spearmanr(ok.iloc[:, 0], ok.iloc[:, 1]).statistic if len(ok) > 2
                       else np.nan)
                row[f"spearman_{name}{suffix}"] = rho
        rows.append(row)
    return pd.DataFrame(rows)


def compare_table(df: pd.DataFrame) -> pd.DataFrame:
    """Optimised minus baseline FD per (sampler, steps), paired over seeds.

    The seeds draw the same initial noise for every schedule, so the difference is taken seed
    by seed; ``*_se`` is the standard error of those differences, ``*_ratio`` the ratio of
    the means (< 1: the optimised schedule is better).
    """
    rows = []
    feats = [f for f in ("pixels", "classifier") if f"fd_{f}_seeds" in df]
    for (sampler, steps), g in df.groupby(["sampler", "steps"]):
        by = g.set_index("schedule")
        for opt in (o for o in ("optimized-w2", "optimized-kl") if o in by.index):
            for base in (b for b in ("linear", "cosine", "karras", "logsnr") if b in by.index):
                row = {"sampler": sampler, "steps": steps, "optimized": opt, "baseline": base}
                for f in feats:
                    a = np.array(str(by.loc[opt, f"fd_{f}_seeds"]).split(), float)
                    b = np.array(str(by.loc[base, f"fd_{f}_seeds"]).split(), float)
                    d = a - b
                    row[f"{f}_diff"] = d.mean()
                    row[f"{f}_diff_se"] = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else np.nan
                    row[f"{f}_ratio"] = a.mean() / b.mean()
                rows.append(row)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: Path, floor: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = [f for f in ("pixels", "classifier") if f"fd_{f}_mean" in df]
    samplers = list(dict.fromkeys(df["sampler"]))
    fig, axes = plt.subplots(len(feats), len(samplers), figsize=(5 * len(samplers),
                             3.8 * len(feats)), squeeze=False)
    for i, feat in enumerate(feats):
        for j, sampler in enumerate(samplers):
            ax = axes[i][j]
            for k, (name, g) in enumerate(df[df["sampler"] == sampler].groupby("schedule")):
                g = g.sort_values("steps")
                color = f"C{k}"
                ax.errorbar(g["steps"], g[f"fd_{feat}_mean"], yerr=g[f"fd_{feat}_se"],
                            marker="o", ms=3, color=color, label=name, capsize=2)
                if feat == "pixels":
                    ax.plot(g["steps"], g["predicted_w2_squared"], "--", color=color, lw=1)
            if floor and feat in floor:
                ax.axhline(floor[feat], color="k", lw=0.8, ls=":",
                           label="held-out real images")
            ax.set(xscale="log", yscale="log", xlabel="steps S",
                   ylabel=f"FD ({feat})", title=f"{sampler}, {feat}"
                   + (" (dashed: theory W2^2)" if feat == "pixels" else ""))
            ax.legend(fontsize=7)
    save_figure(fig, path, force=True)


_WORKER = {}


def _init_worker(checkpoint, batch_size, clip, threads, classifier, ref, kid_ref):
    """Per-process state: the network, the classifier and the data-side fits."""
    import torch

    from specsched.metrics.features import load_or_train_classifier
    from specsched.unet.denoiser import UNetDenoiser

    torch.set_num_threads(threads)
    den = UNetDenoiser.from_checkpoint(checkpoint, batch_size=batch_size, clip_denoised=clip)
    clf = None
    if classifier:
        clf, _ = load_or_train_classifier(classifier, den.sample_shape[0], progress=False)
    _WORKER.update(den=den, clf=clf, ref=ref, kid_ref=kid_ref)


def scores(x, clf, ref, kid_ref, seed) -> dict:
    """FD of images ``x`` (n, H, W, C) to each reference fit, and KID in classifier features.

    ``ref``: {"pixels": GaussianFit[, "classifier": GaussianFit]}; ``kid_ref``: reference
    classifier features (m, 128) or None; ``seed`` draws the KID subsets.
    """
    from specsched.metrics.features import classifier_features
    from specsched.metrics.frechet import frechet_distance, gaussian_fit, kernel_distance

    feats = {"pixels": x.reshape(len(x), -1)}
    if clf is not None:
        feats["classifier"] = classifier_features(x, clf)
    out = {}
    for feat, fit in ref.items():
        g = gaussian_fit(feats[feat])
        out[f"fd_{feat}"] = frechet_distance(g.mean, g.covariance, fit.mean, fit.covariance)
    if kid_ref is not None:
        out["kid_classifier"] = kernel_distance(
            feats["classifier"], kid_ref, n_subsets=100, subset_size=min(500, len(x)),
            rng=np.random.default_rng(10_000 + seed)).mean
    return out


def summarise(per_seed: list[dict]) -> dict:
    """``<key>_mean``, ``<key>_se`` (standard error over seeds) and ``<key>_seeds``."""
    row = {}
    for key in per_seed[0]:
        v = np.array([d[key] for d in per_seed])
        row[f"{key}_mean"] = v.mean()
        row[f"{key}_se"] = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan
        row[f"{key}_seeds"] = " ".join(f"{u:.6g}" for u in v)
    return row


def _run_cell(sampler, eta, ab, n_samples, seeds, batch_size):
    """:func:`scores` of each seed's samples of one cell, and the seconds it took."""
    from specsched.sampling import sample

    den, clf, ref, kid_ref = (_WORKER[k] for k in ("den", "clf", "ref", "kid_ref"))
    t0 = time.perf_counter()
    per_seed = []
    for seed in seeds:
        x = sample(den, ab, n_samples, den.sample_shape, sampler=sampler, eta=eta,
                   rng=np.random.default_rng(seed), batch_size=batch_size, progress=False)
        per_seed.append(scores(x, clf, ref, kid_ref, seed))
    return per_seed, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="train-unet checkpoint (.pt)")
    parser.add_argument("--classifier", default=None,
                        help="classifier weights file (trained there when absent); omit for "
                        "pixel FD only")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--samplers", nargs="+", default=["ddim", "ddpm"],
                        choices=["ddim", "ddpm"])
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-samples", type=int, default=1000, help="samples per seed")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--reference-split", choices=["train", "test"], default="train",
                        help="data side of the spectrum and FD reference (default train)")
    parser.add_argument("--optimize-bounds", choices=["training-grid", "default"],
                        default="training-grid",
                        help="alphas_cumprod range of the optimised schedules: the network's "
                        "training grid (default) or the theory's default bounds")
    parser.add_argument("--no-clip", dest="clip", action="store_false",
                        help="do not clip x0_hat to [-1, 1] (clipping is the default, as in "
                        "the DDPM/DDIM reference samplers: an eps-prediction network's x0_hat "
                        "amplifies its error by 1/sqrt(ab) at the noisiest levels, e.g. the "
                        "cosine schedule's last step, ab ~ 1e-9)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (default 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes, one cell each at a time (default 2)")
    parser.add_argument("--out", default="results/unet_fashion_mnist.csv")
    args = parser.parse_args(argv)
    command = "python benchmarks/unet_sweep.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    from tqdm.auto import tqdm

    from specsched.data.fashion_mnist import fashion_mnist_images
    from specsched.metrics.features import classifier_features, load_or_train_classifier
    from specsched.metrics.frechet import gaussian_fit
    from specsched.plots import save_grid
    from specsched.sampling import sample
    from specsched.schedules import logsnr_from_alphas_cumprod
    from specsched.spectrum import spectrum_from_samples
    from specsched.theory import evaluate_schedule, resolve_eta
    from specsched.unet.denoiser import UNetDenoiser, nearest_timesteps

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    stem = out.with_suffix("")
    den = UNetDenoiser.from_checkpoint(args.checkpoint, batch_size=args.batch_size,
                                       clip_denoised=args.clip)
    size = den.sample_shape[0]
    data = fashion_mnist_images(size, args.reference_split)
    spectrum = spectrum_from_samples(data.astype(np.float64),
                                     source=f"fashion-mnist-{size}-{args.reference_split}")
    lam, mean = spectrum.eigenvalues, spectrum.mean
    train_ab = den.training_alphas_cumprod
    bounds = ((float(train_ab.min()), float(train_ab.max()))
              if args.optimize_bounds == "training-grid" else None)
    ref = {"pixels": gaussian_fit(data.reshape(len(data), -1))}
    clf = kid_ref = None
    if args.classifier:
        clf, info = load_or_train_classifier(args.classifier, size, progress=True)
        print(f"classifier {args.classifier}: test accuracy {info['test_accuracy']:.4f}")
        data_features = classifier_features(data, clf)
        ref["classifier"] = gaussian_fit(data_features)
        kid_ref = data_features[np.random.default_rng(12345).choice(len(data), 5000,
                                                                      replace=False)]

    old = read_rows(out)
    rows = [] if old is None else old.to_dict("records")

    def done(sampler, steps, name):
        return any(r["sampler"] == sampler and r["steps"] == steps and r["schedule"] == name
                   and r["n_samples"] == args.n_samples and bool(r.get("clip", False)) == args.clip
                   and str(r["seeds"]) == " ".join(map(str, args.seeds))
                   and r.get("optimize_bounds", "default") == args.optimize_bounds
                   and (clf is None or pd.notna(r.get("fd_classifier_mean"))) for r in rows)

    cells = [(sampler, steps, name) for sampler in args.samplers for steps in args.steps
             for name in args.schedules]
    todo = sorted((c for c in cells if not done(*c)), key=lambda c: -c[1])
    print(f"{len(cells) - len(todo)} of {len(cells)} cells done already; "
          f"{sum(c[1] for c in todo) * args.n_samples * len(args.seeds)} network evaluations "
          f"(samples x steps) to go on {args.jobs} workers")
    opt_cache = {}
    meta = {}
    for sampler, steps, name in todo:  # theory side first, in this process (fast)
        eta = resolve_eta(sampler, None)
        ab = schedule_for(name, steps, sampler, spectrum, opt_cache, bounds)
        th = evaluate_schedule(lam, mean, ab, sampler=sampler, eta=eta)
        t_idx = nearest_timesteps(train_ab, ab)
        rounding = np.abs(logsnr_from_alphas_cumprod(train_ab[t_idx])
                          - logsnr_from_alphas_cumprod(ab)).max()
        meta[sampler, steps, name] = (eta, ab, {
            "sampler": sampler, "steps": steps, "schedule": name,
            "predicted_w2_squared": th.w2 ** 2, "predicted_kl": th.kl,
            "clip": args.clip, "optimize_bounds": args.optimize_bounds,
            "n_samples": args.n_samples, "seeds": " ".join(map(str, args.seeds)),
            "max_logsnr_rounding": rounding,
            "alphas_cumprod": " ".join(f"{v:.8g}" for v in ab)})

    init = (args.checkpoint, args.batch_size, args.clip, args.threads, args.classifier, ref,
            kid_ref)
    args_of = {c: (c[0], meta[c][0], meta[c][1], args.n_samples, args.seeds, args.batch_size)
               for c in todo}

    def results():
        """(cell, values, seconds) as cells finish: in this process, or in a spawned pool."""
        if args.jobs == 1 or len(todo) <= 1:
            _init_worker(*init)
            for c in todo:
                yield (c, *_run_cell(*args_of[c]))
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx,
                                 initializer=_init_worker, initargs=init) as pool:
            futures = {pool.submit(_run_cell, *args_of[c]): c for c in todo}
            for fut in as_completed(futures):
                yield (futures[fut], *fut.result())

    for cell, per_seed, seconds in tqdm(results(), total=len(todo), desc="cells", unit="cell"):
        row = dict(meta[cell][2], seconds=seconds, **summarise(per_seed))
        rows = [r for r in rows if (r["sampler"], r["steps"], r["schedule"]) != cell] + [row]
        write_csv(pd.DataFrame(rows), out, command)

    df = pd.DataFrame(rows)
    df = df[df.apply(lambda r: (r["sampler"], r["steps"], r["schedule"]) in set(cells), axis=1)]
    df = df.sort_values(KEY, key=lambda c: c.map({n: i for i, n in enumerate(SCHEDULES)})
                        if c.name == "schedule" else c)
    write_csv(df, out, command)
    sp = spearman_table(df)
    write_csv(sp, Path(f"{stem}_spearman.csv"), command)
    print(sp.to_string(index=False))
    # the metrics' own floor: held-out images (never seen by the network) scored like samples
    split = "test" if args.reference_split == "train" else "train"
    other = fashion_mnist_images(size, split)
    frow = {"images": f"held-out {split}", "n_samples": args.n_samples,
            "seeds": " ".join(map(str, args.seeds)), **summarise([
                scores(other[np.random.default_rng(seed).choice(len(other), args.n_samples,
                                                                replace=False)],
                       clf, ref, kid_ref, seed) for seed in args.seeds])}
    write_csv(pd.DataFrame([frow]), Path(f"{stem}_floor.csv"), command)
    cmp = compare_table(df)
    write_csv(cmp, Path(f"{stem}_vs_baselines.csv"), command)
    plot(df, Path(f"{stem}.png"), {f: frow[f"fd_{f}_mean"] for f in ref})
    rank_by = "fd_classifier_mean" if "fd_classifier_mean" in df else "fd_pixels_mean"
    for sampler in args.samplers:
        g = df[(df["sampler"] == sampler) & (df["steps"] == 10)]
        if g.empty:
            continue
        for tag, name in (("best", g.loc[g[rank_by].idxmin(), "schedule"]),
                          ("worst", g.loc[g[rank_by].idxmax(), "schedule"])):
            ab = schedule_for(name, 10, sampler, spectrum, opt_cache, bounds)
            x = sample(den, ab, 64, den.sample_shape, sampler=sampler,
                       rng=np.random.default_rng(0), batch_size=64, progress=False)
            path = Path(f"{stem}_S10_{sampler}_{tag}.png")
            save_grid(x, path, force=True)
            print(f"{path}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
