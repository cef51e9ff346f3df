"""Bad inputs and faults not covered elsewhere; each row of docs/reliability.md cites a test.

The CLI runs in-process (``specsched.cli.main``); every refusal must exit 2 with one line on
stderr naming the file, field or argument, no traceback, and nothing written.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import refused, run
from skimage import io as skio

from specsched.cli import main
from specsched.errors import InputError
from specsched.fileio import atomic_write
from specsched.optimize import optimize_schedule
from specsched.schedules import Schedule
from specsched.spectrum import Spectrum, load_spectrum

ROOT = Path(__file__).resolve().parents[1]


GOOD = {"format": "specsched.schedule", "version": 1, "alphas_cumprod": [0.9, 0.5, 0.1]}


# ---- data files ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, array, needle",
    [
        ("single.npy", np.ones((1, 4)), "at least 2 samples"),
        ("complex.npy", np.ones((5, 4)) + 1j, "complex128"),
        ("scalar.npy", np.array(3.0), "scalar"),
        ("strings.npy", np.full((3, 2), "a"), "<U1"),
    ],
)
def test_bad_sample_arrays(tmp_path, capsys, name, array, needle):
    np.save(tmp_path / name, array)
    code, _, err = run(["optimize", "--data", tmp_path / name, "--out", tmp_path / "o"], capsys)
    assert refused(code, err, name, needle) and not (tmp_path / "o").exists()


def test_one_d_array_as_data_is_refused(tmp_path, capsys):
    np.save(tmp_path / "eigs.npy", np.ones(5))
    code, _, err = run(["spectrum", tmp_path / "eigs.npy", "--out", tmp_path / "s.npz"], capsys)
    refused(code, err, "eigs.npy", "--spectrum")


@pytest.mark.parametrize(
    "name, write, needle",
    [
        ("trunc.npy", lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'"),
         "not a readable .npy file"),
        ("garbage.npz", lambda p: p.write_bytes(b"hello"), "not a readable .npz file"),
        ("pickled.npy", lambda p: np.save(p, np.array([1, None], dtype=object)),
         "not a readable .npy file"),
        ("several.npz", lambda p: np.savez(p, a=np.ones(3), b=np.ones(3)), "several arrays"),
        ("notes.txt", lambda p: p.write_text("hi"), "expected a .npy or .npz file"),
    ],
)
def test_unreadable_data_files(tmp_path, capsys, name, write, needle):
    write(tmp_path / name)
    code, _, err = run(["spectrum", tmp_path / name, "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, name, needle) and not (tmp_path / "s.npz").exists()


def test_constant_data_has_no_variance(tmp_path, capsys):
    np.save(tmp_path / "const.npy", np.ones((10, 4)))
    code, _, err = run(["spectrum", tmp_path / "const.npy", "--out", tmp_path / "s.npz"], capsys)
    refused(code, err, "const.npy: eigenvalues", "no variance")


def test_corrupt_image_is_one_line_naming_it(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    skio.imsave(folder / "a.png", np.zeros((8, 8, 3), np.uint8), check_contrast=False)
    (folder / "b.png").write_bytes(b"\x89PNG not really")
    code, _, err = run(["spectrum", folder, "--out", tmp_path / "s.npz"], capsys)
    refused(code, err, "b.png", "cannot read the image")
    assert len(err.strip().splitlines()) == 1  # imageio's multi-line install hints dropped


def test_float32_samples_are_handled_in_float64(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    np.save(tmp_path / "f32.npy", x)
    s = load_spectrum(tmp_path / "f32.npy")
    assert s.eigenvalues.dtype == np.float64
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)))[::-1]
    np.testing.assert_allclose(s.eigenvalues, ref, rtol=1e-12)


# ---- spectra ---------------------------------------------------------------------------------

def test_tiny_negative_eigenvalues_clipped_and_reported_on_one_line(tmp_path, capsys):
    np.save(tmp_path / "eigs.npy", np.array([1.0, 0.5, -1e-9]))
    code, out, err = run(["evaluate", "--spectrum", tmp_path / "eigs.npy", "--schedule",
                          "linear", "--steps", "3", "--json"], capsys)
    assert code == 0
    assert err.strip() == ("specsched evaluate: warning: eigenvalues: 1 slightly negative "
                           "eigenvalues (round-off, >= -1e-06 x largest) set to 0")
    assert np.isfinite(json.loads(out)["w2"])


@pytest.mark.parametrize(
    "values, needle",
    [([1.0, -0.5], "negative eigenvalues"), ([0.0, 0.0, 0.0], "all 3 eigenvalues are zero"),
     ([1.0 + 1j, 0.5], "real numbers"), ([1.0, np.inf], "non-finite")],
)
def test_bad_eigenvalue_files(tmp_path, capsys, values, needle):
    np.save(tmp_path / "eigs.npy", np.asarray(values))
    code, _, err = run(["optimize", "--spectrum", tmp_path / "eigs.npy", "--out",
                        tmp_path / "o"], capsys)
    assert refused(code, err, "eigs.npy: eigenvalues", needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda f: f.update(version=np.array(2)), "field version: spectrum file version 2"),
        (lambda f: f.pop("mean"), "lacks the fields mean"),
        (lambda f: f.update(eigenvalues=np.ones((2, 2))), "field eigenvalues: expected a 1-D"),
    ],
)
def test_bad_spectrum_files(tmp_path, capsys, edit, needle):
    Spectrum.from_eigenvalues([2.0, 1.0]).save(tmp_path / "good.npz")
    fields = dict(np.load(tmp_path / "good.npz"))
    edit(fields)
    np.savez(tmp_path / "bad.npz", **fields)
    code, _, err = run(["evaluate", "--spectrum", tmp_path / "bad.npz", "--schedule", "linear",
                        "--steps", "3"], capsys)
    refused(code, err, "bad.npz", needle)


def test_eigenvalues_spanning_1e_minus_12_to_1e6(tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.logspace(6, -12, 64))
    code, _, err = run(["optimize", "--spectrum", tmp_path / "wide.npy", "--steps", "1", "8",
                        "--loss", "kl", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    for S in (1, 8):
        sched = Schedule.load(tmp_path / "o" / f"schedule_ddim_kl_S{S}.json")
        assert sched.optimizer["success"] and np.isfinite(sched.loss_value)
        assert sched.loss_value <= min(v["kl"] for v in sched.baselines.values())


# ---- steps and bounds ------------------------------------------------------------------------

def test_single_step_schedule(tmp_path, capsys):
    code, _, err = run(["optimize", "--spectrum", "cifar10", "--steps", "1", "--out",
                        tmp_path], capsys)
    assert code == 0, err
    sched = Schedule.load(tmp_path / "schedule_ddim_w2_S1.json")
    assert sched.steps == 1 and 0 < sched.alphas_cumprod[0] < 1


@pytest.mark.parametrize("command", ["optimize", "evaluate"])
def test_more_steps_than_the_training_grid(tmp_path, capsys, command):
    argv = (["optimize", "--spectrum", "cifar10", "--out", tmp_path / "o"] if command ==
            "optimize" else ["evaluate", "--spectrum", "cifar10", "--schedule", "linear"])
    code, _, err = run([*argv, "--steps", "1001"], capsys)
    refused(code, err, "--steps", "T = 1000")
    assert f"specsched {command}: error: --steps: 1001 sampling steps" in err  # the flag alone


#: Library parameter names that a command-line message must not show (the user typed flags).
PARAM_WORDS = re.compile(r"(?<![-\w])(ab_min|ab_max|delta|maxiter|num_steps)(?![-\w])|bounds:")


@pytest.mark.parametrize("command", ["optimize", "sweep"])
@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--ab-min", "0.5", "--ab-max", "0.4"],
         "--ab-max: expected a level above the lower bound (0.5), got 0.4"),
        (["--ab-max", "inf"], "argument --ab-max: expected a number in the open interval (0, 1)"),
        (["--ab-min", "2"], "argument --ab-min: expected a number in the open interval (0, 1)"),
        (["--ab-min", "nan"], "argument --ab-min: expected a number in the open interval"),
        (["--ab-min", "0"], "argument --ab-min: expected a number in the open interval"),
        (["--delta", "0.5"], "--delta: 5 steps with a margin of 0.5 do not fit"),
        (["--delta", "nan"], "argument --delta: expected a finite number >= 0"),
        (["--delta", "-1"], "argument --delta: expected a finite number >= 0, got -1"),
        (["--delta", "inf"], "argument --delta: expected a finite number >= 0"),
        (["--maxiter", str(10**100)], "argument --maxiter: expected an integer in [1, 1000000]"),
        (["--maxiter", "1e3"], "argument --maxiter: expected an integer in [1, 1000000]"),
        (["--ab-min", "0.5", "--ab-max", "0.5000001", "--delta", "0"],
         "--delta: with a margin of 0 the optimum within the bounds [0.5, 0.5000001] merges "
         "steps"),
    ],
)
def test_out_of_range_bounds_name_the_flags(tmp_path, capsys, command, flags, needle):
    argv = {"optimize": ["optimize"], "sweep": ["sweep", "--samplers", "ddim", "--losses",
                                                 "w2", "--jobs", "1"]}[command]
    code, _, err = run([*argv, "--spectrum", "cifar10", "--steps", "5", *flags, "--out",
                        tmp_path / "o"], capsys)
    assert refused(code, err, needle)
    assert len(err.strip().splitlines()) == 1, err
    assert not PARAM_WORDS.search(err.split("error: ", 1)[1]), err  # flags, not parameters
    if command == "optimize" or "merges" not in needle:  # refused before any file is written
        assert not (tmp_path / "o").exists()


def test_optimizer_never_returns_merged_levels_as_success():
    lam = load_spectrum("cifar10").eigenvalues
    with pytest.raises(InputError, match="delta"):
        optimize_schedule(lam, None, 3, ab_min=0.5, ab_max=0.5000001, delta=0.0)


def test_overflowing_closed_form_is_refused_not_printed_as_nan(tmp_path, capsys):
    np.save(tmp_path / "eigs.npy", np.logspace(6, -12, 20))
    code, out, err = run(["evaluate", "--spectrum", tmp_path / "eigs.npy", "--sampler", "pg-ei",
                          "--steps", "3", "--beta-max", "1e4", "--json"], capsys)
    assert refused(code, err, "--beta-min/--beta-max", "not finite") and out == ""


# ---- schedule files --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: d.update(version=2), "s.json: version: schedule file version 2"),
        (lambda d: d.update(format="diffusers"), 's.json: format: expected "specsched.schedule"'),
        (lambda d: d.update(steps=4), "steps: 4 does not match"),
        (lambda d: d.update(sigmas=[1.0, 2.0, 3.0]), "sigmas[0]: 1.0 disagrees"),
    ],
)
def test_bad_schedule_files_on_the_cli(tmp_path, capsys, edit, needle):
    d = dict(GOOD)
    edit(d)
    (tmp_path / "s.json").write_text(json.dumps(d))
    code, _, err = run(["export", tmp_path / "s.json", "--to", "ab", "--out",
                        tmp_path / "ab.npy"], capsys)
    assert refused(code, err, "s.json", needle) and not (tmp_path / "ab.npy").exists()


def test_nan_literal_in_schedule_file(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps(GOOD).replace("0.5", "NaN"))
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", tmp_path / "s.json"],
                       capsys)
    refused(code, err, "s.json", "NaN is not a finite number")


# ---- command-line arguments ------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, needle",
    [
        (["spectrum", "digits", "--out", "{t}/s.npz", "--chunk-size", "0"], "--chunk-size"),
        (["spectrum", "digits", "--out", "{t}/s.npz", "--crop", "-1"], "--crop"),
        (["spectrum", "digits", "--out", "{t}/s.npz", "--method", "pca", "--rank", "0"],
         "--rank"),
        (["analyze", "cifar10", "--out", "{t}/a", "--bands", "0"], "--bands"),
        (["analyze", "cifar10", "--out", "{t}/a", "--tau", "-1"], "--tau"),
        (["sweep", "--spectrum", "cifar10", "--out", "{t}/sw", "--maxiter", "0"], "--maxiter"),
        (["sweep", "--spectrum", "cifar10", "--out", "{t}/sw", "--steps", "3", "--jobs", "0"],
         "--jobs"),
        (["sample", "--schedule", "x.json", "--spectrum", "cifar10", "--n", "0", "--out",
          "{t}/x.npy"], "--n"),
    ],
)
def test_out_of_range_arguments(tmp_path, capsys, argv, needle):
    code, _, err = run([a.format(t=tmp_path) for a in argv], capsys)
    refused(code, err, needle)
    assert list(tmp_path.iterdir()) == []


def test_analyze_truncated_npy(tmp_path, capsys):
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'")
    code, _, err = run(["analyze", tmp_path / "t.npy", "--out", tmp_path / "a"], capsys)
    refused(code, err, "t.npy", "not a readable .npy file")


# ---- outputs: atomic, never clobbered, interruption ------------------------------------------

def test_output_path_that_is_a_folder_even_with_force(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, _, err = run(["spectrum", "digits", "--out", tmp_path / "taken", "--force"], capsys)
    refused(code, err, "taken: is a folder")


def test_unwritable_output_location(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "ab.npy"  # a file stands where a folder must be
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    code, _, err = run(["export", tmp_path / "s.json", "--to", "ab", "--out", out], capsys)
    refused(code, err, "ab.npy", "cannot write the output file there")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(FileExistsError, match="--force"):
        with atomic_write(target) as fh:
            fh.write("new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_ctrl_c_exits_130_and_keeps_finished_files(tmp_path, capsys, monkeypatch):
    import specsched.optimize as opt

    real, calls = opt.optimize_schedule, []

    def interrupted_second_time(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(opt, "optimize_schedule", interrupted_second_time)
    code, _, err = run(["optimize", "--spectrum", "cifar10", "--steps", "3", "4", "--out",
                        tmp_path], capsys)
    assert code == 130 and "interrupted (SIGINT); finished files are kept" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule_ddim_w2_S3.json"]
    Schedule.load(tmp_path / "schedule_ddim_w2_S3.json")  # complete, valid


def test_unreadable_sweep_manifest(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text('{"format": "specsched.sw')
    code, _, err = run(["sweep", "--spectrum", "cifar10", "--steps", "3", "--samplers", "ddim",
                        "--losses", "w2", "--jobs", "1", "--out", tmp_path], capsys)
    refused(code, err, "sweep.json", "--force")


# ---- the shell: a closed pipe, addresses -----------------------------------------------------

@pytest.mark.parametrize("argv, code", [
    (["evaluate", "--spectrum", "cifar10", "--schedule", "linear", "--steps", "10", "--json"],
     141),
    (["optimize", "--spectrum", "cifar10", "--steps", "3", "--out", "{t}/o"], 141),
    (["--help"], 0), (["optimize", "--help"], 0)])  # argparse ignores write errors of help
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, argv, code):
    # as `specsched ... | head -c1`: the reader is gone before the command writes
    proc = subprocess.Popen([sys.executable, "-m", "specsched.cli",
                             *[a.format(t=tmp_path) for a in argv]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == code and err == ""  # 141 = 128 + SIGPIPE, like `yes | head -1`


@pytest.mark.parametrize("address, needle", [
    ("notanaddress", "expected a scheduler address"),
    ("tcp://host:99999", "port 99999"),
    ("http://host:8786", "unknown protocol 'http'"),
    ("tcp://:8786", "expected a scheduler address"),
    ("tcp://host", "expected a scheduler address"),
])
def test_malformed_dask_addresses_are_refused_before_connecting(tmp_path, capsys, address,
                                                                needle):
    code, _, err = run(["spectrum", "digits", "--out", tmp_path / "s.npz", "--dask", address],
                       capsys)
    assert refused(code, err, "argument --dask", needle)
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["--eta", "nan"], "argument --eta: expected a finite number >= 0"),
    (["--eta", "1.5"], "--eta: expected a number in [0, 1], got 1.5"),  # ddim: DDIM-eta
    (["--n", str(10**15)], "--n: 1000000000000000 samples of shape (3072,) take"),
    (["--n", str(10**6), "--batch-size", str(10**12)], "--batch-size: batches of 1000000"),
])
def test_sample_sizes_and_numbers_are_checked_first(tmp_path, capsys, argv, needle):
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    code, _, err = run(["sample", "--schedule", tmp_path / "s.json", "--spectrum", "cifar10",
                        "--n", "4", "--out", tmp_path / "x.npy", *argv], capsys)
    assert refused(code, err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_messages_show_no_internal_values(capsys):
    code, _, err = run(["evaluate", "--spectrum", "cifar10"], capsys)
    assert refused(code, err, "--schedule: required with the discrete sampler 'ddim'")
    assert "None" not in err


def test_help_lists_every_built_in_name_the_loaders_take(capsys):
    from specsched.data import BUILTIN_DATASETS
    from specsched.data.sources import SYSTEM_DATASETS

    for command in ("optimize", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in (*BUILTIN_DATASETS, *SYSTEM_DATASETS):
            assert name in text, (command, name)


def test_steps_beyond_the_training_grid_name_the_steps_typed(tmp_path, capsys):
    # the optimiser's coarse-to-fine pass used to report S/10 steps (10000 for 100000)
    code, _, err = run(["analyze", "cifar10", "--out", tmp_path / "a", "--steps", "100000"],
                       capsys)
    assert refused(code, err, "--steps: 100000 sampling steps do not fit")


# ---- documentation ---------------------------------------------------------------------------

def test_cli_reference_is_generated():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == gen.render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_reliability_table_cites_existing_tests():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines()
            if line.startswith("| ") and "tests/test_" in line]
    assert len(rows) >= 30
    for row in rows:
        for cite in [c for c in row.split("`") if c.startswith("tests/test_")]:
            path, _, name = cite.partition("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            assert f"def {name.split('[')[0]}(" in source, cite
