"""Fuzzing: malformed arrays, spectra and schedule files against every loader and the CLI.

No input may produce a traceback or a silent wrong result: loaders raise InputError naming
the file or field; the CLI (run in-process through ``specsched.cli.main``) exits 2 with a
one-line message naming the file or argument. Strategies live in ``specsched.testing``.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specsched.cli import main
from specsched.data import load_array
from specsched.errors import InputError
from specsched.schedules import Schedule
from specsched.spectrum import Spectrum, load_spectrum
from specsched.testing import (
    eigenvalue_arrays,
    malformed_eigenvalue_arrays,
    malformed_sample_arrays,
    malformed_schedule_dicts,
    malformed_schedule_texts,
    schedules,
)

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, needle):
    assert code == 2, err
    assert "Traceback" not in err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err  # one plain line


# ---- loaders ----------------------------------------------------------------------------------

@FUZZ
@given(malformed_sample_arrays())
def test_load_array_refuses_malformed_samples(case):
    x, what = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.npy"
        np.save(path, x)
        if what == "a single sample":  # a valid array; the covariance needs N >= 2
            with pytest.raises(InputError, match="at least 2 samples"):
                load_spectrum(path, as_data=True)
            return
        with pytest.raises(InputError) as exc:
            load_spectrum(path, as_data=True)
        assert str(path) in str(exc.value), what
        if what not in ("0-d array", "string dtype"):
            with pytest.raises(InputError, match="bad.npy"):
                load_array(path)


@FUZZ
@given(malformed_eigenvalue_arrays())
def test_spectrum_refuses_malformed_eigenvalues(case):
    lam, what = case
    with pytest.raises(InputError, match="eigenvalues"):
        Spectrum.from_eigenvalues(lam)


@FUZZ
@given(malformed_schedule_dicts())
def test_schedule_from_dict_refuses_malformed(case):
    d, what = case
    with pytest.raises(InputError, match="<fuzz>"):
        Schedule.from_dict(d, source="<fuzz>")


@FUZZ
@given(malformed_schedule_texts())
def test_schedule_load_refuses_malformed_files(case):
    text, what = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.json"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError) as exc:
            Schedule.load(path)
        assert str(exc.value).startswith(str(path)), what


# ---- the command line -------------------------------------------------------------------------

@FUZZ
@given(malformed_sample_arrays(), st.sampled_from(["spectrum", "optimize", "sweep"]))
def test_cli_refuses_malformed_samples(capsys, case, command):
    x, what = case
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "samples.npy"
        np.save(data, x)
        argv = {"spectrum": ["spectrum", data, "--out", Path(tmp) / "s.npz"],
                "optimize": ["optimize", "--data", data, "--steps", "2", "--out",
                             Path(tmp) / "o"],
                "sweep": ["sweep", "--data", data, "--steps", "2", "--samplers", "ddim",
                          "--losses", "w2", "--jobs", "1", "--out", Path(tmp) / "sw"]}[command]
        code, _, err = cli(argv, capsys)
        assert_refused(code, err, "samples.npy")
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["samples.npy"]  # nothing written


@FUZZ
@given(malformed_eigenvalue_arrays(), st.sampled_from(["npy", "npz"]))
def test_cli_refuses_malformed_spectra(capsys, case, container):
    lam, what = case
    with tempfile.TemporaryDirectory() as tmp:
        if container == "npy":
            if lam.ndim != 1:
                return  # a 2-D .npy is a samples array, not eigenvalues
            path = Path(tmp) / "eigs.npy"
            np.save(path, lam)
            needle = "eigenvalues"
        else:  # a spectrum file whose eigenvalues field is malformed
            path = Path(tmp) / "spec.npz"
            good = Path(tmp) / "good.npz"
            Spectrum.from_eigenvalues([2.0, 1.0]).save(good)
            fields = dict(np.load(good))
            fields["eigenvalues"] = lam
            fields["mean"] = np.zeros(lam.shape[-1])
            np.savez(path, **fields)
            needle = "spec.npz"
        code, _, err = cli(["evaluate", "--spectrum", path, "--schedule", "linear",
                            "--steps", "3", "--json"], capsys)
        assert_refused(code, err, needle)


@FUZZ
@given(malformed_schedule_texts(), st.sampled_from(["evaluate", "export", "sample"]))
def test_cli_refuses_malformed_schedule_files(capsys, case, command):
    text, what = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sched.json"
        path.write_text(text, encoding="utf-8")
        argv = {"evaluate": ["evaluate", "--spectrum", "cifar10", "--schedule", path],
                "export": ["export", path, "--to", "sigmas", "--out", Path(tmp) / "x.npy"],
                "sample": ["sample", "--schedule", path, "--spectrum", "cifar10", "--n", "2",
                           "--out", Path(tmp) / "x.npy"]}[command]
        code, _, err = cli(argv, capsys)
        assert_refused(code, err, "sched.json")
        assert not (Path(tmp) / "x.npy").exists()


@FUZZ
@given(st.lists(st.sampled_from(["0", "-1", "x", "1.5", "nan", "", "1e3"]), min_size=1,
                max_size=3),
       st.sampled_from(["optimize", "sweep", "analyze"]))
def test_cli_refuses_bad_step_counts(capsys, steps, command):
    with tempfile.TemporaryDirectory() as tmp:
        head = {"optimize": ["optimize", "--spectrum", "cifar10"],
                "sweep": ["sweep", "--spectrum", "cifar10", "--samplers", "ddim", "--losses",
                          "w2", "--jobs", "1"],
                "analyze": ["analyze", "cifar10"]}[command]
        try:
            code, _, err = cli([*head, "--out", Path(tmp) / "o", "--steps", *steps], capsys)
        except SystemExit as exc:  # argparse: usage line + "argument --steps: ..."
            code, err = exc.code, capsys.readouterr().err
        assert code == 2 and "--steps" in err and "Traceback" not in err
        assert not (Path(tmp) / "o").exists()


# ---- valid but extreme input: an answer that is finite, or a refusal; never NaN ---------------

@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eigenvalue_arrays(min_size=1, max_size=6, min_value=1e-12, max_value=1e6),
       schedules(min_steps=1, max_steps=6, min_logsnr=-30.0, max_logsnr=30.0),
       st.sampled_from(["ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve"]))
def test_cli_evaluate_extreme_spectra_and_schedules(capsys, lam, ab, sampler):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "eigs.npy", lam)
        Schedule(alphas_cumprod=ab).save(Path(tmp) / "s.json")
        code, out, err = cli(["evaluate", "--spectrum", Path(tmp) / "eigs.npy", "--schedule",
                              Path(tmp) / "s.json", "--sampler", sampler, "--json"], capsys)
        assert "Traceback" not in err
        if code == 0:
            rec = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in output"))
            assert np.isfinite([rec["w2"], rec["kl"], rec["kl_data_gen"]]).all()
            assert rec["w2"] >= 0
        else:
            assert_refused(code, err, "--schedule")


# ---- random numbers on the command line: a refusal in one line, or a run; never a traceback --

#: Numbers as a user or a script may type them: malformed, non-finite, huge, tiny, negative.
ODD_NUMBERS = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "-0", "0", "1e308", "1e309", "1e-320", "",
                     "x", "1e3", "0x10", " 2", "1_000", "--", "1" * 5000, "-1"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
)
#: Flags that take a number, per command (a small problem: d = 4, few steps).
NUMERIC_FLAGS = {
    "optimize": ["--ab-min", "--ab-max", "--delta", "--maxiter", "--eta", "--steps"],
    "sweep": ["--ab-min", "--ab-max", "--delta", "--maxiter", "--jobs", "--steps"],
    "sample": ["--n", "--batch-size", "--seed", "--eta"],
    "evaluate": ["--steps", "--eta", "--t-eps", "--beta-min", "--beta-max"],
    "analyze": ["--tau", "--bands", "--steps", "--chunk-size"],
}


def _numeric_argv(command, tmp):
    lam = Path(tmp) / "eigs.npy"
    np.save(lam, np.array([2.0, 1.0, 0.5, 0.25]))
    sched = Path(tmp) / "s.json"
    Schedule(alphas_cumprod=np.array([0.99, 0.6, 0.2])).save(sched)
    return {"optimize": ["optimize", "--spectrum", lam, "--steps", "2", "--out",
                         Path(tmp) / "o"],
            "sweep": ["sweep", "--spectrum", lam, "--steps", "2", "--samplers", "ddim",
                      "--losses", "w2", "--jobs", "1", "--out", Path(tmp) / "sw"],
            "sample": ["sample", "--schedule", sched, "--spectrum", lam, "--n", "3", "--out",
                       Path(tmp) / "x.npy"],
            "evaluate": ["evaluate", "--spectrum", lam, "--schedule", "linear", "--steps", "3",
                         "--json"],
            "analyze": ["analyze", lam, "--out", Path(tmp) / "a"]}[command]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(sorted(NUMERIC_FLAGS)), st.data())
def test_cli_random_numeric_arguments(capsys, command, data):
    flags = data.draw(st.lists(st.sampled_from(NUMERIC_FLAGS[command]), min_size=1,
                               max_size=3, unique=True))
    values = [data.draw(ODD_NUMBERS) for _ in flags]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*_numeric_argv(command, tmp), *[x for f, v in zip(flags, values, strict=True)
                                                 for x in (f, v)]]
        try:
            code, out, err = cli([f"{a}" for a in argv], capsys)
        except SystemExit as exc:  # argparse
            code, err = exc.code, capsys.readouterr().err
        assert "Traceback" not in err, err
        assert code in (0, 2, 3), (code, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
            assert any(f in err for f in flags) or "--" in err, err  # names an argument
        if command == "evaluate" and code == 0:
            rec = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in output"))
            assert np.isfinite(rec["w2"])
