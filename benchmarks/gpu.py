"""Covariance accumulation and eigh on a GPU (CuPy) against this machine's CPU, d = 3072 ... 16384.

For each dimension d (default 3072, 12288 = 64 x 64 RGB, 16384 = a 4 x 64 x 64 latent), the
same float32 samples (``n = --chunks x --chunk``, default 4 x 4096 = 16384, offset 0.5 plus
Gaussian coordinates of power-law scales) go through
:class:`specsched.spectrum.StreamingCovariance` twice:

- ``cpu``: the NumPy path (compiled column pass, centred copy, in-place ``dsyrk``; LAPACK
  ``syevd`` through :func:`scipy.linalg.eigh`), BLAS on every core of this machine;
- ``gpu``: ``device="cuda"``, the array-API path on CuPy (``matmul`` of the augmented chunk,
  ``cupy.linalg.eigh``: cuSOLVER ``syevd``). Accumulation is timed twice: from host chunks
  (the user path, each chunk copied to the GPU) and from chunks already on the GPU. Each
  timed GPU section ends with a device synchronisation; ``eigh`` includes copying the
  eigenvectors back.

Per d it records both sides' seconds, samples/s and GFLOP/s (``n d^2`` flops for the
accumulation, what a ``syrk`` does), and the agreement of the results, each relative:
``max |C_gpu - C_cpu| / max |C_cpu|`` (covariance), ``max |lam_gpu - lam_cpu| / lam_max``
(eigenvalues, descending), ``max |mu_gpu - mu_cpu| / max |mu_cpu|`` (mean); ``equal`` is
whether all three are at most 1e-10.

Best of ``--repeat`` runs on the GPU (after a warm-up on d = 256 that compiles CuPy's
kernels) and on the CPU at d < 12288; the CPU's accumulation and eigh at d >= 12288 run once
(an eigh of d = 16384 takes minutes there). Expected wall time on an H200 with 16 CPU cores:
about 5 minutes, dominated by the CPU's eigh.

Writes ``results/gpu.csv`` (first lines: the command; the machine and the code version) once
everything has
run; nothing on failure. Without CuPy or a CUDA device it prints one line and exits with
status 2, writing nothing.

    python benchmarks/gpu.py [--dims 3072 12288 16384] [--chunks 4] [--chunk 4096]
                             [--repeat 2] [--out results/gpu.csv]
    python benchmarks/gpu.py --dry-run       # the same logic on the CPU: NumPy's array-API
                                             # namespace stands in for CuPy, d = 256, no file
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specsched.errors import InputError
from specsched.fileio import atomic_write
from specsched.provenance import command_line, header_lines
from specsched.spectrum import StreamingCovariance
from specsched.spectrum.moments import get_namespace, to_numpy

ROOT = Path(__file__).resolve().parents[1]
#: Results equal to the CPU's to this relative tolerance count as equal (issue 16, item 6).
RTOL = 1e-10
#: From this d on, the CPU side runs once (its eigh takes minutes).
CPU_ONCE_FROM = 12288


class Device:
    """The accelerator side: CuPy on a GPU, or NumPy's array-API namespace standing in."""

    def __init__(self, xp_name: str):
        self.name = xp_name
        if xp_name == "cupy":
            self.xp = get_namespace("cuda")  # InputError without CuPy or a device
            import cupy

            self.cupy = cupy
            props = cupy.cuda.runtime.getDeviceProperties(0)
            label = props["name"]
            self.label = label.decode() if isinstance(label, bytes) else str(label)
            runtime = cupy.cuda.runtime.runtimeGetVersion()
            self.version = f"CuPy {cupy.__version__}, CUDA runtime {runtime}"
        else:
            import array_api_compat.numpy as xnp

            self.xp, self.cupy = xnp, None
            self.label, self.version = "NumPy array-API namespace (dry run)", np.__version__

    def estimator(self) -> StreamingCovariance:
        if self.cupy is not None:
            return StreamingCovariance(device="cuda")
        return StreamingCovariance(xp=self.xp)

    def sync(self) -> None:
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()

    def put(self, chunk: np.ndarray):
        out = self.xp.asarray(chunk)
        self.sync()
        return out

    def free(self) -> None:
        if self.cupy is not None:
            self.cupy.get_default_memory_pool().free_all_blocks()


def make_chunks(d: int, n_chunks: int, chunk: int, seed: int = 0) -> list[np.ndarray]:
    """float32 chunks: ``0.5 + z_j k^-0.5`` for coordinate ``k = j + 1``, z standard normal."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, d + 1, dtype=np.float32) ** -0.5).astype(np.float32)
    return [(rng.standard_normal((chunk, d), dtype=np.float32) * scale + 0.5)
            .astype(np.float32) for _ in range(n_chunks)]


def timed(fn, repeat: int, sync=lambda: None):
    """``(best seconds, last result)`` of ``repeat`` calls of ``fn``, each ended by ``sync``."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def accumulate(make, chunks):
    est = make()
    for c in chunks:
        est.partial_fit(c)
    return est


def relative(a, b, scale) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / scale)


def measure(dev: Device, d: int, n_chunks: int, chunk: int, repeat: int) -> dict:
    """One row: both sides on the same chunks of dimension ``d``."""
    chunks = make_chunks(d, n_chunks, chunk)
    n = n_chunks * chunk
    cpu_repeat = 1 if d >= CPU_ONCE_FROM else repeat
    stamp(f"d={d}: CPU accumulation ({cpu_repeat} run(s))")
    t_cpu, cpu = timed(lambda: accumulate(StreamingCovariance, chunks), cpu_repeat)
    stamp(f"d={d}: GPU accumulation from host chunks ({repeat} run(s))")
    t_gpu, gpu = timed(lambda: accumulate(dev.estimator, chunks), repeat, dev.sync)
    stamp(f"d={d}: GPU accumulation from chunks on the device")
    on_device = functools.partial(accumulate, dev.estimator, [dev.put(c) for c in chunks])
    t_res, _ = timed(on_device, repeat, dev.sync)
    del on_device
    dev.free()
    c_cpu, c_gpu = cpu.covariance_, to_numpy(gpu.covariance_)
    cov_diff = relative(c_gpu, c_cpu, np.max(np.abs(c_cpu)))
    del c_cpu, c_gpu
    mu_cpu, mu_gpu = to_numpy(cpu.mean_), to_numpy(gpu.mean_)
    mean_diff = relative(mu_gpu, mu_cpu, np.max(np.abs(mu_cpu)))
    stamp(f"d={d}: CPU eigh ({cpu_repeat} run(s))")
    t_eig_cpu, (lam_cpu, _) = timed(lambda: cpu.eigh(), cpu_repeat)
    stamp(f"d={d}: GPU eigh ({repeat} run(s))")
    t_eig_gpu, (lam_gpu, _) = timed(lambda: gpu.eigh(), repeat, dev.sync)
    dev.free()
    eig_diff = relative(lam_gpu, lam_cpu, lam_cpu[0])
    flops = n * d * d
    row = {
        "d": d, "n_samples": n, "chunk": chunk,
        "cpu_accumulate_s": t_cpu, "gpu_accumulate_s": t_gpu,
        "gpu_accumulate_resident_s": t_res, "accumulate_speedup": t_cpu / t_gpu,
        "cpu_samples_per_s": n / t_cpu, "gpu_samples_per_s": n / t_gpu,
        "cpu_gflops": flops / t_cpu / 1e9, "gpu_gflops": flops / t_gpu / 1e9,
        "gpu_resident_gflops": flops / t_res / 1e9,
        "cpu_eigh_s": t_eig_cpu, "gpu_eigh_s": t_eig_gpu, "eigh_speedup": t_eig_cpu / t_eig_gpu,
        "cpu_runs": cpu_repeat, "gpu_runs": repeat,
        "cov_rel_diff": cov_diff, "eigenvalue_rel_diff": eig_diff, "mean_rel_diff": mean_diff,
        "equal": max(cov_diff, eig_diff, mean_diff) <= RTOL,
    }
    stamp(f"d={d}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in row.items()))
    return row


_T0 = time.perf_counter()


def stamp(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", flush=True)


def machine(dev: Device) -> str:
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{i['internal_api']} {i.get('version')} x{i['num_threads']}"
                     for i in threadpool_info() if i["user_api"] == "blas")
    cpu = platform.processor() or platform.machine()
    return (f"# machine: {dev.label} ({dev.version}); CPU {cpu}, {os.cpu_count()} cores, "
            f"BLAS {blas}; NumPy {np.__version__}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[3072, 12288, 16384])
    ap.add_argument("--chunks", type=int, default=4, help="chunks per run (default 4)")
    ap.add_argument("--chunk", type=int, default=4096, help="samples per chunk (default 4096)")
    ap.add_argument("--repeat", type=int, default=2,
                    help=f"runs per GPU timing, and per CPU timing below d = {CPU_ONCE_FROM}")
    ap.add_argument("--xp", choices=["cupy", "numpy"], default="cupy",
                    help="the accelerator: CuPy, or NumPy's array-API namespace (a self-test)")
    ap.add_argument("--dry-run", action="store_true",
                    help="--xp numpy, d = 256, 3 chunks of 200; writes only with --out")
    ap.add_argument("--out", default=None, help="CSV to write (default results/gpu.csv; "
                    "none with --dry-run)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.xp, args.dims, args.chunks, args.chunk = "numpy", [256], 3, 200
    out = args.out or (None if args.dry_run else str(ROOT / "results" / "gpu.csv"))
    try:
        dev = Device(args.xp)
    except InputError as exc:
        print(f"benchmarks/gpu.py: no GPU to measure: {exc}", file=sys.stderr)
        return 2
    stamp(f"{dev.label}; warm-up on d = 256 (compiles CuPy's kernels)")
    measure(dev, 256, 2, 256, 1)
    rows = [measure(dev, d, args.chunks, args.chunk, args.repeat) for d in args.dims]
    table = pd.DataFrame(rows)
    print(table.to_string())
    if out is not None:
        with atomic_write(out, force=True) as fh:
            command, version = header_lines(command_line("python benchmarks/gpu.py", argv))
            fh.write(command + "\n")
            # the code version ends the machine line (the table starts on the third line)
            fh.write(f"{machine(dev)}; {version[2:]}\n")
            table.to_csv(fh, index=False, float_format="%.6g")
        stamp(f"wrote {out}")
    return 0 if table["equal"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
