"""The optimal flow-matching shift against resolution, from natural-image spectra.

For each resolution r (16, 32, 64, 128, 256 by default), the spectrum of r x r RGB patches of
the scikit-image photographs (:func:`specsched.data.natural_patches`) is estimated with the
shift-invariant Fourier model (:func:`specsched.spectrum.estimate_spectrum`,
``method="fourier"``; docs/theory.md section 6) and, where ``d = 3 r^2`` fits, the full
covariance (``method="full"``; 16 and 32 by default: at r = 64, d = 12288, the covariance
and ``eigh``'s workspace peak near 6 GB and ``eigh`` alone takes ~10 min on 2 cores, measured
as 78 s at d = 6144 and scaled by d^3). Then, for each step count S, sampler
(``fm-euler``, ``fm-heun``) and loss (W2, KL(gen || data)), with ``t_S = 1`` (pure noise,
docs/theory.md section 10):

- the optimal SD3 shift of the uniform grid (:func:`specsched.optimize.optimal_shift`: the
  shift, its loss, whether it sits on the search range's bound), and the shifts on either
  side whose loss is 5% higher (``shift_lo``, ``shift_hi``: how flat the optimum is);
- the rules, each as its baseline schedule at resolution r: SD3's fixed shift 3.0
  (``sd3-shift``), Flux's dynamic shift ``exp(flux_mu((r / 16)^2))`` (``flux-shift``),
  Hoogeboom et al.'s shifted cosine at resolution r (``shifted-cosine``: the cosine grid's
  logSNR moved by ``2 log(64 / r)``, an SD3 shift ``s = r / 64`` of the cosine grid), the
  same shift ``r / 64`` applied to the uniform grid (``hoogeboom-uniform``: what a user sets
  as ``shift`` in ``FlowMatchEulerDiscreteScheduler``), and ``fm-uniform`` (``s = 1``);
- the fully optimised schedule (:func:`specsched.optimize.optimize_schedule` with the
  sampler, ``t_S = 1`` fixed, the optimal shift's schedule as an extra start, the upper
  bound on ``ab`` widened to that schedule's first level when it is less noisy than the
  default ``t = 0.002``), and ``t_1``, the least noisy time, of both.

The photographs are read in batches of at most :data:`BATCH_BYTES` of float64 pixels: batch
k is ``natural_patches(r, n_k, seed + k)`` (one batch, the built-in data set itself, when the
patches fit: ``r = 16``, 20000 patches is ``natural-patches``). Patches per resolution:
``min(MAX_PATCHES, PIXEL_BUDGET // r^2)`` (20000, 20000, 20000, 12000, 3000 for the
defaults), a tenth of each with ``--quick`` (which also runs fm-euler only unless
``--samplers`` is given: fm-heun's cells at r = 256 take most of the full run); the full
covariance takes at least ``2 d`` (6144 at r = 32), so that it has full rank: a
rank-deficient covariance has round-off eigenvalues (~1e-14) on which
``optimize_schedule(sampler="fm-heun")`` fails ("gain A_s <= 0").

Writes, under ``--out`` (results/flow_shift/ by default), each opening with ``# command`` and
the code version:

- ``flow_shift.csv``: one row per (spectrum, sampler, loss, S);
- ``flow_shift_slopes.csv``: the least-squares slope of log(optimal shift) against log(r) per
  (spectrum method, sampler, loss, S), points on the search bound left out (Hoogeboom's rule
  is slope 1);
- ``flow_shift.png``: optimal shift against resolution with the rules; losses of the rules
  and of the optimised schedule relative to the optimal shift.

    python benchmarks/flow_shift.py [--quick] [--resolutions 16 32 64 128 256]
        [--full-resolutions 16 32] [--steps 10 20 50] [--samplers fm-euler fm-heun]
        [--losses w2 kl] [--seed 0] [--out results/flow_shift]

A resolution the photographs cannot give (above the smallest image side, 300) is refused
before anything is computed or written: exit status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from specsched.analysis.plots import save_figure
from specsched.data.builtin import natural_patches
from specsched.data.sources import DataSource
from specsched.errors import InputError
from specsched.fileio import atomic_write
from specsched.optimize import AB_MAX, optimal_shift, optimize_schedule
from specsched.provenance import header, png_metadata
from specsched.schedules import fm_times_from_alphas_cumprod
from specsched.schedules.flow import (
    SD3_SHIFT,
    SHIFTED_COSINE_BASE,
    flux_image_seq_len,
    flux_mu,
    fm_baseline_alphas_cumprod,
)
from specsched.spectrum import estimate_spectrum
from specsched.theory import loss_summary

RESOLUTIONS = (16, 32, 64, 128, 256)
FULL_RESOLUTIONS = (16, 32)
STEPS = (10, 20, 50)
SAMPLERS = ("fm-euler", "fm-heun")
LOSSES = ("w2", "kl")
#: Patches per resolution: ``min(MAX_PATCHES, PIXEL_BUDGET // r^2)`` (a tenth with --quick).
MAX_PATCHES = 20000
PIXEL_BUDGET = 3000 * 256**2
#: Largest batch of patches held at once (float64): 256 MiB.
BATCH_BYTES = 256 * 2**20
#: Chunk of the estimators (samples): the Fourier model's FFT of 64 patches of 256 x 256 x 3
#: is 200 MB of complex128.
CHUNK_BYTES = 64 * 256 * 256 * 3 * 8
#: ``shift_lo`` / ``shift_hi``: the shifts around the optimum whose loss is BAND_RTOL above it.
BAND_RTOL = 0.05
#: ``flow_shift.csv`` columns, in order.
COLUMNS = [
    "method", "resolution", "d", "n_patches", "spectrum_s", "trace", "lam_max", "sampler",
    "nfe", "loss", "steps", "shift_opt", "on_bound", "shift_lo", "shift_hi", "t1_opt_shift",
    "opt_shift", "opt_shift_w2",
    "opt_shift_kl", "shift_hoogeboom", "shift_flux", "shift_sd3", "hoogeboom_uniform",
    "shifted_cosine", "flux_shift", "sd3_shift", "fm_uniform", "full", "full_success",
    "full_start", "t1_full", "gain_full", "closest_rule_by_shift", "best_rule_by_loss",
    "cell_s", "note",
]


def n_patches_for(resolution: int, quick: bool = False, method: str = "fourier") -> int:
    """Patches drawn at ``resolution`` (module docstring); the full covariance takes at least
    ``2 d`` (``d = 3 r^2``), so that it has full rank (no round-off eigenvalues)."""
    scale = 10 if quick else 1
    n = max(2, min(MAX_PATCHES // scale, PIXEL_BUDGET // scale // resolution**2))
    return max(n, 6 * resolution**2) if method == "full" else n


@dataclass(frozen=True)
class PatchBatches:
    """A part of a :class:`specsched.data.sources.DataSource`: ``n_patches`` natural patches
    of side ``patch_size``, drawn in batches of ``batch``, batch k with seed ``seed + k``."""

    patch_size: int
    n_patches: int
    batch: int
    seed: int = 0
    path = None

    @property
    def n(self) -> int:
        return self.n_patches

    @property
    def label(self) -> str:
        return f"natural-patches {self.patch_size}x{self.patch_size}"

    def iter_chunks(self, chunk_size: int):
        for k, start in enumerate(range(0, self.n_patches, self.batch)):
            x = natural_patches(self.patch_size, min(self.batch, self.n_patches - start),
                                self.seed + k)
            for a in range(0, x.shape[0], chunk_size):
                yield x[a:a + chunk_size]


def patch_source(resolution: int, n_patches: int, seed: int = 0) -> DataSource:
    """The patches of one resolution as a data source read batch by batch."""
    d = 3 * resolution**2
    batch = max(1, BATCH_BYTES // (8 * d))
    part = PatchBatches(resolution, n_patches, batch, seed)
    return DataSource(f"natural-patches r={resolution}", (resolution, resolution, 3), n_patches,
                      (part,), kind="array", itemsize=8)


def check_resolutions(resolutions) -> None:
    """Refuse, before any work, a resolution the photographs cannot give (the message of
    :func:`specsched.data.natural_patches`, which names the value and the allowed range)."""
    for r in resolutions:
        try:
            natural_patches(patch_size=r, n_patches=1)
        except InputError as exc:
            raise InputError(f"--resolutions {r}: {exc}") from None


def fit_slope(resolutions, shifts, on_bound=None) -> dict:
    """Least squares ``log s = a + b log r`` over the points off the search bound.

    Returns
    -------
    dict
        ``slope`` (b), ``shift_at_64`` (``exp(a + b log 64)``), ``points`` used, ``r2``
        (coefficient of determination; NaN with fewer than 3 points); NaNs with fewer than 2
        points.
    """
    r = np.asarray(resolutions, dtype=np.float64)
    s = np.asarray(shifts, dtype=np.float64)
    keep = np.isfinite(s) & (s > 0)
    if on_bound is not None:
        keep &= ~np.asarray(on_bound, dtype=bool)
    x, y = np.log(r[keep]), np.log(s[keep])
    if x.size < 2 or np.ptp(x) == 0:
        return {"slope": np.nan, "shift_at_64": np.nan, "points": int(x.size), "r2": np.nan}
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss if x.size > 2 and ss > 0 else np.nan
    return {"slope": float(b), "shift_at_64": float(math.exp(a + b * math.log(64))),
            "points": int(x.size), "r2": r2}


def rule_shifts(resolution: int) -> dict:
    """The shift each rule sets at ``resolution`` (Hoogeboom's on the cosine grid)."""
    return {"hoogeboom": resolution / SHIFTED_COSINE_BASE,
            "flux": math.exp(flux_mu(flux_image_seq_len(resolution))),
            "sd3": SD3_SHIFT}


def closest_rule(shift: float, rules: dict) -> str:
    """The rule whose shift is nearest ``shift`` in ``|log(s_rule / shift)|``."""
    return min(rules, key=lambda k: abs(math.log(rules[k] / shift)))


def shift_band(lam, m, steps, sampler, loss, sh, rtol: float = BAND_RTOL):
    """``(lo, hi)``: the shifts on either side of the optimum ``sh`` (a
    :class:`specsched.optimize.ShiftResult`) whose loss is ``(1 + rtol)`` times the optimal
    loss (Brent's root finder in ``log s``, bracketed by the search's grid); NaN on a side
    where the whole search range stays below that."""
    key = loss.replace("-", "_")
    target = (1.0 + rtol) * sh.fun

    def excess(log_s):
        ab = fm_baseline_alphas_cumprod("sd3-shift", steps, shift=math.exp(log_s))
        with np.errstate(all="ignore"):
            return loss_summary(lam, m, ab, sampler=sampler)[key] - target

    grid = np.log(sh.grid[:, 0])
    values = np.sqrt(sh.grid[:, 1]) if loss == "w2" else sh.grid[:, 1]  # W2^2 on the grid
    best = math.log(sh.shift)
    ends = []
    for side in (grid[grid < best][::-1], grid[grid > best]):
        inner, end = best, np.nan
        for g in side:
            v = values[np.searchsorted(grid, g)]
            if np.isfinite(v) and v > target:
                end = math.exp(brentq(excess, inner, g, xtol=1e-6))
                break
            inner = g
        ends.append(end)
    return ends[0], ends[1]


def run_cell(lam, m, resolution, sampler, loss, steps) -> dict:
    """One (spectrum, sampler, loss, S): the optimal shift, the rules, the optimised schedule.

    The optimiser's upper bound on ``ab`` is widened to the optimal shift's first level when
    that level is less noisy than the default bound (``t_1 < 0.002``: KL's small shifts at
    large S), so that the optimised family contains the shift's schedule."""
    key = loss.replace("-", "_")
    t0 = time.perf_counter()
    sh = optimal_shift(lam, m, steps, sampler=sampler, loss=loss)
    lo, hi = shift_band(lam, m, steps, sampler, loss, sh)
    rules = rule_shifts(resolution)
    base, note = {}, ""
    for name, kw in (("fm-uniform", {}), ("sd3-shift", {}),
                     ("flux-shift", {"resolution": resolution}),
                     ("shifted-cosine", {"resolution": resolution}),
                     ("hoogeboom-uniform", {"shift": rules["hoogeboom"]})):
        ab = fm_baseline_alphas_cumprod("sd3-shift" if name == "hoogeboom-uniform" else name,
                                        steps, **kw)
        with np.errstate(all="ignore"):
            base[name] = loss_summary(lam, m, ab, sampler=sampler)[key]
    try:
        ab_max = max(AB_MAX, float(sh.alphas_cumprod[0]))
        res = optimize_schedule(lam, m, steps, sampler=sampler, loss=loss, x0=sh.alphas_cumprod,
                                ab_max=ab_max, spacings=(), fm_kwargs={"resolution": resolution})
        full, ok, start = res.fun, bool(res.success), res.start
        t1_full = float(fm_times_from_alphas_cumprod(res.x[:1])[0])
    except InputError as exc:  # recorded, not fatal: the other cells still run
        full, ok, start, t1_full, note = np.nan, False, "", np.nan, str(exc)
    by_loss = {"sd3": base["sd3-shift"], "flux": base["flux-shift"],
               "hoogeboom": min(base["shifted-cosine"], base["hoogeboom-uniform"])}
    return {
        "sampler": sampler, "nfe": 2 * steps - 1 if sampler == "fm-heun" else steps,
        "loss": loss, "steps": steps, "shift_opt": sh.shift, "on_bound": sh.on_bound,
        "shift_lo": lo, "shift_hi": hi,
        "t1_opt_shift": float(fm_times_from_alphas_cumprod(sh.alphas_cumprod[:1])[0]),
        "opt_shift": sh.fun, "opt_shift_w2": sh.w2, "opt_shift_kl": sh.kl,
        "shift_hoogeboom": rules["hoogeboom"], "shift_flux": rules["flux"],
        "shift_sd3": rules["sd3"], "hoogeboom_uniform": base["hoogeboom-uniform"],
        "shifted_cosine": base["shifted-cosine"], "flux_shift": base["flux-shift"],
        "sd3_shift": base["sd3-shift"], "fm_uniform": base["fm-uniform"],
        "full": full, "full_success": ok, "full_start": start, "t1_full": t1_full,
        "gain_full": sh.fun / full if full > 0 else np.nan,
        "closest_rule_by_shift": closest_rule(sh.shift, rules),
        "best_rule_by_loss": min(by_loss, key=by_loss.get),
        "cell_s": time.perf_counter() - t0, "note": note,
    }


def spectra(resolutions, full_resolutions, quick, seed):
    """Yield ``(method, r, n_patches, eigenvalues, mean, seconds)``, Fourier first."""
    for method, rs in (("fourier", resolutions), ("full", full_resolutions)):
        for r in rs:
            n = n_patches_for(r, quick, method)
            d = 3 * r * r
            t0 = time.perf_counter()
            sp = estimate_spectrum(patch_source(r, n, seed), method,
                                   chunk_size=max(1, min(4096, CHUNK_BYTES // (8 * d))))
            yield method, r, n, sp.eigenvalues, sp.mean, time.perf_counter() - t0


def slopes_table(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, sampler, loss, steps), g in table.groupby(
            ["method", "sampler", "loss", "steps"], sort=False):
        g = g.sort_values("resolution")
        fit = fit_slope(g["resolution"], g["shift_opt"], g["on_bound"])
        rows.append({"method": method, "sampler": sampler, "loss": loss, "steps": steps,
                     **fit, "resolutions": " ".join(map(str, g["resolution"])),
                     "on_bound": int(g["on_bound"].sum())})
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path, command: str) -> None:
    with atomic_write(path, force=True, mode="w") as fh:
        fh.write(header(command))
        frame.to_csv(fh, index=False, float_format="%.6g")


def plot(table: pd.DataFrame, path: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    def log_ticks(ax):
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    samplers = list(dict.fromkeys(table["sampler"]))
    losses = list(dict.fromkeys(table["loss"]))
    res = np.array(sorted(set(table["resolution"])), dtype=float)
    dense = np.geomspace(res.min(), res.max(), 100)
    colours = dict(zip(sorted(set(table["steps"])), plt.rcParams["axes.prop_cycle"].by_key()
                       ["color"], strict=False))
    panels = [(s, "w2") for s in samplers if "w2" in losses][:2]
    panels += [(None, loss) for loss in losses if loss != "w2"][:3 - len(panels)]
    for ax in axes.flat[len(panels):3]:
        ax.set_axis_off()
    for ax, (sampler, loss) in zip(axes.flat, panels, strict=False):
        t = table[table["loss"] == loss]
        for (method, smp, steps), g in t.groupby(["method", "sampler", "steps"]):
            if sampler is not None and smp != sampler:
                continue
            g = g.sort_values("resolution")
            dotted = sampler is None and smp != samplers[0]
            ax.loglog(g["resolution"], g["shift_opt"], marker="o" if method == "fourier"
                      else "s", ls=":" if dotted else ("-" if method == "fourier" else "--"),
                      color=colours[steps], ms=4,
                      label=f"{method}, S = {steps}" + ("" if sampler else f", {smp}"))
            bound = g[g["on_bound"]]
            ax.loglog(bound["resolution"], bound["shift_opt"], "x", color="k", ms=8)
        if loss == "w2":
            ax.loglog(dense, dense / SHIFTED_COSINE_BASE, "k-", lw=1,
                      label="Hoogeboom r/64 (cosine grid)")
            ax.loglog(dense, [math.exp(flux_mu(flux_image_seq_len(int(r)))) for r in dense],
                      "k--", lw=1, label="Flux exp(mu), (r/16)^2 tokens")
            ax.axhline(SD3_SHIFT, color="k", ls=":", lw=1, label="SD3 3.0")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res, [str(int(r)) for r in res])
        ax.set_xlabel("resolution r (pixels per side)")
        ax.set_ylabel("optimal SD3 shift")
        log_ticks(ax)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo / 3.0, hi)  # room for the legend below the curves
        title = f"{loss.upper()}-optimal shift, " + (
            sampler if sampler else f"solid {samplers[0]}"
            + (f", dotted {samplers[1]}" if len(samplers) > 1 else ""))
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax = axes.flat[3]
    steps_mid = sorted(set(table["steps"]))[len(set(table["steps"])) // 2]
    t = table[(table["loss"] == "w2") & (table["method"] == "fourier")
              & (table["sampler"] == samplers[0]) & (table["steps"] == steps_mid)]
    t = t.sort_values("resolution")
    if t.empty:
        ax.set_axis_off()
        save_figure(fig, path, force=True, metadata=png_metadata(command))
        return
    for col, label in (("sd3_shift", "SD3 shift 3.0"), ("flux_shift", "Flux shift"),
                       ("shifted_cosine", "shifted cosine (r/64)"),
                       ("hoogeboom_uniform", "uniform grid, shift r/64"),
                       ("fm_uniform", "uniform, shift 1"), ("full", "optimised schedule")):
        ax.semilogx(t["resolution"], t[col] / t["opt_shift"], "o-", ms=4, label=label)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(res, [str(int(r)) for r in res])
    ax.set_yscale("log")
    ax.set_xlabel("resolution r (pixels per side)")
    ax.set_ylabel("W2 / W2 of the optimal shift")
    log_ticks(ax)
    ax.set_title(f"Fourier spectra, {samplers[0]}, S = {steps_mid}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path, force=True, metadata=png_metadata(command))


def markdown(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    cols = list(frame.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        out.append("| " + " | ".join(f"{v:{floatfmt}}" if isinstance(v, float) else str(v)
                                     for v in row) + " |")
    return "\n".join(out)


def summary(table: pd.DataFrame, slopes: pd.DataFrame) -> str:
    """Markdown tables printed at the end (pasted into the README)."""
    parts = []
    for (method, sampler, loss), g in table.groupby(["method", "sampler", "loss"], sort=False):
        g = g.assign(band=[f"{s:.3g} ({lo:.3g}-{hi:.3g})" for s, lo, hi in
                           zip(g["shift_opt"], g["shift_lo"], g["shift_hi"], strict=True)])
        p = g.pivot(index="resolution", columns="steps", values="band")
        p.columns = [f"S={c}" for c in p.columns]
        rules = g.drop_duplicates("resolution").set_index("resolution")
        p["r/64"] = rules["shift_hoogeboom"]
        p["Flux"] = rules["shift_flux"]
        gain = g.pivot(index="resolution", columns="steps", values="gain_full")
        for c in gain.columns:
            p[f"gain S={c}"] = gain[c]
        parts.append(f"### optimal shift (5% band), {method}, {sampler}, {loss}\n\n"
                     + markdown(p.reset_index()))
    ratios = {"sd3_shift": "SD3 3.0", "flux_shift": "Flux", "shifted_cosine": "shifted cosine",
              "hoogeboom_uniform": "uniform, r/64", "fm_uniform": "uniform, 1",
              "full": "optimised"}
    for (method, loss), g in table.groupby(["method", "loss"], sort=False):
        r = g[["sampler", "resolution", "steps"]].copy()
        for col, label in ratios.items():
            r[label] = g[col] / g["opt_shift"]
        r["closest (shift)"] = g["closest_rule_by_shift"]
        r["best (loss)"] = g["best_rule_by_loss"]
        parts.append(f"### {loss} of each schedule / {loss} of the optimal shift, {method}\n\n"
                     + markdown(r.sort_values(["sampler", "steps", "resolution"])))
    parts.append("### slopes of log(optimal shift) against log(r)\n\n"
                 + markdown(slopes.drop(columns=["resolutions"])))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a tenth of the patches, and fm-euler only unless --samplers is given")
    ap.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS),
                    help="patch sides for the Fourier model (at most 300)")
    ap.add_argument("--full-resolutions", type=int, nargs="*", default=list(FULL_RESOLUTIONS),
                    help="patch sides for the full covariance (d = 3 r^2; 64 needs ~6 GB "
                    "and ~10 min of eigh on 2 cores)")
    ap.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    ap.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=None,
                    help="default: both (fm-euler only with --quick: fm-heun's closed form "
                    "costs ~5x more)")
    ap.add_argument("--losses", nargs="+", choices=("w2", "kl", "kl-data-gen"),
                    default=list(LOSSES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/flow_shift", help="output folder")
    args = ap.parse_args(argv)
    if args.samplers is None:
        args.samplers = ["fm-euler"] if args.quick else list(SAMPLERS)
    name = Path(sys.argv[0]).name if argv is None else "flow_shift.py"
    try:
        check_resolutions(sorted(set(args.resolutions) | set(args.full_resolutions)))
        if min(args.steps) < 1:
            raise InputError(f"--steps: expected integers >= 1, got {min(args.steps)}")
    except InputError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python benchmarks/flow_shift.py " + shlex.join(
        (["--quick"] if args.quick else [])
        + ["--resolutions", *map(str, args.resolutions)]
        + ["--full-resolutions", *map(str, args.full_resolutions)]
        + ["--steps", *map(str, args.steps), "--samplers", *args.samplers,
           "--losses", *args.losses, "--seed", str(args.seed), "--out", args.out])
    t_start = time.perf_counter()
    rows = []
    for method, r, n, lam, m, secs in spectra(args.resolutions, args.full_resolutions,
                                              args.quick, args.seed):
        print(f"{method} r={r}: {n} patches, d={lam.size}, {secs:.1f} s", file=sys.stderr,
              flush=True)
        head = {"method": method, "resolution": r, "d": lam.size, "n_patches": n,
                "spectrum_s": secs, "trace": float(lam.sum()), "lam_max": float(lam.max())}
        for sampler in args.samplers:
            for loss in args.losses:
                for steps in args.steps:
                    rows.append({**head, **run_cell(lam, m, r, sampler, loss, steps)})
                    c = rows[-1]
                    print(f"  {sampler} {loss} S={steps}: shift {c['shift_opt']:.4g} "
                          f"(r/64 {c['shift_hoogeboom']:.3g}), {loss} {c['opt_shift']:.4g}, "
                          f"optimised {c['full']:.4g} ({c['cell_s']:.1f} s)", file=sys.stderr,
                          flush=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    slopes = slopes_table(table)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "flow_shift.csv", command)
    write_csv(slopes, out / "flow_shift_slopes.csv", command)
    plot(table, out / "flow_shift.png", command)
    print(summary(table, slopes))
    cpu = platform.processor() or platform.machine()
    print(f"\nrun time {time.perf_counter() - t_start:.0f} s on {os.cpu_count()} CPUs "
          f"({cpu}); wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
