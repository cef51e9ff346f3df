"""dask where the data lives: ``specsched spectrum SHARDS/ --dask ADDR`` on a local cluster.

Writes a folder of ``.npy`` shards (default 8 shards x 5000 x 3072 float32: 492 MB of
random-walk rows, strongly correlated, offset 3) in a temporary folder under /tmp, then:

1. **in process** (the reference): ``estimate_spectrum(open_source(SHARDS), "full",
   chunk_size=C)`` with NumPy's BLAS on every core, and again limited to one BLAS thread
   (threadpoolctl), the per-core baseline of one dask worker; ``accumulate_s`` is the time
   of ``StreamingCovariance.fit`` alone (the eigen-decomposition excluded).
2. **dask**, for each ``--workers K``: a ``LocalCluster(n_workers=K, processes=True,
   threads_per_worker=1)`` (dask's nanny sets ``OMP_NUM_THREADS=1`` in each worker), and the
   command users run, ``specsched spectrum SHARDS --dask ADDR --out S.npz --chunk-size C``,
   in a child process: the *client*. The scheduler and the workers run in other processes,
   so every byte the child writes to a TCP socket is sent by the client.

Measured (columns of ``results/dask_shards.csv``):

- ``client_sent_bytes``: bytes written by the client process to every TCP connection
  (distributed's ``TCP.write`` returns the bytes it wrote; the child wraps it and sums): the
  handshakes, the visibility check, the task graph, the release messages, everything.
  ``graph_parts_bytes``: the pickled size of the parts submitted (what the graph carries of
  the data: paths and row ranges). The data itself is ``data_bytes``.
- ``worker_rss_mib`` (after start-up and specsched's import, before the run) and
  ``worker_peak_mib``: each worker's ``VmRSS`` and its ``VmHWM`` (peak resident set) from
  ``/proc/self/status``, the peak reset first (``5 > /proc/self/clear_refs``), both read
  on the workers with ``client.run``; the largest over the workers. ``bound_mib``: what
  the estimator needs by its design, ``C x d x (itemsize + 8)`` for one chunk and its
  float64 copy plus ``4 x 8 d^2`` (the part's d x d sum, the two states a merge reads and
  its copy).
- ``eig_rel_err`` / ``mean_rel_err``: largest relative difference of the eigenvalues
  (elementwise) and of the mean in data coordinates ``U m`` (relative to its largest
  entry) from the in-process estimate (target 1e-10).
- ``accumulate_s``, ``samples_per_s``: the map-reduce on the cluster (tasks, the tree of
  merges, the merged state's transfer to the client), timed in the client around
  ``Executor.map_reduce``; ``command_s``: the whole command (connection, eigh, save);
  ``task_compute_s``: the seconds the workers spent computing specsched's ``tasks`` (dask's
  task stream), so ``task_compute_s / accumulate_s`` is the parallelism reached.

This machine has 2 cores, shared with other work: 2 workers can at best double one
worker's rate, and a busy neighbour shows in the seconds. Deletes the shards afterwards.
Not part of the test suite.

Usage: python benchmarks/dask_shards.py [--shards 8] [--n 5000] [--d 3072]
       [--chunk-size 4096] [--workers 1 2] [--out results/dask_shards.csv]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from specsched.data.sources import open_source
from specsched.fileio import atomic_write
from specsched.provenance import command_line, header
from specsched.spectrum import Spectrum, StreamingCovariance, estimate_spectrum

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

CLIENT = r"""
import json, sys, time
import distributed.comm.tcp as tcp
from specsched.spectrum import cluster
from specsched.cli import main

sent = {"bytes": 0, "writes": 0}
_write = tcp.TCP.write

async def write(self, msg, serializers=None, on_error="message"):
    n = await _write(self, msg, serializers, on_error)
    sent["bytes"] += n
    sent["writes"] += 1
    return n

tcp.TCP.write = write
spent = [0.0]
_map_reduce = cluster.Executor.map_reduce

def map_reduce(self, *args, **kwargs):
    t = time.perf_counter()
    try:
        return _map_reduce(self, *args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - t

cluster.Executor.map_reduce = map_reduce
t = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"rc": code, "sent_bytes": sent["bytes"], "writes": sent["writes"],
                  "accumulate_s": spent[0], "command_s": time.perf_counter() - t}))
"""


def _write_shards(folder: Path, shards: int, n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(shards):
        x = rng.standard_normal((n, d)).cumsum(axis=1) / np.sqrt(d) + 3.0
        np.save(folder / f"shard{i:03d}.npy", x.astype(np.float32))


def _memory() -> dict:
    """This process's ``VmRSS`` and ``VmHWM`` in KiB (runs on each worker)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _import_specsched() -> None:
    import specsched.spectrum.estimators  # noqa: F401


def _reset_peak() -> None:
    """Reset this process's ``VmHWM`` to its current resident set (Linux)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _in_process(folder: Path, chunk: int, threads: int | None):
    times = []
    fit = StreamingCovariance.fit

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - t)

    StreamingCovariance.fit = timed
    try:
        with threadpool_limits(threads):
            s = estimate_spectrum(open_source(folder), "full", chunk_size=chunk)
    finally:
        StreamingCovariance.fit = fit
    return s, sum(times)


def _errors(got: Spectrum, ref: Spectrum) -> tuple[float, float]:
    eig = float(np.max(np.abs(got.eigenvalues - ref.eigenvalues) / ref.eigenvalues))
    mu_got, mu_ref = got.eigenvectors @ got.mean, ref.eigenvectors @ ref.mean
    mean = float(np.max(np.abs(mu_got - mu_ref)) / np.max(np.abs(mu_ref)))
    return eig, mean


def _dask(folder: Path, tmp: Path, workers: int, chunk: int) -> tuple[dict, Spectrum]:
    from distributed import Client, LocalCluster, get_task_stream

    out = tmp / f"dask{workers}.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        c.run(_import_specsched)  # code is not data: the baseline has it loaded
        before = c.run(_memory)
        c.run(_reset_peak)
        with get_task_stream(c) as stream:  # every task on the scheduler, any client's
            child = subprocess.run(
                [sys.executable, "-c", CLIENT, "spectrum", str(folder), "--out", str(out),
                 "--dask", cluster.scheduler_address, "--chunk-size", str(chunk)],
                capture_output=True, text=True, env=env, check=False)
        after = c.run(_memory)
    if child.returncode != 0:
        raise SystemExit(f"the client failed:\n{child.stdout}\n{child.stderr}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    row["warnings"] = child.stderr.count("warning")
    computes = [x["stop"] - x["start"] for task in stream.data for x in task["startstops"]
                if x["action"] == "compute" and "specsched-" in str(task["key"])]
    row["task_compute_s"] = sum(computes)
    row["tasks"] = len(computes)
    row["worker_rss_mib"] = max(v["VmRSS"] for v in before.values()) / 1024
    row["worker_peak_mib"] = max(v["VmHWM"] for v in after.values()) / 1024
    row["worker_increase_mib"] = max(after[w]["VmHWM"] - before[w]["VmRSS"]
                                     for w in after) / 1024
    return row, Spectrum.load(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--n", type=int, default=5000, help="rows per shard")
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "results" / "dask_shards.csv"))
    a = ap.parse_args(argv)
    d, chunk, n_total = a.d, a.chunk_size, a.shards * a.n
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="dask_shards_", dir="/tmp"))
    rows = []
    try:
        folder = tmp / "shards"
        folder.mkdir()
        _write_shards(folder, a.shards, a.n, d)
        src = open_source(folder)
        data_bytes = sum(f.stat().st_size for f in folder.iterdir())
        parts_bytes = sum(len(pickle.dumps(p)) for p in src.parts)
        bound = (min(chunk, a.n) * d * (src.itemsize + 8) + 4 * 8 * d * d) / MIB
        common = {"n": n_total, "d": d, "shards": a.shards, "parts": len(src.parts),
                  "chunk_size": chunk, "data_bytes": data_bytes, "bound_mib": f"{bound:.0f}"}
        ref, seconds = _in_process(folder, chunk, None)
        rows.append({**common, "mode": "in-process", "workers": "", "blas_threads": "all",
                     "accumulate_s": f"{seconds:.2f}",
                     "samples_per_s": f"{n_total / seconds:.0f}"})
        _, seconds1 = _in_process(folder, chunk, 1)
        rows.append({**common, "mode": "in-process", "workers": "", "blas_threads": 1,
                     "accumulate_s": f"{seconds1:.2f}",
                     "samples_per_s": f"{n_total / seconds1:.0f}"})
        for k in a.workers:
            r, got = _dask(folder, tmp, k, chunk)
            eig, mean = _errors(got, ref)
            rows.append({**common, "mode": "dask", "workers": k, "blas_threads": 1,
                         "accumulate_s": f"{r['accumulate_s']:.2f}",
                         "samples_per_s": f"{n_total / r['accumulate_s']:.0f}",
                         "command_s": f"{r['command_s']:.2f}", "tasks": r["tasks"],
                         "task_compute_s": f"{r['task_compute_s']:.2f}",
                         "client_sent_bytes": r["sent_bytes"],
                         "client_writes": r["writes"], "graph_parts_bytes": parts_bytes,
                         "worker_rss_mib": f"{r['worker_rss_mib']:.0f}",
                         "worker_peak_mib": f"{r['worker_peak_mib']:.0f}",
                         "worker_increase_mib": f"{r['worker_increase_mib']:.0f}",
                         "eig_rel_err": f"{eig:.2e}", "mean_rel_err": f"{mean:.2e}",
                         "client_warnings": r["warnings"]})
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fields = ["mode", "workers", "blas_threads", "n", "d", "shards", "parts", "chunk_size",
              "data_bytes", "accumulate_s", "samples_per_s", "command_s", "tasks",
              "task_compute_s", "client_sent_bytes",
              "client_writes", "graph_parts_bytes", "worker_rss_mib", "worker_peak_mib",
              "worker_increase_mib", "bound_mib", "eig_rel_err", "mean_rel_err",
              "client_warnings"]
    buf = io.StringIO()
    buf.write(header(command_line("python benchmarks/dask_shards.py", argv)))
    buf.write(f"# {a.shards} shards x {a.n} x {d} float32 ({data_bytes / MIB:.0f} MiB); "
              f"{os.cpu_count()} cores shared with other work (load average {load_before:.1f} "
              f"at the start, {os.getloadavg()[0]:.1f} at the end); LocalCluster(processes="
              "True, threads_per_worker=1); client = the command in a child process\n")
    w = csv.DictWriter(buf, fieldnames=fields, restval="")
    w.writeheader()
    w.writerows(rows)
    with atomic_write(a.out, force=True, mode="w") as fh:
        fh.write(buf.getvalue())
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
