"""Peak memory and speed of the full-covariance spectrum of a large ``.npy``, as users run it.

Writes an (N, d) float32 ``.npy`` (default N = 200000, d = 3072: 2.3 GiB) in a temporary
folder, then measures, for each code tree given (default: this checkout):

- ``command``: ``python -m specsched.cli spectrum BIG.npy --out S.npz`` (the default
  ``--method full``; ``--chunk-size`` only when given here), the path users take;
- ``library``: ``estimate_spectrum(open_source(BIG.npy), "full")`` in a fresh interpreter.

Each runs in a child with ``PYTHONPATH`` and the working folder set to the code tree (checked:
the child imports specsched from there), started by a small fresh
*meter* process that polls the child's ``/proc/PID/status`` ``VmHWM`` (the high-water mark of
the child's own address space, which starts at ``exec``) and reads
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after waiting for it. The meter is fresh and small on
purpose: Linux carries the pre-``exec`` address space's peak into a child's ``ru_maxrss``, and
Python starts children with ``vfork``, so measured from this process (which has just written
the file) ``ru_maxrss`` would report this process's peak. Both numbers are written; they agree
within the meter's own few MiB. Seconds are the child's wall time (start-up included),
samples/s is ``N / seconds``.

Writes ``results/memmap_memory.csv`` (first lines: the command that made it, the code version
and the machine) and deletes the big file. Not part of the test suite.

Usage: python benchmarks/memmap_memory.py [--n 200000] [--d 3072] [--chunk-size N]
       [--code DIR ...] [--out results/memmap_memory.csv]
e.g.   python benchmarks/memmap_memory.py --code OLD_CHECKOUT .    (before / after)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from specsched.fileio import atomic_write
from specsched.provenance import command_line, header

ROOT = Path(__file__).resolve().parents[1]

METER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
hwm = 0
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.02)
out, err = child.communicate()
seconds = time.perf_counter() - t
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": child.returncode, "vmhwm_kib": hwm, "maxrss_kib": maxrss,
                  "seconds": seconds, "stdout": out.decode()[-2000:],
                  "stderr": err.decode()[-2000:]}))
"""

LIBRARY = """
import sys
from specsched.data.sources import open_source
from specsched.spectrum import estimate_spectrum
kw = {} if sys.argv[2] == "-" else {"chunk_size": int(sys.argv[2])}
s = estimate_spectrum(open_source(sys.argv[1]), "full", **kw)
print(f"trace {s.eigenvalues.sum():.9g}")
"""


def _write_big(path: Path, n: int, d: int) -> None:
    """A float32 .npy of standard normal rows, written block by block (no memory map)."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for a in range(0, n, 10000):
            fh.write(rng.standard_normal((min(10000, n - a), d), dtype=np.float32).tobytes())


def _commit(code: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _measure(argv: list[str], code: Path) -> dict:
    # cwd = the code tree too: ``python -m`` and ``-c`` put the working folder first on sys.path
    env = {**os.environ, "PYTHONPATH": str(code)}
    where = subprocess.run([sys.executable, "-c", "import specsched; print(specsched.__file__)"],
                           env=env, cwd=code, check=True, capture_output=True, text=True)
    if not Path(where.stdout.strip()).resolve().is_relative_to(code):
        raise SystemExit(f"{code}: the children would import {where.stdout.strip()}")
    meter = subprocess.run([sys.executable, "-c", METER, *argv], env=env, cwd=code, check=True,
                           capture_output=True, text=True)
    result = json.loads(meter.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result['rc']}):\n{result['stderr']}")
    return result


def _trace(text: str) -> float:
    return float(text.split("total variance ")[1].split(",")[0]) if "total variance" in text \
        else float(text.split("trace ")[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="passed as --chunk-size (default: the command's default)")
    ap.add_argument("--code", nargs="+", default=[str(ROOT)],
                    help="code trees to measure, each put on the children's PYTHONPATH")
    ap.add_argument("--out", default=str(ROOT / "results" / "memmap_memory.csv"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        big, out = Path(tmp) / "big.npy", Path(tmp) / "s.npz"
        _write_big(big, args.n, args.d)
        chunk = [] if args.chunk_size is None else ["--chunk-size", str(args.chunk_size)]
        for code in map(Path, args.code):
            code = code.resolve()
            runs = {
                "command": [sys.executable, "-m", "specsched.cli", "spectrum", str(big),
                            "--out", str(out), "--force", *chunk],
                "library": [sys.executable, "-c", LIBRARY, str(big),
                            "-" if args.chunk_size is None else str(args.chunk_size)],
            }
            for path, argv in runs.items():
                r = _measure(argv, code)
                row = {"code": code.name, "commit": _commit(code), "path": path, "n": args.n,
                       "d": args.d, "dtype": "float32",
                       "chunk_size": args.chunk_size or "default",
                       "peak_rss_mib": r["vmhwm_kib"] / 1024,
                       "ru_maxrss_mib": r["maxrss_kib"] / 1024,
                       "seconds": r["seconds"], "samples_per_s": args.n / r["seconds"],
                       "trace": _trace(r["stdout"])}
                rows.append(row)
                print(f"{row['code']} ({row['commit']}) {path}: peak RSS "
                      f"{row['peak_rss_mib']:.0f} MiB (ru_maxrss {row['ru_maxrss_mib']:.0f}), "
                      f"{row['seconds']:.1f} s, {row['samples_per_s']:.0f} samples/s, "
                      f"trace {row['trace']:.6g}", flush=True)
    with open("/proc/meminfo") as fh:
        total = fh.readline().split()[1]
    with atomic_write(args.out, force=True) as fh:
        fh.write(header(command_line("python benchmarks/memmap_memory.py")))
        fh.write(f"# command measured: python -m specsched.cli spectrum big.npy --out s.npz "
                 f"{' '.join(chunk)}; {args.n} x {args.d} float32 "
                 f"({args.n * args.d * 4 / 2**30:.2f} GiB); {os.cpu_count()} cores, "
                 f"MemTotal {int(total) / 2**20:.1f} GiB\n")
        cols = list(rows[0])
        fh.write(",".join(cols) + "\n")
        for row in rows:
            fh.write(",".join(f"{v:.1f}" if isinstance(v, float) and c != "trace"
                              else f"{v:.9g}" if c == "trace" else str(v)
                              for c, v in row.items()) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
