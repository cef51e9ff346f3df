"""Coloured forward noise against a network: white, EqualSNR and power:GAMMA U-Nets compared.

For U-Nets trained with ``specsched train-unet --noise-spectrum NOISE`` (Fashion-MNIST at
16 x 16, eps prediction on the linear T = 1000 grid, forward noise drawn by FFT,
:mod:`specsched.unet.colour`), each is sampled under its own noise
(:func:`specsched.unet.denoiser.sample_eps`: start ``N(0, C)``, coloured draws) with the
schedule the theory optimises for its noise (:func:`specsched.optimize.optimize_schedule`
with ``noise=`` its label, W2, within the training grid's range as in docs/unet.md), at every
``--steps`` (NFE = S) with each of ``--samplers`` (ddim, ddpm), ``x0_hat`` clipped to [-1, 1]
(docs/unet.md's default). Scores per seed: pixel FD (= W2^2 of the Gaussian fits, what the
theory predicts), classifier FD (``--classifier``, docs/unet.md's CNN) and the RAPSD error
per frequency ring, ``10 log10(RAPSD_gen / RAPSD_data)`` dB (:func:`unet_fm_study.image_rapsd`,
each set centred by its mean image), against the 60,000 training images; mean and standard
error over ``--seeds`` (the seeds draw the same white numbers for every model, coloured by
each model's ``C^(1/2)``, so the differences between models are paired in the sampling noise;
the training noise is not in these errors). Beside each cell: the theory's W2^2 of that
sampler, schedule and noise on the Fourier model of the training images
(:func:`specsched.theory.evaluate_schedule`, docs/theory.md section 9).

The theory's best exponent: GAMMA* minimising the optimised W2 of ``power:GAMMA`` at
``--gamma-steps`` (10) with ddim, by a bounded 1-D search
(:func:`scipy.optimize.minimize_scalar`, GAMMA in [0, 2], after a coarse grid), written to
``<out>_gamma.csv``. Each checkpoint's own noise is checked against the theory's: its
sorted ``c_f`` must equal ``noise_spectrum(label, eigenvalues).variances`` of the Fourier
spectrum used here.

Outputs (each CSV opens with the command and the code version):
``--out`` (results/unet_noise.csv, one row per
model x sampler x S), ``<out>_rapsd.csv`` (per ring), ``<out>_gamma.csv``, ``<out>_floor.csv``
(held-out test images scored alike: the metrics' floor), ``<out>.png`` and
``<out>_report.md`` (``--report-only`` rebuilds these three from the CSVs). Resumable:
cells already in the CSV (same n and seeds) are skipped.

    python benchmarks/unet_noise_study.py --classifier clf16.pt \\
        --checkpoints white=noise_white.pt equal-snr=noise_equal-snr.pt \\
        power:1.02=noise_power1.02.pt [--steps 10 20] [--n-samples 500] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from unet_fm_study import image_rapsd
from unet_sweep import read_rows, summarise, write_csv
from unet_sweep import scores as fd_scores

from specsched.analysis.plots import save_figure
from specsched.errors import InputError
from specsched.fileio import atomic_write

KEY = ["model", "sampler", "steps"]
GAMMA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
METRICS = ("fd_pixels", "fd_classifier", "rapsd_err_db")


def noise_label(gamma: float) -> str:
    """``--noise-spectrum`` of power:GAMMA (0 white, 1 equal-snr)."""
    return "white" if gamma == 0 else "equal-snr" if gamma == 1 else f"power:{float(gamma)!r}"


def optimised(lam, mean, steps, sampler, noise, bounds, x0=None):
    """The W2-optimal schedule under ``noise`` within ``bounds``: OptimizeResult."""
    from specsched.optimize import optimize_schedule

    kw = {} if x0 is None else {"x0": x0}
    return optimize_schedule(lam, mean, steps, loss="w2", sampler=sampler, noise=noise,
                             ab_min=bounds[0], ab_max=bounds[1], **kw)


def gamma_search(lam, mean, steps, sampler, bounds):
    """GAMMA* minimising the optimised W2 of power:GAMMA: ``(gamma*, {gamma: w2})``."""
    from scipy.optimize import minimize_scalar

    points = {}

    def w2(g):
        g = float(g)
        if g not in points:
            points[g] = optimised(lam, mean, steps, sampler, noise_label(g), bounds).w2
        return points[g]

    for g in GAMMA_GRID:
        w2(g)
    i = int(np.argmin([points[g] for g in GAMMA_GRID]))
    lo, hi = GAMMA_GRID[max(i - 1, 0)], GAMMA_GRID[min(i + 1, len(GAMMA_GRID) - 1)]
    minimize_scalar(w2, bounds=(lo, hi), method="bounded", options={"xatol": 5e-3,
                                                                    "maxiter": 15})
    return min(points, key=points.get), points


def score(x, clf, ref, rapsd_ref, seed):
    """Pixel / classifier FD and the RAPSD error of images (n, H, W, 1): (dict, rings dB)."""
    out = fd_scores(x, clf, ref, None, seed)
    ring = 10.0 * np.log10(image_rapsd(x) / rapsd_ref)
    out["rapsd_err_db"] = float(np.sqrt(np.mean(ring ** 2)))
    return out, ring


def theory_rings(power, ab, sampler, noise) -> np.ndarray:
    """The theory's RAPSD error per ring (dB) of a schedule: the closed form's generated
    variance per DFT frequency (eigenvalues in frequency order, the noise rule applied
    frequency by frequency, docs/theory.md section 9) ring-averaged against the data's."""
    from specsched.analysis.rapsd import rapsd
    from specsched.theory import evaluate_schedule

    var = evaluate_schedule(power.ravel(), None, ab, sampler=sampler, noise=noise).variance
    return 10.0 * np.log10(rapsd(var.reshape(power.shape))[0] / rapsd(power)[0])


def paired(df: pd.DataFrame, base: str = "white") -> pd.DataFrame:
    """Model minus ``base`` per (sampler, steps, metric), paired over seeds: mean, s.e."""
    rows = []
    for (sampler, steps), g in df.groupby(["sampler", "steps"]):
        b = g[g.model == base]
        if b.empty:
            continue
        for _, r in g[g.model != base].iterrows():
            for m in METRICS:
                d = (np.array(str(r[f"{m}_seeds"]).split(), float)
                     - np.array(str(b.iloc[0][f"{m}_seeds"]).split(), float))
                rows.append(dict(model=r.model, vs=base, sampler=sampler, steps=steps, metric=m,
                                 diff=d.mean(), se=d.std(ddof=1) / np.sqrt(d.size),
                                 ratio=r[f"{m}_mean"] / b.iloc[0][f"{m}_mean"]))
    return pd.DataFrame(rows)


def verdict(diff: float, se: float) -> str:
    """'better' / 'worse' beyond 2 standard errors (negative diff: better), else 'tie'."""
    if abs(diff) <= 2 * se:
        return "tie"
    return "better" if diff < 0 else "worse"


def plot(df, rings, floor, path: Path) -> None:
    """FD per model (pixel, classifier) and the RAPSD error against frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(df.model))
    cells = list(dict.fromkeys(zip(df.sampler, df.steps, strict=True)))
    fig, axes = plt.subplots(1, 2 + len(cells), figsize=(4.2 * (2 + len(cells)), 3.8))
    width = 0.8 / len(models)
    for ax, m in zip(axes[:2], ("fd_pixels", "fd_classifier"), strict=True):
        for j, model in enumerate(models):
            g = df[df.model == model].set_index(["sampler", "steps"]).loc[cells]
            ax.bar(np.arange(len(cells)) + j * width, g[f"{m}_mean"], width,
                   yerr=2 * g[f"{m}_se"], label=model, capsize=2)
        if m in floor:
            ax.axhline(floor[m], color="k", ls=":", lw=0.8, label="held-out images")
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2,
                      [f"{s} S={k}" for s, k in cells], fontsize=8)
        ax.set_title(f"{m} (bars: 2 s.e.)")
        ax.legend(fontsize=7)
    for ax, (sampler, steps) in zip(axes[2:], cells, strict=True):
        for model in models:
            g = rings[(rings.model == model) & (rings.sampler == sampler)
                      & (rings.steps == steps)]
            line = ax.errorbar(g.freq, g.err_db_mean, yerr=2 * g.err_db_se, marker="o", ms=3,
                               label=model, capsize=2)
            ax.plot(g.freq, g.theory_err_db, ls="--", lw=0.8, color=line[0].get_color())
        fl = rings[rings.model == "held-out"]
        ax.plot(fl.freq, fl.err_db_mean, "k:", lw=0.8, label="held-out images")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("frequency (cycles / pixel)")
        ax.set_ylabel("RAPSD error (dB)")
        ax.set_title(f"{sampler}, S = {steps} (dashed: theory)")
        ax.legend(fontsize=7)
    save_figure(fig, path, force=True)


def _pm(mean, se, digits=3):
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def report(df, rings, pairs, floor, gamma, steps_of, command) -> str:
    """The Markdown report: tables, paired differences, the high-frequency answer."""
    lines = ["# Coloured forward noise against a network (Fashion-MNIST 16 x 16 U-Nets)", "",
             f"Command: `{command}`", "",
             f"Theory's best exponent (ddim, S = {gamma['steps']}, optimised W2, training-grid "
             f"bounds): **GAMMA* = {gamma['best']:.4g}** (W2^2 {gamma['w2_best']:.5g}; white "
             f"{gamma['w2_white']:.5g}, equal-snr {gamma['w2_esnr']:.5g}).", "",
             "Training steps reached (12-minute budget each, one torch thread): "
             + ", ".join(f"{m} {s}" for m, s in steps_of.items()) + ".", "",
             f"Floor (held-out test images, same n and seeds): pixel FD "
             f"{_pm(floor['fd_pixels'], floor['fd_pixels_se'])}, classifier FD "
             f"{_pm(floor['fd_classifier'], floor['fd_classifier_se'])}, RAPSD error "
             f"{_pm(floor['rapsd_err_db'], floor['rapsd_err_db_se'])} dB.", "",
             "| model | sampler | S | theory W2^2 | pixel FD | classifier FD | RAPSD err (dB) |",
             "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r.model} | {r.sampler} | {r.steps} | {r.theory_w2:.3f} | "
                     + " | ".join(_pm(r[f"{m}_mean"], r[f"{m}_se"]) for m in METRICS) + " |")
    lines += ["", "Paired differences model minus white (negative: better; within 2 s.e.: tie)",
              "", "| model | sampler | S | metric | diff | ratio | verdict |",
              "|---|---|---|---|---|---|---|"]
    for _, p in pairs.iterrows():
        lines.append(f"| {p.model} | {p.sampler} | {p.steps} | {p.metric} | "
                     f"{_pm(p['diff'], p.se)} | {p.ratio:.2f} | {verdict(p['diff'], p.se)} |")
    lines += ["", "## Answer", ""] + answer(df, rings, pairs, steps_of)
    hi = rings[rings.ring >= rings.ring.max() - 2]
    lines += ["", "RAPSD error (dB) in the three highest rings (mean ± s.e. over seeds; the "
              "theory's in brackets):", "",
              "| model | sampler | S | " + " | ".join(f"f = {f:.3f}" for f in
                                                       sorted(set(hi.freq))) + " |",
              "|---|---|---|" + "---|" * len(set(hi.freq))]
    for (model, sampler, steps), g in hi.groupby(["model", "sampler", "steps"], sort=False):
        lines.append(f"| {model} | {sampler} | {steps} | "
                     + " | ".join(f"{_pm(a, b, 2)} [{t:.2f}]" for a, b, t in zip(
                         g.err_db_mean, g.err_db_se, g.theory_err_db.fillna(np.nan),
                         strict=True))
                     + " |")
    return "\n".join(lines) + "\n"


def answer(df, rings, pairs, steps_of) -> list[str]:
    """The verdicts, counted, the high-frequency comparison and what the budget limits."""
    out = []
    for model, g in pairs.groupby("model", sort=False):
        counts = g.assign(v=[verdict(d, e) for d, e in zip(g["diff"], g.se, strict=True)])
        c = counts.groupby("v").size().to_dict()
        out.append(f"- **{model} against white**: better in {c.get('better', 0)}, tie in "
                   f"{c.get('tie', 0)}, worse in {c.get('worse', 0)} of {len(g)} "
                   "(sampler x S x metric) cells, at 2 standard errors of the paired "
                   "differences over seeds.")
    top = rings[(rings.ring >= rings.ring.max() - 1) & (rings.model != "held-out")]
    hf = top.assign(a=top.err_db_mean.abs()).groupby(["sampler", "steps", "model"],
                                                      sort=False).a.mean()
    for (sampler, steps), g in hf.groupby(level=[0, 1], sort=False):
        g = g.droplevel([0, 1])
        out.append(f"- highest two rings, {sampler} S = {steps}: mean |RAPSD error| "
                   + ", ".join(f"{m} {v:.2f} dB" for m, v in g.items())
                   + f"; smallest: {g.idxmin()}.")
    out += ["- Budget: each network trained 12 minutes on a shared 2-core CPU ("
            + ", ".join(f"{m} {s} steps" for m, s in steps_of.items())
            + "); the white model trained equally long is the fair baseline. These are "
            "early-training networks (pixel FD "
            f"{(df.fd_pixels_mean / df.theory_w2).min():.0f} to "
            f"{(df.fd_pixels_mean / df.theory_w2).max():.0f} times the theory's W2^2): the "
            "comparison is of what each forward noise learns in ~300 steps, not "
            "of converged models.",
            "- The standard errors are over sampling seeds of one network each: training "
            "randomness is not in them. Where two models of nearly the same noise but another "
            "training seed differ (equal-snr and power:1.02 with seed 1), that difference "
            "is the scale of the training noise."]
    return out


def finish(out: Path, command: str) -> None:
    """Rebuild the paired table, the figure and the report from the CSVs of a run."""
    stem = str(out.with_suffix(""))
    df, rg = read_rows(out), read_rows(Path(f"{stem}_rapsd.csv"))
    fl = read_rows(Path(f"{stem}_floor.csv")).iloc[0]
    floor = {m: fl[f"{m}_mean"] for m in METRICS} | {f"{m}_se": fl[f"{m}_se"] for m in METRICS}
    gold = read_rows(Path(f"{stem}_gamma.csv"))
    gbest = gold[gold.best].iloc[0]
    gamma = dict(steps=int(gbest.steps), best=float(gbest.gamma), w2_best=float(gbest.w2),
                 w2_white=float(gold[gold.gamma == 0].w2.iloc[0]),
                 w2_esnr=float(gold[gold.gamma == 1].w2.iloc[0]))
    steps_of = dict(zip(df.model, df.train_steps, strict=True))
    pairs = paired(df, base=df.model.iloc[0])
    write_csv(pairs, Path(f"{stem}_paired.csv"), command)
    plot(df, rg, floor, Path(f"{stem}.png"))
    with atomic_write(Path(f"{stem}_report.md"), force=True) as fh:
        fh.write(report(df, rg, pairs, floor, gamma, steps_of, command))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="NAME=FILE.pt",
                        help="the models, white first (the paired differences' base)")
    parser.add_argument("--classifier", required=True, help="classifier weights (clf16.pt)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--samplers", nargs="+", default=["ddim", "ddpm"],
                        choices=["ddim", "ddpm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-samples", type=int, default=500, help="samples per seed")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--gamma-steps", type=int, default=10)
    parser.add_argument("--out", default="results/unet_noise.csv")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the paired table, figure and report from the CSVs")
    args = parser.parse_args(argv)
    command = "python benchmarks/unet_noise_study.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    if args.report_only:
        first = Path(args.out).read_text().splitlines()[0].lstrip("# ")
        finish(Path(args.out), first)
        return 0

    import torch

    from specsched.data.fashion_mnist import fashion_mnist_images
    from specsched.metrics.features import classifier_features, load_or_train_classifier
    from specsched.metrics.frechet import gaussian_fit
    from specsched.spectrum import FourierEstimator, estimate_spectrum
    from specsched.theory import evaluate_schedule
    from specsched.theory.noise import noise_spectrum
    from specsched.unet.denoiser import UNetDenoiser, sample_eps
    from specsched.unet.train import load_checkpoint

    torch.set_num_threads(1)
    models = {}
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--checkpoints: expected NAME=FILE.pt, got {item!r}")
        models[name] = path
    out = Path(args.out)
    stem = str(out.with_suffix(""))
    train = fashion_mnist_images(16, "train").astype(np.float64)
    test = fashion_mnist_images(16, "test").astype(np.float64)
    spectrum = estimate_spectrum(train[..., 0], method="fourier")
    lam, mean = spectrum.eigenvalues, spectrum.mean
    power = FourierEstimator().fit(train[..., 0]).power_
    clf, _ = load_or_train_classifier(args.classifier, 16, progress=False)
    ref = {"pixels": gaussian_fit(train.reshape(len(train), -1)),
           "classifier": gaussian_fit(classifier_features(train, clf))}
    rapsd_ref = image_rapsd(train)
    freq = np.fft.fftfreq(16)[: rapsd_ref.size]

    dens, steps_of = {}, {}
    for name, path in models.items():
        den = UNetDenoiser.from_checkpoint(path, batch_size=args.batch_size,
                                           clip_denoised=True)
        theory = noise_spectrum(den.noise_label, lam)
        if den.colour is not None and not np.allclose(den.colour.sorted_variances,
                                                      theory.variances, rtol=1e-9, atol=0):
            raise InputError(f"{path}: its noise {den.noise_label} differs from the theory's "
                             "on the Fourier spectrum of these training images")
        dens[name], steps_of[name] = den, int(load_checkpoint(path)["step"])
    train_ab = next(iter(dens.values())).training_alphas_cumprod
    bounds = (float(train_ab.min()), float(train_ab.max()))

    gpath = Path(f"{stem}_gamma.csv")
    gold = read_rows(gpath)
    if gold is None:
        best, points = gamma_search(lam, mean, args.gamma_steps, "ddim", bounds)
        gold = pd.DataFrame([dict(steps=args.gamma_steps, sampler="ddim", gamma=g, w2=w,
                                  best=g == best) for g, w in sorted(points.items())])
        write_csv(gold, gpath, command)
    gbest = gold[gold.best].iloc[0]
    gamma = dict(steps=args.gamma_steps, best=float(gbest.gamma), w2_best=float(gbest.w2),
                 w2_white=float(gold[gold.gamma == 0].w2.iloc[0]),
                 w2_esnr=float(gold[gold.gamma == 1].w2.iloc[0]))
    print(f"GAMMA* = {gamma['best']:.4g}", flush=True)

    # the floor: held-out test images, n per seed
    fl, fl_rings = [], []
    for seed in args.seeds:
        idx = np.random.default_rng(seed).choice(len(test), args.n_samples, replace=False)
        s, ring = score(test[idx], clf, ref, rapsd_ref, seed)
        fl.append(s)
        fl_rings.append(ring)
    frow = summarise(fl)
    write_csv(pd.DataFrame([frow]), Path(f"{stem}_floor.csv"), command)

    old = read_rows(out)
    rows = [] if old is None else old.to_dict("records")
    rold = read_rows(Path(f"{stem}_rapsd.csv"))
    ring_rows = [] if rold is None else [r for r in rold.to_dict("records")
                                         if r["model"] != "held-out"]
    fr = np.array(fl_rings)
    floor_rings = [dict(model="held-out", sampler="", steps=0, ring=k, freq=freq[k],
                        err_db_mean=fr[:, k].mean(),
                        err_db_se=fr[:, k].std(ddof=1) / np.sqrt(len(fr)))
                   for k in range(fr.shape[1])]

    def done(model, sampler, steps):
        return any(r["model"] == model and r["sampler"] == sampler and r["steps"] == steps
                   and r["n_samples"] == args.n_samples
                   and str(r["seeds"]) == " ".join(map(str, args.seeds)) for r in rows)

    def results():
        df = pd.DataFrame(rows)
        rg = pd.DataFrame(ring_rows + floor_rings)
        return df, rg

    cells = [(sampler, steps) for steps in args.steps for sampler in args.samplers]
    # every model of a (sampler, S) cell before the next: a stopped run still compares
    for (sampler, steps), (name, den) in itertools.product(cells, dens.items()):
        if done(name, sampler, steps):
            continue
        r = optimised(lam, mean, steps, sampler, den.noise_label, bounds)
        ab = np.asarray(r.x)
        theory = evaluate_schedule(lam, mean, ab, sampler=sampler,
                                   noise=den.noise_label)
        t0 = time.perf_counter()
        per_seed, per_ring = [], []
        for seed in args.seeds:
            x = sample_eps(den, ab, args.n_samples, sampler=sampler,
                           rng=np.random.default_rng(seed), batch_size=args.batch_size)
            s, ring = score(x, clf, ref, rapsd_ref, seed)
            per_seed.append(s)
            per_ring.append(ring)
        secs = time.perf_counter() - t0
        rows.append(dict(model=name, noise=den.noise_label, train_steps=steps_of[name],
                         sampler=sampler, steps=steps, theory_w2=theory.w2,
                         n_samples=args.n_samples, seeds=" ".join(map(str, args.seeds)),
                         **summarise(per_seed), seconds=secs,
                         alphas_cumprod=" ".join(f"{a:.8g}" for a in ab)))
        pr = np.array(per_ring)
        pred = theory_rings(power, ab, sampler, den.noise_label)
        ring_rows.extend(dict(model=name, sampler=sampler, steps=steps, ring=k,
                              freq=freq[k], err_db_mean=pr[:, k].mean(),
                              err_db_se=pr[:, k].std(ddof=1) / np.sqrt(len(pr)),
                              err_db_seeds=" ".join(f"{v:.5g}" for v in pr[:, k]),
                              theory_err_db=pred[k])
                         for k in range(pr.shape[1]))
        df, rg = results()
        write_csv(df, out, command)
        write_csv(rg, Path(f"{stem}_rapsd.csv"), command)
        print(f"{name} {sampler} S={steps}: pixel FD "
              f"{rows[-1]['fd_pixels_mean']:.3f}, classifier FD "
              f"{rows[-1]['fd_classifier_mean']:.3f} (theory {theory.w2:.3f}), "
              f"{secs:.0f} s", flush=True)
    df, rg = results()
    write_csv(df, out, command)
    write_csv(rg, Path(f"{stem}_rapsd.csv"), command)
    finish(out, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
