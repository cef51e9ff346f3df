"""benchmarks/gpu.py and the covariance part of benchmarks/performance.py, on the CPU.

No GPU here: gpu.py's refusal without CuPy and its logic with NumPy's array-API namespace
standing in for CuPy (``--dry-run``); performance.py's ``--merge``, which replaces one part's
rows of a results table and must leave the other parts' rows as they were.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu
    import performance

    return gpu, performance


def test_gpu_benchmark_without_cupy_says_so_and_writes_nothing(bench, tmp_path, capsys):
    gpu, _ = bench
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy installed")
    except ImportError:
        pass
    out = tmp_path / "gpu.csv"
    assert gpu.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no GPU to measure" in err and "specsched[gpu]" in err
    assert not out.exists()


def test_gpu_benchmark_dry_run_compares_the_namespace_path_with_numpy(bench, tmp_path):
    gpu, _ = bench
    out = tmp_path / "gpu.csv"
    assert gpu.main(["--dry-run", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == f"# python benchmarks/gpu.py --dry-run --out {out}"
    assert lines[1].startswith("# machine: NumPy array-API namespace (dry run)")
    table = pd.read_csv(io.StringIO("\n".join(lines[2:])))
    row = table.iloc[0]
    assert row["d"] == 256 and row["n_samples"] == 600 and bool(row["equal"])
    for key in ("cov_rel_diff", "eigenvalue_rel_diff", "mean_rel_diff"):
        assert 0 <= row[key] <= 1e-10
    assert row["cpu_accumulate_s"] > 0 and row["gpu_eigh_s"] > 0


def test_merge_replaces_one_part_and_keeps_the_others(bench, tmp_path):
    _, performance = bench
    path = tmp_path / "performance.csv"
    original = ("# python benchmarks/performance.py\n"
                "benchmark,case,specsched_s,speedup,note\n"
                "loss+grad,a,0.000242238,4.08743,k\n"
                "covariance,old,2.47876,0.714326,c\n"
                "adsn quadrature,b,0.418702,19.8057,q\n")
    path.write_text(original)
    new = pd.DataFrame([{"benchmark": "covariance", "case": "new", "specsched_s": 1.5,
                         "speedup": 0.98, "relative_error": 3e-12},
                        {"benchmark": "covariance (command line)", "case": "cli",
                         "specsched_s": 17.0, "speedup": 0.47}])
    command = "# python benchmarks/performance.py --only covariance --merge"
    comments, table = performance.merged(path, new, ["covariance"], command)
    assert comments == ["# python benchmarks/performance.py",
                        command + ": the covariance rows (the others as above)"]
    assert table["case"].tolist() == ["a", "new", "cli", "b"]  # in the order of PARTS
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6g")
    written = pd.read_csv(io.StringIO(buf.getvalue()))
    kept = pd.read_csv(io.StringIO(original.split("\n", 1)[1]))
    for case in ("a", "b"):  # the other parts' numbers come back exactly
        got = written[written.case == case][["specsched_s", "speedup"]].to_numpy()
        ref = kept[kept.case == case][["specsched_s", "speedup"]].to_numpy()
        np.testing.assert_array_equal(got, ref)
    path.write_text("\n".join(comments) + "\n" + buf.getvalue())
    again, _ = performance.merged(path, new, ["covariance"], command)
    assert again == comments  # a second merge does not repeat its command line
