"""Does an optimised schedule help a trained network, with the samplers people use?

A noise-level-conditioned U-Net (``TrainConfig(preconditioning="edm")``, Karras et al. 2022's
preconditioning, 16 x 16 Fashion-MNIST) is sampled through specsched's own k-diffusion
samplers (:mod:`specsched.sampling.ksamplers`: the step definitions of the closed form) and
DDIM (:func:`specsched.sampling.sample`), each level at its own value (no training grid).
Per cell (sampler, NFE budget, schedule, clipping) it draws ``--n-samples`` images for each
of ``--seeds`` (the same seed draws the same start and step noise for every schedule, so
differences are paired) and scores them against the 60,000 training images:

- ``fd_pixels``: Frechet distance of Gaussian fits in pixels (= W2^2, comparable with the
  theory's ``predicted_w2_squared``);
- ``fd_classifier`` and ``kid_classifier``: FD and KID (polynomial-kernel MMD^2, 100 subsets
  of 500) in the features of the project's 16 x 16 classifier (``--classifier``, trained
  there when absent);
- ``rapsd_err_db``: the per-frequency error, ``10 log10`` of the generated images' RAPSD over
  the held-out test images' RAPSD per ring (rms over rings here; per ring in
  ``<out>_rapsd.csv``).

Schedules, each with the sampler's own number of steps for the budget
(:func:`specsched.theory.samplers.steps_within_nfe`), all inside the network's trained sigma
range (``--sigma-range``, default the checkpoint's central 99.8%):

- ``optimized-w2``: W2 optimised for that sampler on the data's spectrum
  (:func:`specsched.optimize.optimize_schedule`, bounds = the trained range);
- ``optimized-calibrated``: the same optimiser on the network-calibrated closed form
  (``calibration=``: the network's measured per-direction gain, bias and residual variance,
  :func:`specsched.sampling.calibration.calibrate_denoiser` on ``--calibration-samples``
  held-out images at ``--calibration-levels`` log-spaced levels);
- ``karras`` (rho = 7), ``kl_optimal``, ``exponential``: k-diffusion's / ComfyUI's rules on
  the trained range;
- ``linear``, ``cosine``: the VP training families' levels in log sigma, affinely mapped onto
  the trained range (their own ends, sigma up to 157 and 3e4, lie outside it);
- ``gits``: Chen et al. 2024's dynamic programme (:mod:`specsched.sampling.gits`) on the
  network's own teacher trajectories: ``--gits-warmup`` warm-up samples, a 60-level Heun
  teacher on Karras's rho = 7 grid over the trained range, cost coefficient 1.15; one cost
  matrix for every cell.

Outputs (stem ``--out``, default results/unet_fm; each CSV opens with the command and the code
version):

- ``<out>_cells.csv``: one row per cell: metrics' mean, se and per-seed values, the
  theory's W2^2 (Wiener and calibrated) and KL beside them, the sigmas run; rewritten
  after every finished cell, and a rerun skips the cells already there (same samples and
  seeds);
- ``<out>_paired.csv``: optimised minus each competitor per (sampler, NFE), seed by seed,
  mean and standard error, ``verdict`` win / lose (a paired two-sided t-test at 5%:
  ``|mean| > t_{0.975, n-1} se``) or tie (unresolved);
- ``<out>_spearman.csv``: Spearman of the Wiener and of the calibrated theory against each
  metric over the schedules of each (sampler, NFE), and over all cells;
- ``<out>_floor.csv``: held-out test images scored like samples (the metrics' floor);
- ``<out>_gap.csv``: the network's measured gain, residual variance and bias against the
  Wiener filter's at each calibration level; ``<out>_timing.csv``: seconds of the
  calibration, GITS's cost matrix and programme, and each optimisation;
- ``<out>_rapsd.csv`` (per ring), ``<out>.png`` (metrics against NFE, theory dashed),
  ``<out>_gap.png``;
- ``<out>_report.md``: every table above as Markdown, generated from the CSVs
  (``--report-only`` rewrites it, the paired and Spearman tables and the figure without
  sampling).

``--plan default`` (1.75 M network evaluations at 5 x 1000 samples per cell, about an hour on
this 2-core machine) is dpmpp-2m, euler and heun at NFE 5 and 10 with the two optimised
schedules, karras, kl_optimal and GITS; euler-ancestral at NFE 5 and 10 without the
calibrated optimum; DDIM at NFE 10 (optimised, karras); the clipping control and the
exponential and mapped linear / cosine schedules with dpmpp-2m at NFE 10. ``--plan extended``
adds dpmpp-2m at NFE 20 (five schedules) and at NFE 8 and 15 (four). ``--plan full`` is every
sampler x NFE 5, 8, 10, 15, 20 x schedule (about 5 hours here); ``--plan smoke`` a six-cell
check of every path. Cells run in this order, so a stopped run has the first ones.

    python benchmarks/unet_fm_study.py --checkpoint unet_edm.pt --classifier clf16.pt \\
        [--plan default] [--seeds 0 1 2 3 4] [--n-samples 1000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from unet_sweep import scores as fd_scores
from unet_sweep import summarise, write_csv

from specsched.errors import InputError
from specsched.fileio import atomic_write

OPTIMISED = ("optimized-w2", "optimized-calibrated")
SIGMA_FAMILIES = ("karras", "kl_optimal", "exponential")
VP_FAMILIES = ("linear", "cosine")
SCHEDULES = (*OPTIMISED, *SIGMA_FAMILIES, *VP_FAMILIES, "gits")
SAMPLERS = ("euler", "heun", "dpmpp-2m", "euler-ancestral", "ddim")
NFES = (5, 8, 10, 15, 20)
CORE = ("optimized-w2", "karras", "kl_optimal", "gits")
KEY = ["sampler", "nfe_budget", "schedule", "clip"]


def plan_cells(plan: str) -> list[tuple[str, int, str, bool]]:
    """The cells (sampler, NFE budget, schedule, clip) of a plan, in the order they run."""
    if plan == "smoke":
        return [("dpmpp-2m", 5, k, False) for k in ("optimized-w2", "optimized-calibrated",
                                                     "karras", "gits")] + [
            ("ddim", 5, "karras", False), ("euler-ancestral", 5, "linear", True)]
    if plan == "full":
        cells = [(s, n, k, False) for s in SAMPLERS for n in NFES for k in SCHEDULES]
        return cells + [("dpmpp-2m", 10, k, True) for k in ("optimized-w2", "karras")]
    five = (*CORE[:1], "optimized-calibrated", *CORE[1:])
    cells = [(s, n, k, False) for s in ("dpmpp-2m", "euler", "heun") for n in (5, 10)
             for k in five]
    cells += [("euler-ancestral", n, k, False) for n in (5, 10) for k in CORE]
    cells += [("ddim", 10, k, False) for k in ("optimized-w2", "karras")]
    cells += [("dpmpp-2m", 10, k, True) for k in ("optimized-w2", "karras")]
    cells += [("dpmpp-2m", 10, k, False) for k in ("exponential", *VP_FAMILIES)]
    if plan == "extended":
        cells += [("dpmpp-2m", 20, k, False) for k in five]
        cells += [("dpmpp-2m", n, k, False) for n in (8, 15) for k in CORE]
    return cells


def check_images(images, shape, name: str) -> np.ndarray:
    """``images`` as float64 (n, H, W, C) of the network's ``shape`` in [-1, 1], or InputError
    naming ``name`` and the expected shape."""
    x = np.asarray(images)
    if x.ndim == 3 and shape[2] == 1:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 3:
        raise InputError(f"{name}: expected images of shape (n, {', '.join(map(str, shape))}) "
                         f"with n >= 3 (the checkpoint's size), got {tuple(np.shape(images))}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all() or x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
        raise InputError(f"{name}: expected finite pixels in [-1, 1] (x / 255 * 2 - 1), got "
                         f"values from {np.nanmin(x):.4g} to {np.nanmax(x):.4g}")
    return x


def load_images(path, shape, split: str) -> np.ndarray:
    """Images of a ``.npy`` file, or Fashion-MNIST ``split`` at the network's size."""
    if path is None:
        from specsched.data.fashion_mnist import fashion_mnist_images

        return check_images(fashion_mnist_images(shape[0], split), shape,
                            f"fashion-mnist {split}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read a .npy array ({err})") from None
    return check_images(arr, shape, str(path))


def mapped_vp_family(name: str, steps: int, smin: float, smax: float) -> np.ndarray:
    """alphas_cumprod (S,) of a VP family's levels, affinely mapped in log sigma onto
    ``[smin, smax]`` (step 1 = smin)."""
    from specsched.schedules import (
        alphas_cumprod_from_sigmas,
        baseline_alphas_cumprod,
        sigmas_from_alphas_cumprod,
    )

    ls = np.log(sigmas_from_alphas_cumprod(baseline_alphas_cumprod(name, steps)))
    if steps == 1:
        return alphas_cumprod_from_sigmas(np.array([smax]))
    u = (ls - ls[0]) / (ls[-1] - ls[0])
    return alphas_cumprod_from_sigmas(np.exp(np.log(smin) + u * (np.log(smax) - np.log(smin))))


def image_rapsd(x: np.ndarray) -> np.ndarray:
    """RAPSD (rings,) of images (n, H, W, C), each centred by the set's mean image, unitary
    DFT, averaged over images and channels (:func:`specsched.analysis.rapsd.rapsd`)."""
    from specsched.analysis.rapsd import rapsd

    c = x - x.mean(axis=0)
    f = np.fft.fft2(c, axes=(1, 2), norm="ortho")
    return rapsd((np.abs(f) ** 2).mean(axis=(0, 3)))[0]


_WORKER = {}


def _init_worker(checkpoint, batch_size, classifier, ref, kid_ref, rapsd_ref):
    """Per-process state: the network (its clipping set per cell), the classifier, the
    references."""
    import torch

    from specsched.metrics.features import load_or_train_classifier
    from specsched.unet.denoiser import EDMDenoiser

    torch.set_num_threads(1)
    den = EDMDenoiser.from_checkpoint(checkpoint, batch_size=batch_size)
    clf = None
    if classifier:
        clf, _ = load_or_train_classifier(classifier, den.sample_shape[0], progress=False)
    _WORKER.update(den=den, clf=clf, ref=ref, kid_ref=kid_ref,
                   rapsd_ref=rapsd_ref)


def score_images(x, clf, ref, kid_ref, rapsd_ref, seed) -> tuple[dict, np.ndarray]:
    """FD / KID (:func:`unet_sweep.scores`) and the RAPSD error of images (n, H, W, C):
    ``(scores, per-ring error in dB)``."""
    out = fd_scores(x, clf, ref, kid_ref, seed)
    ring = 10.0 * np.log10(image_rapsd(x) / rapsd_ref)
    out["rapsd_err_db"] = float(np.sqrt(np.mean(ring ** 2)))
    return out, ring


def _run_cell(sampler, ab, clip, n_samples, seeds):
    """Scores of each seed's samples of one cell (one batch of ``n_samples`` per seed,
    :func:`specsched.unet.denoiser.sample_edm`), per-ring errors, seconds."""
    from specsched.unet.denoiser import sample_edm

    den = _WORKER["den"]
    den.clip_denoised = clip
    t0 = time.perf_counter()
    per_seed, rings = [], []
    for seed in seeds:
        x = sample_edm(den, ab, sampler, n_samples, rng=np.random.default_rng(seed),
                       batch_size=n_samples)
        s, ring = score_images(x, _WORKER["clf"], _WORKER["ref"], _WORKER["kid_ref"],
                               _WORKER["rapsd_ref"], seed)
        per_seed.append(s)
        rings.append(ring)
    return per_seed, np.array(rings), time.perf_counter() - t0


def verdict(d) -> str:
    """``"win"`` / ``"lose"`` when the paired differences ``d`` (optimised minus competitor,
    one per seed) are below / above 0 by a two-sided t-test at the 5% level
    (``|mean| > t_{0.975, n-1} se``), else ``"tie"`` (unresolved)."""
    from scipy.stats import t

    d = np.asarray(d, dtype=np.float64)
    if d.size < 2:
        return "tie"
    se = d.std(ddof=1) / np.sqrt(d.size)
    if abs(d.mean()) <= t.ppf(0.975, d.size - 1) * se:
        return "tie"
    return "win" if d.mean() < 0 else "lose"


def paired_table(df: pd.DataFrame) -> pd.DataFrame:
    """Optimised minus competitor per (sampler, NFE, clip), seed by seed (module docstring)."""
    metrics = [m for m in ("fd_pixels", "fd_classifier", "kid_classifier", "rapsd_err_db")
               if f"{m}_seeds" in df]
    rows = []
    for (sampler, nfe, clip), g in df.groupby(["sampler", "nfe_budget", "clip"]):
        by = g.set_index("schedule")
        for opt in (o for o in OPTIMISED if o in by.index):
            for base in (b for b in SCHEDULES if b in by.index and b != opt):
                if opt == "optimized-w2" and base == "optimized-calibrated":
                    continue
                row = {"sampler": sampler, "nfe_budget": nfe, "clip": clip,
                       "optimized": opt, "competitor": base}
                for m in metrics:
                    a = np.array(str(by.loc[opt, f"{m}_seeds"]).split(), float)
                    b = np.array(str(by.loc[base, f"{m}_seeds"]).split(), float)
                    d = a - b
                    se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else np.nan
                    row[f"{m}_diff"] = d.mean()
                    row[f"{m}_diff_se"] = se
                    row[f"{m}_ratio"] = a.mean() / b.mean()
                    row[f"{m}_verdict"] = verdict(d)
                rows.append(row)
    return pd.DataFrame(rows)


def spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    """Spearman of each theory against each metric over the schedules of a cell group."""
    from scipy.stats import spearmanr

    metrics = [m for m in ("fd_pixels", "fd_classifier", "kid_classifier") if f"{m}_mean" in df]
    theories = {"wiener": "predicted_w2_squared", "calibrated": "calibrated_w2_squared"}
    main = df[~df["clip"].astype(bool)]
    groups = [((s, n), g) for (s, n), g in main.groupby(["sampler", "nfe_budget"])]
    groups.append((("all", "all"), main))
    rows = []
    for (sampler, nfe), g in groups:
        row = {"sampler": sampler, "nfe_budget": nfe, "n_schedules": len(g)}
        for tname, tcol in theories.items():
            for m in metrics:
                ok = g[[tcol, f"{m}_mean"]].dropna()
                row[f"{tname}_vs_{m}"] = (spearmanr(ok.iloc[:, 0], ok.iloc[:, 1]).statistic
                                          if len(ok) > 2 else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure to ``path`` atomically (PNG, 110 dpi) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    with atomic_write(path, force=True, mode="wb") as fh:
        fh.write(buf.getvalue())


def plot_cells(df: pd.DataFrame, path: Path, floor: dict) -> None:
    """``<out>.png``: each metric (rows) against NFE per sampler (columns), one line per
    schedule with its s.e., the Wiener theory's W2^2 dashed in the pixel panels and the
    held-out ``floor`` ({metric: value}) dotted; unclipped cells only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df[~df["clip"].astype(bool)]
    metrics = [m for m in ("fd_pixels", "fd_classifier", "rapsd_err_db") if f"{m}_mean" in df]
    samplers = [s for s in SAMPLERS if s in set(df["sampler"])]
    fig, axes = plt.subplots(len(metrics), len(samplers), squeeze=False,
                             figsize=(4.2 * len(samplers), 3.4 * len(metrics)))
    for j, sampler in enumerate(samplers):
        sub = df[df["sampler"] == sampler]
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            for k, name in enumerate(SCHEDULES):
                g = sub[sub["schedule"] == name].sort_values("nfe")
                if g.empty:
                    continue
                ax.errorbar(g["nfe"], g[f"{m}_mean"], yerr=g[f"{m}_se"], marker="o", ms=3,
                            capsize=2, color=f"C{k}", label=name)
                if m == "fd_pixels":
                    ax.plot(g["nfe"], g["predicted_w2_squared"], "--", color=f"C{k}", lw=0.8)
            if m in floor:
                ax.axhline(floor[m], color="k", ls=":", lw=0.8, label="held-out images")
            ax.set(yscale="log", xlabel="NFE", ylabel=m, title=f"{sampler}: {m}"
                   + (" (dashed: theory W2^2)" if m == "fd_pixels" else ""))
            ax.legend(fontsize=6)
    fig.tight_layout()
    save_png(fig, path)


def plot_gap(gap: pd.DataFrame, path: Path) -> None:
    """``<out>_gap.png``: the columns of :func:`gap_table` against sigma (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(gap["sigma"], gap["median_abs_gain_error"], "o-", label="median |a - g|")
    axes[0].plot(gap["sigma"], gap["max_abs_gain_error"], "s--", label="max |a - g|")
    axes[0].set(xscale="log", yscale="log", xlabel="sigma", title="gain: network a vs Wiener g")
    axes[1].plot(gap["sigma"], gap["residual_variance_share"], "o-")
    axes[1].set(xscale="log", xlabel="sigma", title="residual variance / total variance")
    axes[2].plot(gap["sigma"], gap["bias_rms"], "o-")
    axes[2].set(xscale="log", yscale="log", xlabel="sigma", title="bias rms (eigenbasis)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def gap_table(cal, lam) -> pd.DataFrame:
    """The network's calibration against the Wiener filter at each calibration level."""
    rows = []
    for g, s in enumerate(cal.sigmas):
        wiener = lam / (lam + s * s)
        err = np.abs(cal.gain[g] - wiener)
        rows.append({"sigma": s, "median_abs_gain_error": float(np.median(err)),
                     "max_abs_gain_error": float(err.max()),
                     "mean_gain_minus_wiener_top10": float(np.mean(cal.gain[g, :10]
                                                                  - wiener[:10])),
                     "residual_variance_share": float(cal.residual_variance[g].sum()
                                                      / lam.sum()),
                     "wiener_error_variance_share": float((lam * s * s / (lam + s * s)).sum()
                                                          / lam.sum()),
                     "bias_rms": float(np.sqrt(np.mean(cal.bias[g] ** 2)))})
    return pd.DataFrame(rows)


def main(argv=None):
    """Command line (module docstring); exit code 0, or 2 with one ``error:`` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="train-unet checkpoint trained with preconditioning='edm' (.pt)")
    parser.add_argument("--classifier", default=None,
                        help="classifier weights (trained there when absent); omit for pixel "
                        "metrics only")
    parser.add_argument("--plan", choices=["default", "extended", "full", "smoke"],
                        default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-samples", type=int, default=1000, help="samples per seed")
    parser.add_argument("--batch-size", type=int, default=250,
                        help="network batch (default 250, the fastest on this machine)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="expected resolution; refused when the checkpoint's differs")
    parser.add_argument("--train-images", default=None,
                        help=".npy (n, H, W, C) in [-1, 1]: spectrum and FD reference "
                        "(default Fashion-MNIST train at the checkpoint's size)")
    parser.add_argument("--test-images", default=None,
                        help=".npy (n, H, W, C): held-out images for the calibration, the "
                        "RAPSD reference and the floor (default Fashion-MNIST test)")
    parser.add_argument("--sigma-range", type=float, nargs=2, default=None,
                        metavar=("MIN", "MAX"),
                        help="levels of every schedule (default: the checkpoint's trained "
                        "range; a wider one is refused)")
    parser.add_argument("--calibration-samples", type=int, default=2000)
    parser.add_argument("--calibration-levels", type=int, default=16)
    parser.add_argument("--gits-warmup", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", default="results/unet_fm", help="output stem")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the paired, Spearman, figure and report files from the "
                        "CSVs under --out; no sampling")
    args = parser.parse_args(argv)
    command = "python benchmarks/unet_fm_study.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    try:
        if args.report_only:
            cells = Path(f"{args.out}_cells.csv")
            first = cells.read_text().splitlines()[0] if cells.is_file() else ""
            finish(Path(args.out), first.removeprefix("# ") or command)
            return 0
        return run(args, command)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, command) -> int:
    """The study on parsed ``args``: every check before any file is written, then the cells
    in plan order (resumable), the floor and :func:`finish`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    from tqdm.auto import tqdm

    from specsched.metrics.features import classifier_features, load_or_train_classifier
    from specsched.metrics.frechet import gaussian_fit
    from specsched.optimize import optimize_schedule
    from specsched.sampling.calibration import calibrate_denoiser
    from specsched.sampling.gits import GITS_COEFF, gits_cost_matrix, gits_dp
    from specsched.schedules import (
        alphas_cumprod_from_sigmas,
        baseline_alphas_cumprod,
        karras_alphas_cumprod,
        sigmas_from_alphas_cumprod,
    )
    from specsched.spectrum import spectrum_from_samples
    from specsched.theory import evaluate_schedule
    from specsched.theory.kclosed import kdiffusion_sigmas
    from specsched.theory.samplers import nfe_of, steps_within_nfe
    from specsched.unet.denoiser import EDMDenoiser

    torch.set_num_threads(max(1, args.jobs))
    out = Path(args.out)
    den = EDMDenoiser.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
    shape = den.sample_shape
    if args.image_size is not None and args.image_size != shape[0]:
        raise InputError(f"{args.checkpoint}: trained at {shape[0]} x {shape[1]}, expected "
                         f"--image-size {args.image_size}", param="image_size")
    lo, hi = den.sigma_range if args.sigma_range is None else args.sigma_range
    if not 0 < lo < hi:
        raise InputError(f"--sigma-range: expected 0 < MIN < MAX, got {lo} {hi}")
    den.check_sigmas([lo, hi], "--sigma-range")
    train = load_images(args.train_images, shape, "train")
    test = load_images(args.test_images, shape, "test")
    cells = plan_cells(args.plan)

    spectrum = spectrum_from_samples(train.reshape(len(train), -1),
                                     source=f"{args.train_images or 'fashion-mnist'} train")
    lam, mean, U = spectrum.eigenvalues, spectrum.mean, spectrum.eigenvectors
    ab_min, ab_max = 1.0 / (1.0 + hi * hi), 1.0 / (1.0 + lo * lo)
    timing = []

    # the schedules of every cell, and each one checked, before anything is sampled
    print("calibrating the network ...", flush=True)
    t0 = time.perf_counter()
    cal_x = test[np.random.default_rng(7).choice(len(test), min(args.calibration_samples,
                                                                 len(test)), replace=False)]
    cal = calibrate_denoiser(den, cal_x.reshape(len(cal_x), -1),
                             np.geomspace(lo, hi, args.calibration_levels),
                             eigenvectors=U, mean=U @ mean, rng=np.random.default_rng(0),
                             batch_size=args.batch_size)
    timing.append({"step": "calibration", "sampler": "", "nfe_budget": "",
                   "seconds": time.perf_counter() - t0,
                   "network_evaluations": len(cal_x) * args.calibration_levels})

    gits_grid = None
    if any(c[2] == "gits" for c in cells):
        print("GITS: teacher trajectories and cost matrix ...", flush=True)
        t0 = time.perf_counter()
        gits_grid = sigmas_from_alphas_cumprod(karras_alphas_cumprod(60, lo, hi))[::-1].copy()
        starts = hi * np.random.default_rng(123).standard_normal((args.gits_warmup,
                                                                  int(np.prod(shape))))
        evaluations = [0]

        def counted(x, sigma):
            evaluations[0] += len(x)
            return den(x, sigma)

        cost = gits_cost_matrix(counted, gits_grid, starts, "heun")
        timing.append({"step": "gits cost matrix", "sampler": "", "nfe_budget": "",
                       "seconds": time.perf_counter() - t0,
                       "network_evaluations": evaluations[0]})

    sched = {}
    for sampler, nfe, name, _clip in tqdm(cells, desc="schedules", unit="cell"):
        steps = steps_within_nfe(sampler, nfe)
        key = (sampler, nfe, name)
        if key in sched:
            continue
        t0 = time.perf_counter()
        if name in OPTIMISED:
            kw = {"calibration": cal} if name == "optimized-calibrated" else {}
            res = optimize_schedule(lam, mean, steps, sampler=sampler, ab_min=ab_min,
                                    ab_max=ab_max, sigma_range=(lo, hi), **kw)
            ab = np.asarray(res.x)
            timing.append({"step": f"optimize {name.split('-', 1)[1]}", "sampler": sampler,
                           "nfe_budget": nfe, "seconds": time.perf_counter() - t0,
                           "network_evaluations": 0, "success": bool(res.success)})
        elif name in SIGMA_FAMILIES:
            ab = baseline_alphas_cumprod(name, steps, sigma_range=(lo, hi))
        elif name in VP_FAMILIES:
            ab = mapped_vp_family(name, steps, lo, hi)
        else:
            idx = gits_dp(cost, steps, GITS_COEFF)
            ab = alphas_cumprod_from_sigmas(gits_grid[idx][::-1].copy())
            timing.append({"step": "gits programme", "sampler": sampler, "nfe_budget": nfe,
                           "seconds": time.perf_counter() - t0, "network_evaluations": 0})
        sigmas = kdiffusion_sigmas(ab)
        den.check_sigmas(sigmas, f"{name} ({sampler}, NFE {nfe})")
        th = evaluate_schedule(lam, mean, ab, sampler=sampler)
        tc = (evaluate_schedule(lam, mean, ab, sampler=sampler, calibration=cal)
              if sampler != "ddim" else None)
        sched[key] = {"ab": ab, "sigmas": sigmas, "steps": steps, "nfe": nfe_of(sampler, steps),
                      "predicted_w2_squared": th.w2 ** 2, "predicted_kl": th.kl,
                      "calibrated_w2_squared": np.nan if tc is None else tc.w2 ** 2}
    # every schedule is checked: from here on files are written
    write_csv(pd.DataFrame(timing), Path(f"{out}_timing.csv"), command)
    gap = gap_table(cal, lam)
    write_csv(gap, Path(f"{out}_gap.csv"), command)
    plot_gap(gap, Path(f"{out}_gap.png"))

    ref = {"pixels": gaussian_fit(train.reshape(len(train), -1))}
    clf = kid_ref = None
    if args.classifier:
        clf, info = load_or_train_classifier(args.classifier, shape[0], progress=True)
        print(f"classifier {args.classifier}: test accuracy {info['test_accuracy']:.4f}")
        feats = classifier_features(train, clf)
        ref["classifier"] = gaussian_fit(feats)
        kid_ref = feats[np.random.default_rng(12345).choice(len(train), 5000, replace=False)]
    rapsd_ref = image_rapsd(test)

    seeds = " ".join(map(str, args.seeds))
    path = Path(f"{out}_cells.csv")
    old = pd.read_csv(path, comment="#") if path.is_file() else None
    rows = [] if old is None else old.to_dict("records")
    ring_path = Path(f"{out}_rapsd.csv")
    old_rings = pd.read_csv(ring_path, comment="#") if ring_path.is_file() else None
    ring_rows = [] if old_rings is None else old_rings.to_dict("records")

    def done(c):
        return any((r["sampler"], r["nfe_budget"], r["schedule"], bool(r["clip"])) == c
                   and r["n_samples"] == args.n_samples and str(r["seeds"]) == seeds
                   and (clf is None or pd.notna(r.get("fd_classifier_mean"))) for r in rows)

    todo = [c for c in cells if not done(c)]
    print(f"{len(cells) - len(todo)} of {len(cells)} cells done already; "
          f"{sum(sched[c[:3]]['nfe'] for c in todo) * args.n_samples * len(args.seeds)} "
          f"network evaluations to go on {args.jobs} workers", flush=True)
    init = (args.checkpoint, args.batch_size, args.classifier, ref, kid_ref, rapsd_ref)

    def results():
        work = [(c, (c[0], sched[c[:3]]["ab"], c[3], args.n_samples, args.seeds))
                for c in todo]
        if args.jobs == 1 or len(todo) <= 1:
            _init_worker(*init)
            for c, a in work:
                yield (c, *_run_cell(*a))
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx,
                                 initializer=_init_worker, initargs=init) as pool:
            futures = {pool.submit(_run_cell, *a): c for c, a in work}
            for fut in as_completed(futures):
                yield (futures[fut], *fut.result())

    for cell, per_seed, rings, seconds in tqdm(results(), total=len(todo), desc="cells",
                                               unit="cell"):
        s = sched[cell[:3]]
        row = {"sampler": cell[0], "nfe_budget": cell[1], "nfe": s["nfe"], "steps": s["steps"],
               "schedule": cell[2], "clip": cell[3], "n_samples": args.n_samples,
               "seeds": seeds, **{k: s[k] for k in ("predicted_w2_squared", "predicted_kl",
                                                    "calibrated_w2_squared")},
               "seconds": seconds, **summarise(per_seed),
               "sigmas": " ".join(f"{v:.8g}" for v in s["sigmas"])}
        rows = [r for r in rows if (r["sampler"], r["nfe_budget"], r["schedule"],
                                    bool(r["clip"])) != cell] + [row]
        write_csv(pd.DataFrame(rows), path, command)
        ring_rows = [r for r in ring_rows if (r["sampler"], r["nfe_budget"], r["schedule"],
                                              bool(r["clip"])) != cell]
        for k in range(rings.shape[1]):
            ring_rows.append({"sampler": cell[0], "nfe_budget": cell[1], "schedule": cell[2],
                              "clip": cell[3], "ring": k, "err_db_mean": rings[:, k].mean(),
                              "err_db_se": rings[:, k].std(ddof=1) / np.sqrt(len(rings))
                              if len(rings) > 1 else np.nan})
        write_csv(pd.DataFrame(ring_rows), ring_path, command)

    df = pd.DataFrame(rows)
    df["clip"] = df["clip"].astype(bool)
    df = df[df.apply(lambda r: (r["sampler"], r["nfe_budget"], r["schedule"], r["clip"])
                     in set(cells), axis=1)]
    order = {n: i for i, n in enumerate(SCHEDULES)}
    df = df.sort_values(KEY, key=lambda c: c.map(order) if c.name == "schedule" else c)
    write_csv(df, path, command)
    per_seed = []
    for seed in args.seeds:
        pick = test[np.random.default_rng(seed).choice(len(test), args.n_samples,
                                                       replace=False)]
        per_seed.append(score_images(pick, clf, ref, kid_ref, rapsd_ref, seed)[0])
    frow = {"images": "held-out test", "n_samples": args.n_samples, "seeds": seeds,
            **summarise(per_seed)}
    write_csv(pd.DataFrame([frow]), Path(f"{out}_floor.csv"), command)
    finish(out, command)
    return 0


def _pm(mean, se, digits=3) -> str:
    """``mean ± se`` for a table cell (``-`` when missing)."""
    if mean is None or not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}g} ± {se:.2g}" if np.isfinite(se) else f"{mean:.{digits}g}"


def answers(main, paired) -> list[str]:
    """Markdown lines: per (sampler, NFE), the best schedule per metric and the verdicts of
    each optimised schedule against karras, kl_optimal and GITS (pixel / classifier FD)."""
    short = {"win": "W", "tie": "T", "lose": "L"}
    comps = [("optimized-w2", c) for c in ("karras", "kl_optimal", "gits")]
    comps.append(("optimized-calibrated", "optimized-w2"))
    lines = ["## Answers per sampler and NFE", "",
             "Verdicts as `pixels/classifier`: W the optimised schedule is better, L worse, T "
             "unresolved (paired t-test at 5 %, below); the best schedule of the cell by mean.",
             "", "| sampler | NFE | best (pixel FD) | best (classifier FD) | "
             + " | ".join(f"{'w2' if o == 'optimized-w2' else 'calibrated'} vs {c}"
                          for o, c in comps) + " |", "|---" * (len(comps) + 4) + "|"]
    p = paired[~paired["clip"]].set_index(["sampler", "nfe_budget", "optimized", "competitor"])
    for (sampler, nfe), g in main.groupby(["sampler", "nfe_budget"]):
        if len(g) < 2:
            continue
        best = [g.loc[g[f"{m}_mean"].idxmin(), "schedule"] if f"{m}_mean" in g else "-"
                for m in ("fd_pixels", "fd_classifier")]
        cols = []
        for o, c in comps:
            key = (sampler, nfe, o, c)
            if key not in p.index:
                cols.append("")
                continue
            r = p.loc[key]
            cols.append("/".join(short[r[f"{m}_verdict"]] for m in ("fd_pixels",
                                                                     "fd_classifier")
                                 if f"{m}_verdict" in r))
        lines.append(f"| {sampler} | {nfe} | {best[0]} | {best[1]} | " + " | ".join(cols)
                     + " |")
    return lines + [""]


def report(df, paired, sp, floor, timing, gap, command) -> str:
    """``<out>_report.md``: the tables of docs/unet.md's EDM study, from the CSVs alone."""
    main = df[~df["clip"]]
    lines = ["# EDM U-Net study: schedules per sampler on 16 x 16 Fashion-MNIST", "",
             "Generated by `benchmarks/unet_fm_study.py` from the CSVs beside it (do not edit; "
             "`--report-only` rewrites it). Command:", "", f"    {command}", ""]
    if floor is not None:
        f = floor.iloc[0]
        lines += [f"Floor ({f['n_samples']} held-out test images per seed, seeds {f['seeds']}): "
                  + "; ".join(f"{m} {_pm(f[f'{m}_mean'], f[f'{m}_se'])}"
                              for m in ("fd_pixels", "fd_classifier", "kid_classifier",
                                        "rapsd_err_db") if f"{m}_mean" in f), ""]
    for m, title in (("fd_pixels", "FD in pixels (theory W2^2: Wiener / calibrated)"),
                     ("fd_classifier", "FD in classifier features"),
                     ("kid_classifier", "KID in classifier features"),
                     ("rapsd_err_db", "RAPSD error, rms over rings (dB)")):
        if f"{m}_mean" not in main:
            continue
        lines += [f"## {title}", "", "mean ± s.e. over seeds; NFE spent in brackets where it "
                  "differs from the budget", ""]
        for sampler in [x for x in SAMPLERS if x in set(main["sampler"])]:
            sub = main[main["sampler"] == sampler]
            nfes = sorted(set(sub["nfe_budget"]))
            spent = {n: int(sub[sub["nfe_budget"] == n]["nfe"].iloc[0]) for n in nfes}
            head = [f"NFE {n}" + (f" ({spent[n]})" if spent[n] != n else "") for n in nfes]
            lines += [f"**{sampler}**", "", "| schedule | " + " | ".join(head) + " |",
                      "|---" * (len(nfes) + 1) + "|"]
            for name in [k for k in SCHEDULES if k in set(sub["schedule"])]:
                cells = []
                for n in nfes:
                    r = sub[(sub["schedule"] == name) & (sub["nfe_budget"] == n)]
                    if r.empty:
                        cells.append("")
                        continue
                    r = r.iloc[0]
                    text = _pm(r[f"{m}_mean"], r[f"{m}_se"])
                    if m == "fd_pixels":
                        text += f" [{r['predicted_w2_squared']:.3g}"
                        text += ("]" if not np.isfinite(r["calibrated_w2_squared"])
                                 else f" / {r['calibrated_w2_squared']:.3g}]")
                    cells.append(text)
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += answers(main, paired)
    lines += ["## Optimised minus competitor, paired over seeds", "",
              "win / lose: the paired difference is below / above 0 by a two-sided t-test at "
              "5% (|mean| > t(0.975, seeds - 1) s.e.); tie: unresolved at this sample size.",
              "",
              "| sampler | NFE | clip | optimised | competitor | FD pixels | FD classifier | KID |",
              "|---|---|---|---|---|---|---|---|"]
    for r in paired.itertuples():
        cols = []
        for m in ("fd_pixels", "fd_classifier", "kid_classifier"):
            if f"{m}_diff" in paired:
                cols.append(f"{_pm(getattr(r, f'{m}_diff'), getattr(r, f'{m}_diff_se'))} "
                            f"({getattr(r, f'{m}_verdict')})")
            else:
                cols.append("-")
        lines.append(f"| {r.sampler} | {r.nfe_budget} | {'yes' if r.clip else 'no'} | "
                     f"{r.optimized} | {r.competitor} | " + " | ".join(cols) + " |")
    counts = paired[~paired["clip"]].groupby(["optimized", "competitor"])
    lines += ["", "Verdicts on classifier FD (pixel FD), unclipped cells:", "",
              "| optimised | competitor | win | tie | lose |", "|---|---|---|---|---|"]
    for (o, c), g in counts:
        v = g.get("fd_classifier_verdict", g["fd_pixels_verdict"])
        w = g["fd_pixels_verdict"]
        lines.append(f"| {o} | {c} | " + " | ".join(
            f"{(v == k).sum()} ({(w == k).sum()})" for k in ("win", "tie", "lose")) + " |")
    cols = [c for c in sp.columns if "_vs_" in c]
    lines += ["", "## Spearman: theory against the network, over the schedules of a cell", "",
              "| sampler | NFE | schedules | " + " | ".join(cols) + " |",
              "|---" * (len(cols) + 3) + "|"]
    for r in sp.itertuples(index=False):
        d = r._asdict()
        lines.append(f"| {d['sampler']} | {d['nfe_budget']} | {d['n_schedules']} | "
                     + " | ".join("-" if not np.isfinite(d[c]) else f"{d[c]:.2f}"
                                  for c in cols) + " |")
    if timing is not None:
        t = timing.groupby("step")["seconds"].agg(["count", "sum", "median", "max"])
        lines += ["", "## Seconds (this machine)", "", "| step | runs | total | median | max |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {int(r['count'])} | {r['sum']:.3g} | {r['median']:.3g} | "
                  f"{r['max']:.3g} |" for k, r in t.iterrows()]
    if gap is not None:
        lines += ["", "## The gap: the network's linear fit against the Wiener filter", "",
                  "| sigma | median abs(a - g) | max abs(a - g) | residual var / trace | "
                  "Wiener error var / trace | bias rms |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.sigma:.4g} | {r.median_abs_gain_error:.3g} | "
                  f"{r.max_abs_gain_error:.3g} | {r.residual_variance_share:.3g} | "
                  f"{r.wiener_error_variance_share:.3g} | {r.bias_rms:.3g} |"
                  for r in gap.itertuples()]
    return "\n".join(lines) + "\n"


def finish(out: Path, command: str) -> None:
    """Paired and Spearman tables, the figure and the report, from the files under ``out``."""
    def read(suffix):
        p = Path(f"{out}{suffix}")
        return pd.read_csv(p, comment="#") if p.is_file() else None

    df = read("_cells.csv")
    if df is None:
        raise InputError(f"{out}_cells.csv: no cells to report (run the study first)")
    df["clip"] = df["clip"].astype(bool)
    paired = paired_table(df)
    write_csv(paired, Path(f"{out}_paired.csv"), command)
    sp = spearman_table(df)
    write_csv(sp, Path(f"{out}_spearman.csv"), command)
    print(sp.to_string(index=False))
    floor = read("_floor.csv")
    plot_cells(df, Path(f"{out}.png"), {} if floor is None else {
        m: floor.iloc[0][f"{m}_mean"] for m in ("fd_pixels", "fd_classifier", "rapsd_err_db")
        if f"{m}_mean" in floor})
    text = report(df, paired, sp, floor, read("_timing.csv"), read("_gap.csv"), command)
    with atomic_write(Path(f"{out}_report.md"), force=True) as fh:
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
