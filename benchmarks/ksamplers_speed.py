"""Speed of k-diffusion samplers' closed forms, as ratios against the DDIM kernel, same process.

Three measurements (issue 13's speed targets), written to results/ksamplers_speed.csv (first
line: the command):

1. ``loss_and_grad`` (W2^2 and its gradient) of each k-diffusion sampler on the CIFAR-10
   spectrum (d = 3072) and on its 512-bin quadrature (655 nodes: what the optimiser uses for
   these samplers), at S = 10, 100, 1000 on the linear schedule: the compiled corner
   recursion (``backend="numba"``, the default), the NumPy reference trace, and ``ddim-ve``
   through the DDIM kernel on the same directions, medians of repeats in this process;
2. the command users run, ``specsched optimize --spectrum cifar10 --sampler dpmpp-2m --nfe
   10``, wall time against ``--sampler ddim --steps 10`` (in the column
   ``ddim_kernel_seconds`` of that row), each in a fresh process (best of two: the first may
   compile numba's cache);
3. the floor under any such command: a fresh process importing what ``optimize`` imports
   (specsched's command line, scipy.optimize, matplotlib, numba), best of two.

Usage: python benchmarks/ksamplers_speed.py [--samplers dpmpp-2m euler heun] [--repeats 5]
[--steps 10 100 1000] [--out results]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, repeats: int) -> float:
    fn()  # warm (numba compiles or loads its cache)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _process_seconds(argv, runs: int = 2) -> float:
    """Best wall time of ``runs`` fresh processes ``python argv``."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def _command_seconds(argv) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return _process_seconds(["-m", "specsched.cli", *argv, "--out", tmp, "--force"])


IMPORTS = ("import specsched.cli, specsched.cli.optimize, specsched.optimize, scipy.optimize, "
           "matplotlib.figure, numba")


def main() -> None:
    import pandas as pd
    from tqdm.auto import tqdm

    from specsched.data.builtin import cifar10_eigenvalues
    from specsched.fileio import atomic_write
    from specsched.provenance import command_line, header
    from specsched.schedules import baseline_alphas_cumprod
    from specsched.theory import loss_and_grad
    from specsched.theory.quadrature import compress_spectrum

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["dpmpp-2m", "euler", "heun",
                                                       "dpmpp-2m-sde"])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="results")
    args = ap.parse_args()

    lam = cifar10_eigenvalues()
    q = compress_spectrum(lam, None, 512)
    rows = []
    cells = [(S, smp, where) for S in args.steps for smp in args.samplers
             for where in ("full", "quadrature")]
    for S, smp, where in tqdm(cells, desc="timing", unit="cell"):
        ab = baseline_alphas_cumprod("linear", S)
        if where == "full":
            eig, kw = lam, {}
        else:
            eig, kw = q.eigenvalues, dict(mean=q.mean, **q.loss_kwargs())
        mean = kw.pop("mean", None)
        repeats = args.repeats

        def timed(sampler, backend, repeats=repeats, ab=ab, eig=eig, mean=mean, kw=kw):
            return _median_time(lambda: loss_and_grad(eig, mean, ab, sampler=sampler,
                                                      backend=backend, **kw), repeats)

        ddim = timed("ddim-ve", "numba")
        fast = timed(smp, "numba")
        ref = timed(smp, "numpy", repeats=1)
        rows.append({"measure": "loss_and_grad", "sampler": smp, "steps": S, "spectrum": where,
                     "directions": eig.size, "seconds": fast, "numpy_seconds": ref,
                     "ddim_kernel_seconds": ddim, "ratio_to_ddim_kernel": fast / ddim,
                     "speedup_over_numpy": ref / fast})
    opt = _command_seconds(["optimize", "--spectrum", "cifar10", "--sampler", "dpmpp-2m",
                            "--nfe", "10"])
    base = _command_seconds(["optimize", "--spectrum", "cifar10", "--sampler", "ddim",
                             "--steps", "10"])
    floor = _process_seconds(["-c", IMPORTS])
    rows.append({"measure": "optimize command", "sampler": "dpmpp-2m", "steps": 10,
                 "spectrum": "cifar10", "directions": lam.size, "seconds": opt,
                 "ddim_kernel_seconds": base, "ratio_to_ddim_kernel": opt / base})
    rows.append({"measure": "imports of optimize", "sampler": "", "steps": 0,
                 "spectrum": "", "directions": 0, "seconds": floor})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ksamplers_speed.csv"
    with atomic_write(path, force=True) as fh:
        fh.write(header(command_line("python benchmarks/ksamplers_speed.py")))
        pd.DataFrame(rows).to_csv(fh, index=False, float_format="%.6g")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
