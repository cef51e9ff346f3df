"""Peak memory of the chunked full-covariance estimate of a large memory-mapped dataset.

Writes a (N, 3072) float32 .npy (default N = 200000, 2.4 GB) in a temporary folder, then in a
fresh subprocess estimates its spectrum with ``estimate_spectrum(open_source(path), "full")``
and reports the subprocess's peak resident set size: ``VmHWM`` of ``/proc/self/status`` (the
high-water mark of the child's own address space, which starts at ``exec``). Not
``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the pre-``exec`` address space's peak into
it, and Python starts the child with ``vfork``, so ``ru_maxrss`` would report this process's
peak, which includes every page of the file it has just written through a memory map (about
the file's size). ``ru_maxrss`` is used only where ``/proc`` is absent. Writes the numbers to
``results/memmap_memory.csv`` (first line: the command). Not part of the test suite.

Usage: python benchmarks/memmap_memory.py [--n 200000] [--chunk-size 4096]
       [--out results/memmap_memory.csv]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from specsched.fileio import atomic_write

CHILD = """
import resource, sys, time
from specsched.data.sources import open_source
from specsched.spectrum import estimate_spectrum
t = time.time()
s = estimate_spectrum(open_source(sys.argv[1]), "full", chunk_size=int(sys.argv[2]))
try:  # this process's own peak, in MiB (see the module docstring)
    with open("/proc/self/status") as fh:
        peak = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{peak:.1f} {time.time() - t:.1f} {s.n_samples} {s.eigenvalues.sum():.6g}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"
                                         / "memmap_memory.csv"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                       shape=(args.n, args.d))
        rng = np.random.default_rng(0)
        for a in range(0, args.n, 10000):
            b = min(a + 10000, args.n)
            mm[a:b] = rng.standard_normal((b - a, args.d), dtype=np.float32)
        mm.flush()
        del mm
        t = time.time()
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.chunk_size)],
                             check=True, capture_output=True, text=True).stdout.split()
        peak, secs, n, trace = out
        print(f"N = {n} x d = {args.d} float32 ({args.n * args.d * 4 / 2**30:.2f} GiB on disk), "
              f"chunk {args.chunk_size}: peak RSS {float(peak):.0f} MiB, estimate {secs} s "
              f"(wall {time.time() - t:.0f} s), trace {trace}")
    with atomic_write(args.out, force=True) as fh:
        fh.write("# python " + " ".join(["benchmarks/memmap_memory.py"] + sys.argv[1:]) + "\n")
        fh.write("n,d,chunk_size,peak_rss_mib,seconds\n")
        fh.write(f"{n},{args.d},{args.chunk_size},{float(peak):.1f},{secs}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
