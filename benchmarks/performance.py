"""Speed of specsched against the naive way, measured as ratios in one process.

(a) loss + gradient: the numba kernel against the NumPy reference (run over blocks of
    directions so that d = 196608 fits in memory), DDIM, W2;
(b) full optimisation of the CIFAR-10 spectrum (DDIM, W2): specsched's default against the
    naive method a reader of the paper would write (NumPy loss, SLSQP on alphas_cumprod with
    finite-difference gradients, one start), with both losses;
(c) covariance accumulation: the chunked estimator against a bare BLAS ``X.T @ X`` on the
    same chunks, float64 and float32 chunks, d = 3072 and 12288 (d = 196608 has a 300 GB
    covariance and is not attempted). The target (issue 16: 90% of BLAS) is against float64
    products (for float32 chunks: converted, then ``X.T @ X``), the arithmetic the estimator
    does; a bare float32 ``X.T @ X`` is reported beside it with the error float32
    accumulation makes at an offset of 1e6. Plus ``specsched spectrum`` on a float32 .npy
    against reading the file and ``X.T @ X``;
(d) the ADSN spectrum (d = 196608), S = 50: optimisation with quadrature against exact
    optimisation, the exact loss of both schedules, and the quadrature's error estimate.

Writes results/performance.csv and results/performance.png.

    python benchmarks/performance.py [--quick] [--only PART ...] [--adsn PATH]
                                     [--out results/performance.csv] [--merge]

``--only kernels --out /tmp/k.csv`` times (a) alone (a minute or two), e.g. before and after
a change to the kernels; ``--only covariance --merge`` replaces the covariance rows of
results/performance.csv and keeps the others.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import optimize as sopt
from threadpoolctl import threadpool_limits

from specsched.fileio import atomic_write
from specsched.optimize import AB_MAX, AB_MIN, optimize_schedule, project_feasible
from specsched.provenance import command_line, header_lines, is_provenance_line, png_metadata
from specsched.schedules import baseline_alphas_cumprod
from specsched.spectrum import load_spectrum
from specsched.theory import loss_and_grad, loss_value

#: The ADSN eigenvalues (196608 float64, 1.5 MB; provenance in benchmarks/data/README.md), in the
#: repository beside this script but not in the package; ``--adsn PATH`` names another file.
ADSN = Path(__file__).resolve().parent / "data" / "adsn_eigenvalues.npy"
PARTS = ("kernels", "optimiser", "covariance", "adsn")


def best_time(fn, repeat=5, min_time=0.2):
    """Best wall time of ``fn()`` over ``repeat`` rounds of enough calls to last min_time."""
    fn()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time or n >= 1000:
            break
        n *= 2
    best = t / n
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def numpy_reference(lam, ab, block=8192):
    """The NumPy reference over blocks of directions (the loss is a sum over directions)."""
    value, grad = 0.0, np.zeros(ab.size)
    for k in range(0, lam.size, block):
        v, g = loss_and_grad(lam[k:k + block], None, ab, backend="numpy")
        value += v
        grad += g
    return value, grad


def bench_kernels(rows, adsn, quick):
    cifar = load_spectrum("cifar10").eigenvalues
    for d_name, lam in (("cifar10 (3072)", cifar), ("adsn (196608)", adsn)):
        for S in (10, 100, 1000):
            ab = baseline_alphas_cumprod("linear", S)
            fast = best_time(lambda lam=lam, ab=ab: loss_and_grad(lam, None, ab,
                                                                  backend="numba"))
            slow_repeat = 1 if lam.size * S > 5e6 else 3
            if quick and lam.size * S > 5e7:
                slow = float("nan")
            else:
                slow = best_time(lambda lam=lam, ab=ab: numpy_reference(lam, ab),
                                 repeat=slow_repeat, min_time=0.0)
            rows.append({"benchmark": "loss+grad", "case": f"{d_name}, S={S}",
                         "specsched_s": fast, "baseline_s": slow, "speedup": slow / fast,
                         "note": "numba kernel vs NumPy reference"})
            print(rows[-1])


def naive_optimise(lam, S):
    """SLSQP on alphas_cumprod, NumPy loss, finite-difference gradient, start: linear.

    Same bounds and margin as specsched's default problem, so the losses compare.
    """
    x0 = project_feasible(baseline_alphas_cumprod("linear", S))
    D = np.zeros((S - 1, S))
    D[np.arange(S - 1), np.arange(S - 1)] = 1
    D[np.arange(S - 1), np.arange(1, S)] = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sopt.minimize(
            lambda x: loss_value(lam, None, x, backend="numpy"), x0, method="SLSQP",
            bounds=[(AB_MIN, AB_MAX)] * S,
            constraints=[{"type": "ineq", "fun": lambda x: D @ x - 1e-7, "jac": lambda x: D}],
            options={"maxiter": 1000, "ftol": 1e-12},
        )
    return float(np.sqrt(loss_value(lam, None, res.x, backend="numpy")))


def bench_optimiser(rows, quick):
    lam = load_spectrum("cifar10").eigenvalues
    for S in (10, 100, 1000):
        t0 = time.perf_counter()
        r = optimize_schedule(lam, None, S)
        fast = time.perf_counter() - t0
        if S <= (10 if quick else 100):
            t0 = time.perf_counter()
            w2_naive = naive_optimise(lam, S)
            slow = time.perf_counter() - t0
        else:
            w2_naive, slow = float("nan"), float("nan")
        rows.append({"benchmark": "optimise", "case": f"cifar10, DDIM, W2, S={S}",
                     "specsched_s": fast, "baseline_s": slow, "speedup": slow / fast,
                     "specsched_w2": r.fun, "baseline_w2": w2_naive,
                     "note": f"{r.method}, success={r.success}; baseline: naive FD SLSQP"
                     + (" (not run: hours)" if np.isnan(slow) else "")})
        print(rows[-1])


#: Offset of the accuracy check: samples ``OFFSET + N(0, 1)`` (float64 and float32).
OFFSET = 1e6


def best_times(fns, repeat, warm=True, clock=time.perf_counter):
    """Best time of each of ``fns`` over ``repeat`` rounds, the calls interleaved.

    Interleaving puts every side under the same load of a shared machine. With ``warm``,
    each function is called once before timing (numba compilation, page faults of first use).
    ``clock``: wall time by default; :func:`time.process_time` counts the CPU time of this
    process (all its threads), which other processes on the machine do not inflate.
    """
    for fn in fns if warm else ():
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = clock()
            fn()
            best[i] = min(best[i], clock() - t0)
    return best


def relative_error(cov, ref):
    """``max |cov - ref| / max |ref|``."""
    return float(np.abs(cov - ref).max() / np.abs(ref).max())


def offset_accuracy(chunks):
    """Relative errors of the covariance of ``OFFSET + chunks`` (their own dtype).

    Returns ``(ours, float64 X.T @ X, float32 X.T @ X, float32 syrk of centred data)``: the
    estimator; the naive ``(sum x x^T - n xbar xbar^T) / (n - 1)`` from a float64 and from a
    float32 product of the raw samples; a float32 product of samples centred (in float64)
    and rounded to float32, the best a float32 BLAS path can do. The reference is
    :func:`numpy.cov` of the values represented, minus the offset (exact in float64).
    """
    from specsched.spectrum import StreamingCovariance

    X = np.concatenate(chunks) + np.asarray(OFFSET, dtype=chunks[0].dtype)
    exact = X.astype(np.float64) - OFFSET  # exact: Sterbenz
    ref = np.cov(exact, rowvar=False)
    n = len(X)
    est = StreamingCovariance()
    for a in range(0, n, len(chunks[0])):
        est.partial_fit(X[a:a + len(chunks[0])])
    errors = [relative_error(est.covariance_, ref)]
    for dtype in (np.float64, np.float32):
        Y = X.astype(dtype)
        m = Y.mean(axis=0, dtype=dtype)
        naive = (Y.T @ Y - n * np.outer(m, m).astype(dtype)) / (n - 1)
        errors.append(relative_error(naive.astype(np.float64), ref))
    Yc = (exact - exact.mean(axis=0)).astype(np.float32)
    errors.append(relative_error((Yc.T @ Yc).astype(np.float64) / (n - 1), ref))
    return errors


def covariance_sides(chunks, d):
    """The estimator and its baselines on ``chunks`` (name -> function)."""
    from scipy.linalg.blas import dsyrk

    from specsched.spectrum import StreamingCovariance

    def ours():
        est = StreamingCovariance()
        for c in chunks:
            est.partial_fit(c)
        return est

    def bare64():  # the arithmetic the estimator does: float64 products
        acc = np.zeros((d, d))
        for c in chunks:
            c = c if c.dtype == np.float64 else c.astype(np.float64)
            acc += c.T @ c  # NumPy calls syrk for X.T @ X
        return acc

    def bare32():  # float32 products: faster, and inexact
        acc = np.zeros((d, d), dtype=np.float32)
        for c in chunks:
            acc += c.T @ c
        return acc

    def dsyrk_only():  # the floor: in-place dsyrk of the raw chunks, no centring
        acc = np.zeros((d, d), order="F")
        for c in chunks:
            c = c if c.dtype == np.float64 else c.astype(np.float64)
            acc = dsyrk(1.0, c.T, beta=1.0, c=acc, lower=0, overwrite_c=1)
        return acc

    sides = {"ours": ours, "bare64": bare64, "dsyrk": dsyrk_only}
    if chunks[0].dtype == np.float32:
        sides["bare32"] = bare32
    return sides


def bench_covariance(rows, quick, threads=2):
    """Accumulation throughput at d = 3072 (and 12288) for float64 and float32 chunks, and
    the command line on a float32 .npy.

    Two clocks: wall time with ``threads`` BLAS threads on every side (best of ``repeat``,
    interleaved), and at d = 3072 the CPU time of this process with 1 BLAS thread on every
    side, a measure of work that the other users of a shared machine do not inflate.
    """
    # d, chunks, samples per chunk, wall repeats, CPU-time repeats (0: not measured)
    cases = [(3072, 3 if quick else 6, 4096, 5, 3 if quick else 5)]
    if not quick:
        cases.append((12288, 2, 2048, 3, 0))  # single-threaded CPU time: minutes per run
    rng = np.random.default_rng(0)
    for d, n_chunks, chunk, repeat, cpu_repeat in cases:
        chunks64 = [rng.standard_normal((chunk, d)) for _ in range(n_chunks)]
        for dtype in (np.float64, np.float32):
            chunks = chunks64 if dtype == np.float64 else [c.astype(dtype) for c in chunks64]
            sides = covariance_sides(chunks, d)
            with threadpool_limits(threads, user_api="blas"):
                wall = dict(zip(sides, best_times(list(sides.values()), repeat), strict=True))
            cpu = dict.fromkeys(sides, float("nan"))
            if cpu_repeat:
                with threadpool_limits(1, user_api="blas"):
                    cpu = dict(zip(sides, best_times(list(sides.values()), cpu_repeat,
                                                     warm=False, clock=time.process_time),
                                   strict=True))
            del sides
            errs = offset_accuracy(chunks[:2])
            case = f"d={d}, {n_chunks} x {chunk} {np.dtype(dtype).name}"
            base = "float64 X.T @ X" + ("" if dtype == np.float64 else " of the converted chunks")
            common = {"case": case, "specsched_s": wall["ours"],
                      "cpu_specsched_s": cpu["ours"], "relative_error": errs[0]}
            rows.append({
                "benchmark": "covariance", **common, "baseline_s": wall["bare64"],
                "speedup": wall["bare64"] / wall["ours"], "cpu_baseline_s": cpu["bare64"],
                "cpu_speedup": cpu["bare64"] / cpu["ours"], "dsyrk_s": wall["dsyrk"],
                "cpu_dsyrk_s": cpu["dsyrk"], "baseline_relative_error": errs[1],
                "note": f"TARGET (speedup >= 0.9): throughput of the chunked estimator "
                        f"(centred, Chan merge, float64) relative to bare {base} "
                        f"(acc += X.T @ X; NumPy calls syrk): wall time with {threads} BLAS "
                        f"threads both (best of {repeat}); cpu_*: CPU time with 1 BLAS thread "
                        f"both; dsyrk_s: in-place dsyrk of the raw chunks (no centring, no "
                        f"d x d temporary), the floor; errors: max relative, at offset "
                        f"{OFFSET:g} + N(0,1) on 2 chunks, vs numpy.cov; the baseline's is the "
                        f"uncentred sum of squares"})
            print(rows[-1])
            if dtype == np.float32:
                rows.append({
                    "benchmark": "covariance (float32 BLAS)", **common,
                    "baseline_s": wall["bare32"], "speedup": wall["bare32"] / wall["ours"],
                    "cpu_baseline_s": cpu["bare32"], "cpu_speedup": cpu["bare32"] / cpu["ours"],
                    "baseline_relative_error": errs[2],
                    "note": "not the target: bare float32 X.T @ X (float32 products and "
                            f"accumulation); at offset {OFFSET:g} it loses every digit "
                            f"(baseline_relative_error), and a float32 syrk of data centred "
                            f"first still errs by {errs[3]:.2g} (relative), where the "
                            "estimator's float64 path meets numpy.cov"})
                print(rows[-1])
            del chunks
        del chunks64
    bench_covariance_cli(rows, quick, threads)


def bench_covariance_cli(rows, quick, threads, d=3072, chunk=4096):
    """``specsched spectrum X.npy --out S.npz`` (float32 file) against reading the same file
    chunk by chunk and bare float64 ``X.T @ X``, each the best of 2 runs."""
    import os
    import subprocess
    import tempfile

    from specsched.data.sources import open_source
    from specsched.spectrum import StreamingCovariance

    n = chunk * (6 if quick else 12)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="specsched-perf-") as tmp:
        path = Path(tmp) / "x.npy"
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        for a in range(0, n, chunk):
            X[a:a + chunk] = rng.standard_normal((chunk, d))
        X.flush()
        del X
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        argv = [sys.executable, "-m", "specsched.cli", "spectrum", str(path), "--out",
                str(Path(tmp) / "s.npz"), "--force"]

        def command():
            subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)

        def bare():
            acc = np.zeros((d, d))
            mm = np.load(path, mmap_mode="r")
            for a in range(0, n, chunk):
                c = np.asarray(mm[a:a + chunk], dtype=np.float64)
                acc += c.T @ c
            return acc

        def reader():  # the command's accumulation alone: its reader, in this process
            return StreamingCovariance().fit(open_source(str(path)), chunk)

        def eigh():
            return scipy.linalg.eigh(np.eye(d) + np.full((d, d), 1e-3), driver="evd")

        with threadpool_limits(threads, user_api="blas"):
            # the file was just written (page cache); the reader is warm from bench_covariance
            t_cmd, t_bare, t_read = best_times([command, bare, reader], 2, warm=False)
            (t_eigh,) = best_times([eigh], 1, warm=False)
    rows.append({"benchmark": "covariance (command line)",
                 "case": f"specsched spectrum on a {n} x {d} float32 .npy",
                 "specsched_s": t_cmd, "baseline_s": t_bare, "speedup": t_bare / t_cmd,
                 "note": "wall time of the command (start-up, imports, reading, accumulation, "
                         f"eigh, writing the .npz) vs reading the same file + bare float64 "
                         f"X.T @ X in process; {threads} BLAS threads. Of the command: the "
                         f"accumulation through its reader (in process) {t_read:.3g} s, ratio "
                         f"{t_bare / t_read:.3f} to the bare read + X.T @ X; the eigh of "
                         f"d={d} {t_eigh:.3g} s"})
    print(rows[-1])


def bench_adsn(rows, adsn):
    S = 50
    t0 = time.perf_counter()
    q = optimize_schedule(adsn, None, S, quadrature="auto")
    t_quad = time.perf_counter() - t0
    t0 = time.perf_counter()
    e = optimize_schedule(adsn, None, S, quadrature=None)
    t_exact = time.perf_counter() - t0
    info = q.quadrature
    rows.append({"benchmark": "adsn quadrature", "case": f"adsn (196608), DDIM, W2, S={S}",
                 "specsched_s": t_quad, "baseline_s": t_exact, "speedup": t_exact / t_quad,
                 "specsched_w2": q.fun, "baseline_w2": e.fun,
                 "relative_loss_gap": (q.fun - e.fun) / e.fun,
                 "quadrature_nodes": info["nodes"],
                 "quadrature_error_estimate": info["error_estimate"] / info["objective_exact"],
                 "quadrature_true_error": info["error"] / info["objective_exact"],
                 "note": "quadrature optimisation vs exact optimisation; W2 of both "
                 "schedules under the exact spectrum; errors relative, in W2^2"})
    print(rows[-1])


def plot(table, path, command):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.dropna(subset=["speedup"])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(t) + 1.2))
    labels = [f"{b}: {c}" for b, c in zip(t["benchmark"], t["case"], strict=True)]
    ax.barh(labels, t["speedup"], color="tab:blue")
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("speed-up over the baseline (time ratio; covariance: fraction of BLAS)")
    ax.invert_yaxis()
    fig.tight_layout()
    with atomic_write(path, force=True, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110, metadata=png_metadata(command))


def part_of(benchmark: str) -> str:
    """The part (of :data:`PARTS`) that writes rows named ``benchmark``."""
    if benchmark.startswith("covariance"):
        return "covariance"
    return {"loss+grad": "kernels", "optimise": "optimiser", "adsn quadrature": "adsn"}[benchmark]


def merged(path, table, parts, command):
    """The rows of ``path`` whose parts were not run, with ``table``'s, in :data:`PARTS` order;
    and its comment lines followed by ``command`` (naming the parts it replaced).

    ``command`` is this run's header: one line, or its lines (the command first, then its code
    version, :func:`specsched.provenance.header_lines`). The lines of an earlier merge of the
    same parts are dropped, its code-version line with it."""
    new = [command] if isinstance(command, str) else list(command)
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    note = f": the {', '.join(parts)} rows (the others as above)"
    comments, replaced = [], False
    for line in (line for line in lines if line.startswith("#")):
        if line.endswith(note) or (replaced and is_provenance_line(line)):
            replaced = line.endswith(note)
            continue
        replaced = False
        comments.append(line)
    old = pd.read_csv(io.StringIO("\n".join(line for line in lines
                                             if not line.startswith("#"))))
    keep = old[[part_of(b) not in parts for b in old["benchmark"]]]
    both = pd.concat([keep, table], ignore_index=True)
    order = [PARTS.index(part_of(b)) for b in both["benchmark"]]
    both = both.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    return comments + [new[0] + note, *new[1:]], both


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the slowest baselines")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                    help="run only these parts (default: all)")
    ap.add_argument("--adsn", type=Path, default=ADSN,
                    help=f"ADSN eigenvalues .npy (default {ADSN})")
    ap.add_argument("--out", default="results/performance.csv")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the rows of the parts run in --out and keep the others "
                    "(with the command lines that made them)")
    args = ap.parse_args(argv)
    adsn = None
    if {"kernels", "adsn"} & set(args.only):
        if not args.adsn.is_file():
            ap.error(f"--adsn: {args.adsn} not found (the ADSN eigenvalues, 196608 values)")
        adsn = np.clip(np.load(args.adsn).astype(np.float64), 0, None)
    rows = []
    if "kernels" in args.only:
        with threadpool_limits(1, user_api="blas"):
            bench_kernels(rows, adsn, args.quick)
    if "optimiser" in args.only:
        bench_optimiser(rows, args.quick)
    if "covariance" in args.only:
        bench_covariance(rows, args.quick)
    if "adsn" in args.only:
        bench_adsn(rows, adsn)
    table = pd.DataFrame(rows)
    command = command_line("python benchmarks/performance.py", argv)
    comments = header_lines(command)
    if args.merge and Path(args.out).is_file():
        comments, table = merged(args.out, table, args.only, comments)
    with atomic_write(args.out, force=True) as fh:
        fh.write("\n".join(comments) + "\n")
        table.to_csv(fh, index=False, float_format="%.6g")
    plot(table, Path(args.out).with_suffix(".png"), command)
    print(table.to_string())


if __name__ == "__main__":
    main()
