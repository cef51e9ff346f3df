"""The command line as a user runs it: outputs, exit codes and messages on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import io as skio

from specsched.cli import main
from specsched.schedules import Schedule


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_json_reference_value(capsys):
    code, out, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", "linear",
                        "--spacing", "linspace", "--steps", "10", "--sampler", "ddim",
                        "--json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["w2"] == pytest.approx(5.5886, abs=1e-4)
    assert {"w2", "kl", "steps", "sampler", "schedule"} <= record.keys()
    assert record["steps"] == 10 and record["sampler"] == "ddim"


def test_evaluate_ddpm_reference_value(capsys):
    code, out, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", "linear",
                        "--steps", "10", "--sampler", "ddpm", "--json"], capsys)
    assert code == 0 and json.loads(out)["w2"] == pytest.approx(8.0117, abs=1e-4)


def test_optimize_default_data_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run(["optimize", "--steps", "5", "10", "--out", str(out_dir)], capsys)
    assert code == 0
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["schedule_ddim_w2_S10.json", "schedule_ddim_w2_S5.json",
                     "schedules.png", "summary.csv"]
    assert "optimized-w2" in out and "natural-patches" in out
    for name in ("karras", "exponential", "kl_optimal", "logsnr", "cosine/linspace"):
        assert f"\n{name} " in out  # a row of the printed summary
    import pandas as pd

    table = pd.read_csv(out_dir / "summary.csv")
    for S in (5, 10):
        rows = table[table.steps == S]
        opt = rows[rows.optimized]
        assert opt.w2.iloc[0] < rows[~rows.optimized].w2.min()
        sched = Schedule.load(out_dir / f"schedule_ddim_w2_S{S}.json")
        assert sched.steps == S and sched.loss_value == pytest.approx(opt.w2.iloc[0])
        assert sched.spectrum["source"] == "natural-patches"
    # the file evaluates to the loss it records
    code, out, _ = run(["evaluate", "--spectrum", "natural-patches", "--schedule",
                        str(out_dir / "schedule_ddim_w2_S10.json"), "--json"], capsys)
    assert json.loads(out)["w2"] == pytest.approx(sched.loss_value, rel=1e-12)
    # each baseline row is what evaluate says of that baseline
    for name in ("exponential", "kl_optimal"):
        code, out, _ = run(["evaluate", "--spectrum", "natural-patches", "--schedule", name,
                            "--steps", "10", "--json"], capsys)
        row = table[(table.steps == 10) & (table.schedule == name)]
        assert code == 0 and json.loads(out)["w2"] == pytest.approx(row.w2.iloc[0], rel=1e-9)
    # never overwritten without --force; nothing already written is touched
    before = (out_dir / "summary.csv").read_bytes()
    code, _, err = run(["optimize", "--steps", "5", "--out", str(out_dir)], capsys)
    assert code == 2 and "exists" in err and "--force" in err
    assert (out_dir / "summary.csv").read_bytes() == before
    code, _, _ = run(["optimize", "--steps", "5", "--out", str(out_dir), "--force"], capsys)
    assert code == 0
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]


def test_optimize_spectrum_file_and_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        skio.imsave(folder / f"{i:03d}.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8),
                    check_contrast=False)
    code, _, err = run(["spectrum", str(folder), "--out", str(tmp_path / "s.npz")], capsys)
    assert code == 0, err
    code, out, err = run(["optimize", "--spectrum", str(tmp_path / "s.npz"), "--steps", "4",
                          "--sampler", "ddpm", "--loss", "kl", "--out", str(tmp_path / "o")],
                         capsys)
    assert code == 0, err
    sched = Schedule.load(tmp_path / "o" / "schedule_ddpm_kl_S4.json")
    assert sched.sampler == "ddpm" and sched.eta == 1.0 and sched.loss == "kl"
    assert sched.spectrum["dimension"] == 6 * 6 * 3 and sched.spectrum["n_samples"] == 40


def test_non_convergence_exits_3(tmp_path, capsys):
    code, _, err = run(["optimize", "--spectrum", "cifar10", "--steps", "20", "--maxiter", "2",
                        "--out", str(tmp_path)], capsys)
    assert code == 3 and "did not converge" in err
    assert Schedule.load(tmp_path / "schedule_ddim_w2_S20.json").optimizer["success"] is False


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def bad_inputs(tmp_path):
    good = {"format": "specsched.schedule", "version": 1, "alphas_cumprod": [0.9, 0.5, 0.1]}
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    nan = np.random.default_rng(0).normal(size=(10, 4))
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    inf = np.ones((10, 4))
    inf[2, 2] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    skio.imsave(mixed / "a.png", np.zeros((8, 8, 3), np.uint8), check_contrast=False)
    skio.imsave(mixed / "b.png", np.zeros((9, 8, 3), np.uint8), check_contrast=False)
    return {
        "missing": str(tmp_path / "nope.npy"),
        "empty": str(tmp_path / "empty.npy"),
        "nan": str(tmp_path / "nan.npy"),
        "inf": str(tmp_path / "inf.npy"),
        "mixed": str(mixed),
        "nonmonotone": _write(tmp_path / "nm.json",
                              json.dumps({**good, "alphas_cumprod": [0.9, 0.95, 0.1]})),
        "range": _write(tmp_path / "r.json",
                        json.dumps({**good, "alphas_cumprod": [1.5, 0.5, 0.1]})),
        "truncated": _write(tmp_path / "t.json", json.dumps(good)[:30]),
    }


@pytest.mark.parametrize(
    "case, argv, needle",
    [
        ("missing", ["spectrum", "{missing}", "--out", "{tmp}/s.npz"], "nope.npy"),
        ("empty", ["spectrum", "{empty}", "--out", "{tmp}/s.npz"], "empty.npy"),
        ("nan", ["optimize", "--data", "{nan}", "--out", "{tmp}/o"], "nan.npy"),
        ("inf", ["optimize", "--data", "{inf}", "--out", "{tmp}/o"], "inf.npy"),
        ("mixed", ["spectrum", "{mixed}", "--out", "{tmp}/s.npz"], "b.png"),
        ("nonmonotone", ["evaluate", "--spectrum", "cifar10", "--schedule", "{nonmonotone}"],
         "alphas_cumprod"),
        ("range", ["evaluate", "--spectrum", "cifar10", "--schedule", "{range}"],
         "alphas_cumprod"),
        ("truncated", ["evaluate", "--spectrum", "cifar10", "--schedule", "{truncated}"],
         "t.json"),
        ("unknown", ["evaluate", "--spectrum", "no-such-data", "--schedule", "linear",
                     "--steps", "3"], "natural-patches"),
        ("nosteps", ["evaluate", "--spectrum", "cifar10", "--schedule", "linear"], "--steps"),
    ],
)
def test_bad_input_names_the_problem(bad_inputs, tmp_path, capsys, case, argv, needle):
    argv = [a.format(tmp=tmp_path, **bad_inputs) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("steps", ["0", "-3", "x"])
def test_steps_below_one_rejected_by_the_parser(steps, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--spectrum", "cifar10", "--schedule", "linear", "--steps", steps])
    assert exc.value.code == 2
    assert "--steps" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "specsched.cli", "evaluate", "--spectrum",
         str(tmp_path / "missing.npy"), "--schedule", "linear", "--steps", "3"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 2
    assert "missing.npy" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sampler", ["ddpm-large", "ddim-ve", "ddpm-ve"])
def test_evaluate_every_discrete_sampler(sampler, capsys):
    from specsched.theory import evaluate_schedule

    code, out, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", "cosine",
                        "--steps", "12", "--sampler", sampler, "--init", "marginal", "--json"],
                       capsys)
    assert code == 0
    rec = json.loads(out)
    from specsched.schedules import baseline_alphas_cumprod
    from specsched.spectrum import load_spectrum

    r = evaluate_schedule(load_spectrum("cifar10").eigenvalues, None,
                          baseline_alphas_cumprod("cosine", 12), sampler=sampler, init="marginal")
    assert (rec["w2"], rec["kl"], rec["kl_data_gen"]) == (r.w2, r.kl, r.kl_data_gen)
    assert rec["sampler"] == sampler and rec["eta"] is None


def test_evaluate_continuous_time_solver_trajectory(capsys):
    code, out, _ = run(["evaluate", "--spectrum", "cifar10", "--sampler", "pg-heun",
                        "--steps", "50", "--t-eps", "1e-3", "--beta-max", "8", "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    traj = rec["trajectory"]
    assert len(traj["t"]) == len(traj["w2"]) == 51
    assert traj["t"][0] == 1.0 and traj["t"][-1] == pytest.approx(1e-3)
    assert rec["beta_max"] == 8.0 and rec["t_eps"] == 1e-3 and rec["steps"] == 50


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--sampler", "pg-heun", "--steps", "10", "--schedule", "linear"], "takes no schedule"),
        (["--sampler", "pg-euler"], "--steps"),
        (["--sampler", "pg-ddpm", "--steps", "5"], "2 dt beta"),
        (["--sampler", "pg-em", "--steps", "5", "--t-eps", "2"], "t-eps"),
        (["--sampler", "ddpm-large", "--eta", "0.5", "--schedule", "linear", "--steps", "5"],
         "no eta"),
        (["--sampler", "ddpm-large", "--param", "ve", "--schedule", "linear", "--steps", "5"],
         "--param"),
        (["--sampler", "ddim", "--steps", "5"], "--schedule"),
    ],
)
def test_evaluate_sampler_errors(argv, needle, capsys):
    code, _, err = run(["evaluate", "--spectrum", "cifar10", *argv], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("old, new", [("em", "pg-em"), ("ei", "pg-ei")])
def test_evaluate_former_solver_name_is_refused_with_the_new_one(old, new, capsys):
    # The Pierret & Galerne solvers were euler, heun, em, ei; em and ei are no one else's
    # names, so asking for them runs nothing and says, on one line, what they are called now.
    with pytest.raises(SystemExit) as exc:  # the parser's refusal, before anything runs
        main(["evaluate", "--spectrum", "cifar10", "--sampler", old, "--steps", "5"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err.count("\n") == 1
    assert f"--sampler: the continuous-time solver {old!r} is now called {new!r}" in err


@pytest.mark.parametrize("name, same_as", [("euler", "ddim-ve"), ("heun", None)])
def test_evaluate_never_runs_a_pg_solver_under_its_former_name(name, same_as, capsys):
    # euler and heun are k-diffusion's samplers on a schedule, never pg-euler / pg-heun (which
    # refuse a schedule): run on a baseline, euler is ddim-ve; heun is not euler
    def w2(sampler):
        code, out, err = run(["evaluate", "--spectrum", "cifar10", "--sampler", sampler,
                              "--schedule", "linear", "--steps", "5", "--json"], capsys)
        assert code == 0, err
        return json.loads(out)["w2"]

    value = w2(name)
    assert json.loads(run(["evaluate", "--spectrum", "cifar10", "--sampler", name, "--steps",
                           "5", "--json", "--schedule", "linear"], capsys)[1])["sampler"] == name
    if same_as is not None:
        assert value == pytest.approx(w2(same_as), rel=1e-12)
    else:
        assert value != pytest.approx(w2("euler"), rel=1e-3)


def test_optimize_ve_via_param(tmp_path, capsys):
    code, _, err = run(["optimize", "--spectrum", "cifar10", "--steps", "4", "--sampler",
                        "ddim", "--param", "ve", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    sched = Schedule.load(tmp_path / "schedule_ddim-ve_w2_S4.json")
    assert sched.sampler == "ddim-ve" and sched.param == "ve"


def test_optimize_sigma_range_bounds_puts_the_sigma_baselines_on_the_bounds(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, _, _ = run(["optimize", "--spectrum", "cifar10", "--steps", "6", "--ab-min", "1e-4",
                      "--ab-max", "0.9999", "--sigma-range", "bounds", "--out", str(out_dir)],
                     capsys)
    assert code == 0
    import pandas as pd

    table = pd.read_csv(out_dir / "summary.csv").set_index("schedule")
    smin, smax = (0.0001 / 0.9999) ** 0.5, (0.9999 / 0.0001) ** 0.5
    for name in ("karras", "exponential", "kl_optimal"):
        code, out, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", name, "--steps",
                            "6", "--sigma-range", f"{smin!r},{smax!r}", "--json"], capsys)
        record = json.loads(out)
        assert record["w2"] == pytest.approx(table.loc[name, "w2"], rel=1e-9)
        assert record["sigma_range"] == [smin, smax]
