"""``--noise-spectrum`` on optimize, evaluate, sweep, export and analyze (docs/theory.md
section 9): refusals of bad input before anything is written, the closed form under coloured
noise against independent computations, white noise as it always was."""

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import refused, run

from specsched.schedules import Schedule, baseline_alphas_cumprod, training_alphas_cumprod
from specsched.spectrum import Spectrum, load_spectrum
from specsched.theory import evaluate_schedule
from specsched.theory.noise import noise_spectrum

EVAL = ["evaluate", "--spectrum", "cifar10", "--schedule", "cosine", "--steps", "4", "--json"]


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
    """A spectrum file: 40 eigenvalues well above the KL floor and a nonzero mean."""
    rng = np.random.default_rng(0)
    lam = np.geomspace(8.0, 0.02, 40)
    mean = rng.normal(size=40)
    path = tmp_path_factory.mktemp("spec") / "spec.npz"
    Spectrum(eigenvalues=lam, mean=mean, source="test").save(path)
    spec = load_spectrum(path)
    return path, spec.eigenvalues, spec.mean


def _npy(tmp_path, name, values):
    path = tmp_path / name
    np.save(path, np.asarray(values))
    return path


def _bad_specs(tmp_path, d):
    """``(spec, *what the message says)`` for every kind of bad ``--noise-spectrum``."""
    good = np.ones(d)
    negative, nan, inf, zero = good.copy(), good.copy(), good.copy(), good.copy()
    negative[3], nan[5], inf[0], zero[-1] = -0.5, np.nan, np.inf, 0.0
    return [
        (_npy(tmp_path, "neg.npy", negative), "finite and > 0; entry 3 is", "-0.5"),
        (_npy(tmp_path, "nan.npy", nan), "finite and > 0; entry 5 is", "nan"),
        (_npy(tmp_path, "inf.npy", inf), "finite and > 0; entry 0 is", "inf"),
        (_npy(tmp_path, "zero.npy", zero), f"finite and > 0; entry {d - 1} is", "0.0"),
        (_npy(tmp_path, "short.npy", good[:-1]), f"expected {d} noise variances"),
        (_npy(tmp_path, "matrix.npy", np.ones((2, d))), f"expected {d} noise variances"),
        (tmp_path / "absent.npy", "no such noise-spectrum file"),
        ("power:2.5", "GAMMA must be a number in [0, 2]"),
        ("power:-1", "GAMMA must be a number in [0, 2]"),
        ("power:nan", "GAMMA must be a number in [0, 2]"),
        ("power:abc", "GAMMA must be a number in [0, 2]"),
        ("power:", "GAMMA must be a number in [0, 2]"),
        ("fans:3", "GAMMA must be a number in [0, 2]"),
        ("pink", "expected one of white, equal-snr, power:GAMMA"),
    ]


def test_bad_noise_spectra_are_one_line_and_write_nothing(tmp_path, capsys):
    d = load_spectrum("cifar10").dimension
    commands = {
        "optimize": ["optimize", "--spectrum", "cifar10", "--steps", "3"],
        "sweep": ["sweep", "--spectrum", "cifar10", "--steps", "3", "--samplers", "ddim",
                  "--losses", "w2", "--jobs", "1"],
        "analyze": ["analyze", "cifar10", "--steps", "3"],
    }
    for spec, *needles in _bad_specs(tmp_path, d):
        code, out, err = run([*EVAL, "--noise-spectrum", spec], capsys)
        assert refused(code, err, "specsched evaluate: error: --noise-spectrum: ", *needles)
        assert out == ""
        for name, argv in commands.items():
            dest = tmp_path / f"out-{name}"
            code, _, err = run([*argv, "--out", dest, "--noise-spectrum", spec], capsys)
            assert refused(code, err, f"specsched {name}: error: --noise-spectrum: ", *needles)
            assert not dest.exists() or not any(dest.iterdir()), (name, spec)


def test_fans_with_a_sampler_it_has_no_closed_form_for_is_refused_first(tmp_path, capsys):
    code, out, err = run([*EVAL, "--sampler", "dpmpp-2m", "--noise-spectrum", "fans"], capsys)
    assert refused(code, err, "--sampler: under the noise spectrum fans:1.0",
                   "['ddim', 'ddpm']", "not 'dpmpp-2m'") and out == ""
    for argv in (["optimize", "--sampler", "euler"], ["optimize", "--sampler", "ddpm-large"],
                 ["sweep", "--samplers", "ddim", "euler", "--losses", "w2"]):
        dest = tmp_path / "o"
        code, _, err = run([*argv, "--spectrum", "cifar10", "--steps", "3", "--out", dest,
                            "--noise-spectrum", "fans:0.5"], capsys)
        flag = "--samplers" if argv[0] == "sweep" else "--sampler"  # the flag typed
        assert refused(code, err, f"{flag}: under the noise spectrum fans:0.5")
        assert not dest.exists() or not any(dest.iterdir())
    # the continuous-time and diffusers-as-it-behaves solvers have no coloured closed form
    for argv in (["--sampler", "pg-euler", "--steps", "4"],
                 ["--sampler", "diffusers-ddim", "--steps", "4"],
                 ["--sampler", "diffusers-ddpm-large", "--schedule", "linear", "--steps", "4"]):
        code, out, err = run(["evaluate", "--spectrum", "cifar10", *argv,
                              "--noise-spectrum", "equal-snr"], capsys)
        assert refused(code, err, "--noise-spectrum: equal-snr: the closed form of",
                       "white noise only") and out == ""


def test_white_is_the_default_bit_for_bit(capsys):
    lam = load_spectrum("cifar10").eigenvalues
    ab = baseline_alphas_cumprod("cosine", 4)
    for sampler in ("ddim", "ddpm", "dpmpp-2m", "euler-ancestral"):
        argv = [*EVAL, "--sampler", sampler]
        code, plain, _ = run(argv, capsys)
        code2, white, _ = run([*argv, "--noise-spectrum", "white"], capsys)
        assert code == code2 == 0 and plain == white
        record = json.loads(plain)
        r = evaluate_schedule(lam, None, ab, sampler=sampler)
        assert (record["w2"], record["kl"], record["kl_data_gen"]) == (r.w2, r.kl,
                                                                       r.kl_data_gen)
        assert record["noise_spectrum"] == "white"
        # power:0 is white noise too
        code, zero, _ = run([*argv, "--noise-spectrum", "power:0"], capsys)
        assert json.loads(zero) == record


def _evaluate(spec_path, ab_name, steps, sampler, noise, capsys):
    code, out, err = run(["evaluate", "--spectrum", spec_path, "--schedule", ab_name,
                          "--steps", steps, "--sampler", sampler, "--noise-spectrum", noise,
                          "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler", "dpmpp-2m"])
def test_constant_noise_is_white_noise_of_another_scale(gaussian, tmp_path, sampler, capsys):
    """Noise of variance c0 in every direction: y = x / sqrt(c0) is the white process with
    data variance lam / c0 and mean m / sqrt(c0), so W2 = sqrt(c0) W2_white(lam / c0) and the
    KLs are the white ones of lam / c0."""
    path, lam, m = gaussian
    c0 = 2.7
    record = _evaluate(path, "cosine", 6, sampler,
                       _npy(tmp_path, "c0.npy", np.full(lam.size, c0)), capsys)
    ab = baseline_alphas_cumprod("cosine", 6)
    white = evaluate_schedule(lam / c0, m / np.sqrt(c0), ab, sampler=sampler)
    assert record["w2"] == pytest.approx(np.sqrt(c0) * white.w2, rel=1e-12)
    assert record["kl"] == pytest.approx(white.kl, rel=1e-12)
    assert record["kl_data_gen"] == pytest.approx(white.kl_data_gen, rel=1e-12)
    assert record["noise_spectrum"].startswith("file:sha256:")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "heun"])
def test_a_file_of_variances_weights_the_white_terms(gaussian, tmp_path, sampler, capsys):
    """General c: W2^2 = sum_k c_k w2_k, w2_k the per-direction terms of the white problem
    with eigenvalues lam / c and mean m / sqrt(c); KL is the same in x and y."""
    path, lam, m = gaussian
    c = np.random.default_rng(1).uniform(0.2, 3.0, lam.size)
    record = _evaluate(path, "linear", 8, sampler, _npy(tmp_path, "c.npy", c), capsys)
    ab = baseline_alphas_cumprod("linear", 8)
    white = evaluate_schedule(lam / c, m / np.sqrt(c), ab, sampler=sampler)
    assert record["w2"] == pytest.approx(np.sqrt(np.sum(c * white.w2_terms)), rel=1e-12)
    assert record["kl"] == pytest.approx(white.kl, rel=1e-12)
    assert record["kl_data_gen"] == pytest.approx(white.kl_data_gen, rel=1e-12)


def test_one_ddim_step_by_hand(gaussian, tmp_path, capsys):
    """S = 1 DDIM from x_1 ~ N(0, C) returns the Wiener estimate x0_hat = m + g (x_1 -
    sqrt(ab) m), g = sqrt(ab) lam / (ab lam + (1 - ab) c): variance g^2 c, mean (1 - g
    sqrt(ab)) m; W2 and KL(gen || data) written out in x, no rescaling."""
    path, lam, m = gaussian
    c = np.random.default_rng(2).uniform(0.1, 4.0, lam.size)
    record = _evaluate(path, "cosine", 1, "ddim", _npy(tmp_path, "c.npy", c), capsys)
    (ab,) = baseline_alphas_cumprod("cosine", 1)
    g = np.sqrt(ab) * lam / (ab * lam + (1.0 - ab) * c)
    var, err = g ** 2 * c, -g * np.sqrt(ab) * m
    w2 = np.sqrt(np.sum(err ** 2 + (np.sqrt(var) - np.sqrt(lam)) ** 2))
    kl = 0.5 * np.sum(var / lam - 1.0 - np.log(var / lam) + err ** 2 / lam)
    assert record["w2"] == pytest.approx(w2, rel=1e-12)
    assert record["kl"] == pytest.approx(kl, rel=1e-10)


def test_optimize_then_evaluate_under_the_same_noise(tmp_path, capsys):
    out = tmp_path / "o"
    code, text, err = run(["optimize", "--spectrum", "cifar10", "--steps", "3",
                           "--noise-spectrum", "equal-snr", "--out", out], capsys)
    assert code == 0, err
    assert "forward noise equal-snr" in text.splitlines()[0]
    path = out / "schedule_ddim_w2_S3.json"
    sched = Schedule.load(path)
    assert sched.noise_spectrum == "equal-snr"
    table = pd.read_csv(out / "summary.csv")
    assert set(table.noise_spectrum) == {"equal-snr"}
    # the file evaluates to the loss it records, under its own noise only
    code, text, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", path,
                         "--noise-spectrum", "equal-snr", "--json"], capsys)
    record = json.loads(text)
    assert code == 0 and record["w2"] == pytest.approx(sched.loss_value, rel=1e-12)
    assert record["noise_spectrum"] == "equal-snr"
    lam = load_spectrum("cifar10").eigenvalues
    assert record["w2"] == pytest.approx(
        evaluate_schedule(lam, None, sched.alphas_cumprod, noise="equal-snr").w2, rel=1e-12)
    for other in ([], ["--noise-spectrum", "white"], ["--noise-spectrum", "power:0.5"],
                  ["--noise-spectrum", "fans:1"]):
        code, text, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", path,
                               *other], capsys)
        assert refused(code, err, f"{path}: noise_spectrum: the schedule was made for the "
                       "forward noise 'equal-snr', not") and text == ""
    # a white schedule is refused under a coloured noise, and the other way round
    code, _, err = run(["optimize", "--spectrum", "cifar10", "--steps", "3", "--out",
                        tmp_path / "w"], capsys)
    white = tmp_path / "w" / "schedule_ddim_w2_S3.json"
    assert code == 0 and Schedule.load(white).noise_spectrum == "white"
    code, text, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", white,
                           "--noise-spectrum", "equal-snr"], capsys)
    assert refused(code, err, "made for the forward noise 'white', not 'equal-snr'")


def test_a_schedule_for_one_file_is_refused_under_another(gaussian, tmp_path, capsys):
    path, lam, _ = gaussian
    rng = np.random.default_rng(3)
    c_a, c_b = rng.uniform(0.5, 2.0, lam.size), rng.uniform(0.5, 2.0, lam.size)
    file_a, file_b = _npy(tmp_path, "a.npy", c_a), _npy(tmp_path, "b.npy", c_b)
    out = tmp_path / "o"
    code, _, err = run(["optimize", "--spectrum", path, "--steps", "3", "--noise-spectrum",
                        file_a, "--out", out], capsys)
    assert code == 0, err
    sched_path = out / "schedule_ddim_w2_S3.json"
    label_a = noise_spectrum(str(file_a), lam).label
    assert Schedule.load(sched_path).noise_spectrum == label_a
    label_b = noise_spectrum(str(file_b), lam).label
    code, text, err = run(["evaluate", "--spectrum", path, "--schedule", sched_path,
                           "--noise-spectrum", file_b], capsys)
    assert refused(code, err, f"made for the forward noise '{label_a}', not '{label_b}'")
    code, text, err = run(["evaluate", "--spectrum", path, "--schedule", sched_path], capsys)
    assert refused(code, err, f"made for the forward noise '{label_a}', not 'white'")
    # the same variances in another file are the same noise (the label is their sha256)
    copy = _npy(tmp_path, "copy.npy", c_a)
    code, text, _ = run(["evaluate", "--spectrum", path, "--schedule", sched_path,
                         "--noise-spectrum", copy, "--json"], capsys)
    assert code == 0
    assert json.loads(text)["w2"] == pytest.approx(Schedule.load(sched_path).loss_value,
                                                   rel=1e-12)


def test_sweep_under_a_noise_spectrum(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--spectrum", "cifar10", "--steps", "2", "4", "--samplers", "ddim",
            "ddpm", "--losses", "w2", "--schedules", "linear", "cosine", "--jobs", "2",
            "--noise-spectrum", "power:0.5", "--out", out]
    code, text, err = run(argv, capsys)  # two chains on two worker processes
    assert code == 0, err
    table = pd.read_csv(out / "sweep.csv", comment="#")
    assert set(table.noise_spectrum) == {"power:0.5"}
    lam = load_spectrum("cifar10").eigenvalues
    for _, row in table[~table.schedule.str.startswith("optimized")].iterrows():
        fam, _, spacing = row.schedule.partition("/")
        ab = baseline_alphas_cumprod(fam, int(row.steps), spacing=spacing or "linspace")
        r = evaluate_schedule(lam, None, ab, sampler=row.sampler, noise="power:0.5")
        assert (row.w2, row.kl) == pytest.approx((r.w2, r.kl), rel=1e-9)
    for _, row in table[table.schedule.str.startswith("optimized")].iterrows():
        path = out / "schedules" / f"schedule_{row.sampler}_w2_S{row.steps}.json"
        assert Schedule.load(path).noise_spectrum == "power:0.5"
        code, text, _ = run(["evaluate", "--spectrum", "cifar10", "--schedule", path,
                             "--noise-spectrum", "power:0.5", "--json"], capsys)
        assert code == 0 and json.loads(text)["w2"] == pytest.approx(row.w2, rel=1e-9)
        assert row.w2 <= table[(table.steps == row.steps) & (table.sampler == row.sampler)
                               ].w2.min()
    assert json.loads((out / "sweep.json").read_text())["options"]["noise_spectrum"] == \
        "power:0.5"
    # resumed under the same noise without redoing a cell; refused under another
    code, text, _ = run(argv, capsys)
    assert code == 0 and "4 already done, 0 to run" in text
    before = (out / "sweep.csv").read_bytes()
    for other in ("white", "equal-snr"):
        code, _, err = run([*argv[:-4], "--noise-spectrum", other, "--out", out], capsys)
        assert refused(code, err, "holds a sweep of another spectrum or options")
    assert (out / "sweep.csv").read_bytes() == before
    # a white sweep's manifest has no noise entry: folders of earlier sweeps still resume
    white = tmp_path / "white"
    code, _, _ = run(["sweep", "--spectrum", "cifar10", "--steps", "2", "--samplers", "ddim",
                      "--losses", "w2", "--jobs", "1", "--out", white], capsys)
    assert code == 0
    assert "noise_spectrum" not in json.loads((white / "sweep.json").read_text())["options"]
    assert set(pd.read_csv(white / "sweep.csv", comment="#").noise_spectrum) == {"white"}


def test_a_cell_of_another_noise_is_redone(tmp_path):
    from specsched.optimize.sweep import load_cells, read_cell

    cells = tmp_path / "cells"
    cells.mkdir()
    record = {"format": "specsched.sweep-cell", "steps": 2, "sampler": "ddim", "eta": 0.0,
              "loss": "w2", "success": True, "optimizer": {}, "baselines": {},
              "optimized": {"alphas_cumprod": [0.9, 0.1], "w2": 1.0, "kl": 1.0,
                            "kl_data_gen": 1.0, "value": 1.0}}
    path = cells / "S0002_ddim_w2.json"
    path.write_text(json.dumps(record))  # an earlier version's cell: white
    assert read_cell(path) is not None and read_cell(path, "equal-snr") is None
    path.write_text(json.dumps({**record, "noise_spectrum": "equal-snr"}))
    assert read_cell(path) is None and read_cell(path, "equal-snr") is not None
    assert list(load_cells(cells, "equal-snr")) == ["S0002_ddim_w2"]
    assert load_cells(cells) == {}


def test_export_of_a_coloured_schedule_warns_once(tmp_path, capsys):
    ab = baseline_alphas_cumprod("cosine", 5)
    coloured, white = tmp_path / "c.json", tmp_path / "w.json"
    Schedule(ab, name="c", noise_spectrum="equal-snr").save(coloured)
    Schedule(ab, name="w").save(white)
    for to in ("k-diffusion", "sigmas"):
        code, _, err = run(["export", coloured, "--to", to, "--out", tmp_path / f"c_{to}.npy"],
                           capsys)
        warnings = [line for line in err.splitlines() if "forward noise" in line]
        assert code == 0 and len(warnings) == 1
        assert warnings[0].startswith(f"specsched export: warning: {coloured}: made for the "
                                      "forward noise 'equal-snr'")
        assert "white noise" in warnings[0]
        code, _, err = run(["export", white, "--to", to, "--out", tmp_path / f"w_{to}.npy"],
                           capsys)
        assert code == 0 and "forward noise" not in err
        # the levels are exported as they are
        assert np.array_equal(np.load(tmp_path / f"c_{to}.npy"),
                              np.load(tmp_path / f"w_{to}.npy"))
    # a schedule file keeps the field and needs no warning
    code, _, err = run(["export", coloured, "--to", "schedule", "--out", tmp_path / "s.json"],
                       capsys)
    assert code == 0 and "forward noise" not in err
    assert Schedule.load(tmp_path / "s.json").noise_spectrum == "equal-snr"


def _analyze(src, out, capsys, *extra):
    code, _, err = run(["analyze", src, "--out", out, "--steps", "3", *extra], capsys)
    assert code == 0, err
    return json.loads((out / "summary.json").read_text())


def test_analyze_white_is_unchanged_and_noise_is_recorded(tmp_path, capsys):
    plain = _analyze("digits", tmp_path / "a", capsys)
    _analyze("digits", tmp_path / "b", capsys, "--noise-spectrum", "white")
    for name in ("summary.json", "fmax.csv", "transfer.csv", "rapsd.csv", "bands.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "noise_spectrum" not in plain
    coloured = _analyze("digits", tmp_path / "c", capsys, "--noise-spectrum", "power:0.5")
    assert coloured["noise_spectrum"] == "power:0.5"
    # its schedules are optimised for that noise: no baseline beats them under it
    for S, w2 in coloured["w2"].items():
        assert w2["optimized"] <= min(v for k, v in w2.items()
                                      if k not in ("optimized", "success"))
        assert w2["optimized"] != plain["w2"][S]["optimized"]


def test_analyze_equal_snr_gives_every_frequency_one_snr(tmp_path, capsys):
    """Under EqualSNR every frequency has SNR ab / (1 - ab) mean(P), mean(P) = tr Sigma / n
    (Parseval, n frequencies): f_max(t) is the top ring frequency or nothing."""
    s = _analyze("digits", tmp_path / "e", capsys, "--noise-spectrum", "equal-snr")
    fmax = pd.read_csv(tmp_path / "e" / "fmax.csv", comment="#")
    top = pd.read_csv(tmp_path / "e" / "rapsd.csv", comment="#").freq.max()
    mean_power = s["fourier_vs_full"]["trace_fourier"] / 64
    for family in ("linear", "cosine"):
        ab = training_alphas_cumprod(family, 1000)
        snr = ab / (1.0 - ab) * mean_power
        clear = np.abs(snr - 1.0) > 1e-9  # tau = 1; leave out rounding at the threshold
        expected = np.where(snr >= 1.0, top, 0.0)
        assert np.array_equal(fmax[family].to_numpy()[clear], expected[clear])
        assert 0 < (expected > 0).sum() < 1000  # both cases occur


@pytest.mark.parametrize("noise", ["file", "fans"])
def test_analyze_eigenvalue_maps_divide_by_the_noise(tmp_path, noise, capsys):
    """Eigenvalues only: the fraction of directions with ab lam_k / ((1 - ab) c_k(ab)) >= tau,
    c_k from the file (in the order of the eigenvalues) or FANS' annealed band shape."""
    lam = np.geomspace(10.0, 1e-3, 200)
    src = _npy(tmp_path, "lam.npy", lam)
    rng = np.random.default_rng(4)
    if noise == "file":
        c = rng.uniform(0.1, 10.0, lam.size)
        spec = _npy(tmp_path, "c.npy", c)
        def c_at(ab):
            return c[None, :]
    else:
        spec = "fans"
        shape = noise_spectrum("fans", lam).variances
        def c_at(ab):
            return (1.0 - ab)[:, None] * shape[None, :] + ab[:, None]
    s = _analyze(src, tmp_path / "x", capsys, "--noise-spectrum", spec, "--tau", "2")
    assert s["noise_spectrum"] == noise_spectrum(str(spec), lam).label
    fmax = pd.read_csv(tmp_path / "x" / "fmax.csv", comment="#")
    for family in ("linear", "sigmoid"):
        ab = training_alphas_cumprod(family, 1000)
        snr = (ab / (1.0 - ab))[:, None] * lam[None, :] / c_at(ab)
        np.testing.assert_allclose(fmax[family], (snr >= 2.0).mean(axis=1), atol=1e-12)
