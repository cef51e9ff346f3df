"""specsched sweep: numbers consistent with evaluate, never worse than a baseline, resumable."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from specsched.cli import main
from specsched.schedules import BASELINES, baseline_alphas_cumprod
from specsched.spectrum import load_spectrum
from specsched.theory import evaluate_schedule

ARGS = ["sweep", "--spectrum", "cifar10", "--steps", "3", "6", "--samplers", "ddim", "ddpm-ve",
        "--losses", "w2", "kl-data-gen", "--jobs", "1"]


def read(out):
    return pd.read_csv(out / "sweep.csv", comment="#")


def test_sweep_matches_evaluate_and_beats_baselines(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main([*ARGS[:-1], "2", "--out", str(out)]) == 0  # two worker processes
    table = read(out)
    # steps x samplers x losses x (every baseline + the optimum)
    assert len(table) == 2 * 2 * 2 * (len(BASELINES) + 1)
    lam = load_spectrum("cifar10").eigenvalues
    for _, row in table[~table.schedule.str.startswith("optimized")].iterrows():
        fam, _, spacing = row.schedule.partition("/")
        ab = baseline_alphas_cumprod(fam, int(row.steps), spacing=spacing or "linspace")
        r = evaluate_schedule(lam, None, ab, sampler=row.sampler)
        assert (row.w2, row.kl, row.kl_data_gen) == pytest.approx(
            (r.w2, r.kl, r.kl_data_gen), rel=1e-9)
    for _, g in table.groupby(["steps", "sampler", "loss"]):
        opt = g[g.schedule.str.startswith("optimized")]
        assert len(opt) == 1
        assert opt.value.iloc[0] <= g[~g.schedule.str.startswith("optimized")].value.min()
        assert np.allclose(g.optimized_value, opt.value.iloc[0])
    assert len(list((out / "schedules").glob("*.json"))) == 8
    assert (out / "sweep.png").stat().st_size > 10_000


def test_sweep_resumes_without_redoing_cells(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main([*ARGS, "--out", str(out)]) == 0
    before = read(out)
    cells = sorted((out / "cells").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    cells[0].unlink()
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out)]) == 0
    assert "7 already done, 1 to run" in capsys.readouterr().out
    for p in sorted((out / "cells").glob("*.json"))[1:]:
        assert p.stat().st_mtime_ns == stamps[p.name]
    pd.testing.assert_frame_equal(read(out), before)


def test_sweep_refuses_a_folder_of_another_configuration(tmp_path, capsys):
    out = tmp_path / "sw"
    small = ["sweep", "--spectrum", "cifar10", "--steps", "3", "--samplers", "ddim",
             "--losses", "w2", "--jobs", "1", "--out", str(out)]
    assert main(small) == 0
    code = main([*small, "--init", "marginal"])
    assert code == 2 and "another spectrum or options" in capsys.readouterr().err


def test_sweep_survives_kill_9(tmp_path):
    # Small cells first, then two slow ones (d = 20000, S = 300, 400): kill -9 lands between.
    spec = tmp_path / "eigs.npy"
    np.save(spec, np.sort(np.random.default_rng(0).pareto(1.5, 20_000) * 1e-2)[::-1])
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "specsched.cli", "sweep", "--spectrum", str(spec),
           "--steps", "2", "3", "4", "300", "400", "--samplers", "ddim", "--losses", "w2",
           "--jobs", "1", "--out", str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").glob("S*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("S*.json")}
    assert 3 <= len(finished) < 5, "kill the sweep mid-run"
    for p in (out / "cells").glob("S*.json"):
        json.loads(p.read_text())  # every cell file on disk is complete
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} already done" in res.stdout
    for name, stamp in finished.items():
        assert (out / "cells" / name).stat().st_mtime_ns == stamp
    assert len(read(out).query("schedule == 'optimized-w2'")) == 5
    assert not list(out.rglob(".*.tmp"))


def test_sweep_starts_option_keeps_finished_cells(tmp_path, capsys):
    out = tmp_path / "sw"
    small = ["sweep", "--spectrum", "cifar10", "--steps", "3", "5", "--samplers", "ddim",
             "--losses", "w2", "--jobs", "1", "--out", str(out)]
    assert main([*small[:5], *small[6:]]) == 0  # only S = 3
    capsys.readouterr()
    assert main([*small, "--starts", "karras"]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out
    cell = json.loads((out / "cells" / "S0005_ddim_w2.json").read_text())
    assert set(cell["optimizer"]["starts"]) <= {"warm", "karras"}


# ---- what --force deletes, and what a sweep reads back --------------------------------------

SMALL = ["sweep", "--spectrum", "cifar10", "--steps", "3", "--samplers", "ddim", "--losses",
         "w2", "--jobs", "1"]


def test_sweep_force_deletes_only_what_a_sweep_wrote(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main([*SMALL, "--out", str(out)]) == 0
    mine = {out / "cells" / "notes.json": '{"format": "mine"}',
            out / "schedules" / "favourite.json": '{"alphas_cumprod": [0.5]}',
            out / "cells" / "S0003_ddim_w2.json.bak": "backup",
            out / "cells" / "S0009_ddim_w2.json": '{"format": "not a cell"}',
            out / ".notes.txt.tmp": "an editor's",
            out / "README.md": "my sweep"}
    for path, text in mine.items():
        path.write_text(text)
    capsys.readouterr()
    assert main([*SMALL, "--init", "marginal", "--force", "--out", str(out)]) == 0
    assert "0 already done, 1 to run" in capsys.readouterr().out  # the old cell was deleted
    for path, text in mine.items():
        assert path.read_text() == text, path


def test_a_new_sweep_never_overwrites_a_users_files(tmp_path, capsys):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.csv").write_text("my own table")
    code = main([*SMALL, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "sweep.csv: output file exists already" in err and "--force" in err
    assert (out / "sweep.csv").read_text() == "my own table"


def _deep(n=100_000):
    return "[" * n + "]" * n


@pytest.mark.parametrize("content", [_deep().encode(), b"[1, 2]", b'"a cell"', b"{}",
                                     b"\xff\xfe", b"NaN",
                                     b'{"format": "specsched.sweep-cell", "steps": 3}'])
def test_unreadable_or_malformed_cells_are_redone(tmp_path, capsys, content):
    out = tmp_path / "sw"
    assert main([*SMALL, "--out", str(out)]) == 0
    good = json.loads((out / "cells" / "S0003_ddim_w2.json").read_text())
    (out / "cells" / "S0003_ddim_w2.json").write_bytes(content)
    capsys.readouterr()
    assert main([*SMALL, "--out", str(out)]) == 0
    assert "0 already done, 1 to run" in capsys.readouterr().out
    redone = json.loads((out / "cells" / "S0003_ddim_w2.json").read_text())
    assert redone["optimized"]["value"] == pytest.approx(good["optimized"]["value"], rel=1e-9)


def test_a_cell_of_another_cell_is_redone(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main([*SMALL[:4], "3", "5", *SMALL[5:], "--out", str(out)]) == 0
    cells = out / "cells"
    (cells / "S0003_ddim_w2.json").write_text((cells / "S0005_ddim_w2.json").read_text())
    capsys.readouterr()
    assert main([*SMALL[:4], "3", "5", *SMALL[5:], "--out", str(out)]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out


@pytest.mark.parametrize("text", [_deep(), '{"format": "specsched.sw', "\xff"])
def test_an_unreadable_manifest_is_one_line(tmp_path, capsys, text):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.json").write_bytes(text.encode("latin-1"))
    code = main([*SMALL, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "sweep.json" in err and "--force" in err


# ---- --jobs: capped at the chains and the cores -----------------------------------------------

def test_jobs_are_capped_at_the_chains_and_the_cores(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    argv = ["sweep", "--spectrum", "cifar10", "--steps", "3", "--samplers", "ddim", "ddpm",
            "--losses", "w2", "--jobs", str(10**9), "--out", str(tmp_path / "sw")]
    assert main(argv) == 0
    expected = min(2, cores)
    assert (f"2 chain(s) on {expected} process(es) (--jobs {10**9}, {cores} core(s))"
            in capsys.readouterr().out)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_jobs_follow_the_cpu_affinity(tmp_path):
    # as under `taskset -c 0` or a container limited to one core
    cmd = [sys.executable, "-m", "specsched.cli", "sweep", "--spectrum", "cifar10", "--steps",
           "3", "--samplers", "ddim", "ddpm", "--losses", "w2", "--jobs", "8", "--out",
           str(tmp_path / "sw")]
    one_core = sorted(os.sched_getaffinity(0))[:1]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, one_core),
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert "2 chain(s) on 1 process(es) (--jobs 8, 1 core(s))" in proc.stdout
