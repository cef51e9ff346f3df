"""Exporters, the export command, and round trips through the real diffusers schedulers."""

import argparse
import json

import numpy as np
import pytest

from specsched.cli import main
from specsched.errors import InputError, OutputExistsError
from specsched.schedules import (
    Schedule,
    baseline_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    training_alphas_cumprod,
)
from specsched.schedules.export import (
    export_array,
    export_diffusers,
    export_k_diffusion,
    export_sigmas_text,
    training_grid_warnings,
)
from specsched.schedules.exported import read_levels
from specsched.theory import evaluate_schedule

AB = baseline_alphas_cumprod("logsnr", 10)  # off the training grid


def test_arrays_and_k_diffusion_sigmas():
    sig = export_k_diffusion(AB)
    assert sig.shape == (11,) and sig[-1] == 0.0 and np.all(np.diff(sig) < 0)
    np.testing.assert_allclose(1.0 / (1.0 + sig[:-1] ** 2), AB[::-1], rtol=1e-12)
    np.testing.assert_array_equal(export_array(AB, "ab"), AB)
    b = export_array(AB, "betas")
    np.testing.assert_allclose(np.cumprod(1 - b), AB, rtol=1e-12)
    with pytest.raises(InputError, match="kind"):
        export_array(AB, "logsnr")


def test_diffusers_timesteps_are_nearest_in_logsnr():
    info = export_diffusers(AB)
    t = np.array(info["timesteps"])
    assert np.all(np.diff(t) < 0) and t.dtype.kind == "i"
    train = logsnr_from_alphas_cumprod(training_alphas_cumprod("linear", 1000))
    target = logsnr_from_alphas_cumprod(AB)[::-1]
    err = np.abs(train[t] - target)
    # no other training step is nearer
    assert np.all(err <= np.abs(train[np.clip(t + 1, 0, 999)] - target) + 1e-12)
    assert np.all(err <= np.abs(train[np.clip(t - 1, 0, 999)] - target) + 1e-12)
    assert info["logsnr_rounding_error"] == pytest.approx(err.max())
    assert info["scheduler_config"] is None and "trained_betas" in info["notes"][-1]
    assert info["timesteps_problem"] is None and info["warnings"] == []
    json.dumps(info)
    full = export_diffusers(training_alphas_cumprod("linear", 1000))
    assert full["timesteps"] == list(range(999, -1, -1)) and full["logsnr_rounding_error"] == 0
    np.testing.assert_allclose(full["scheduler_config"]["trained_betas"],
                               np.linspace(1e-4, 0.02, 1000), rtol=1e-9)


def test_duplicate_timesteps_leave_the_sigmas():
    """Two steps on one training step: no timesteps, a reason, and sigmas that work."""
    ab = [0.99990, 0.99989, 0.5]
    info = export_diffusers(ab)
    assert info["timesteps"] is None and info["alphas_cumprod_run"] is None
    assert "steps 1 and 2" in info["timesteps_problem"] and "sigmas" in info["timesteps_problem"]
    assert info["timesteps_problem"] in info["warnings"]
    np.testing.assert_array_equal(info["sigmas"], export_k_diffusion(ab))
    assert "timesteps" not in info["layout"] and "last one 0" in info["layout"]["sigmas"]


def test_training_schedule_changes_the_grid():
    lin, cos = export_diffusers(AB), export_diffusers(AB, training_schedule="cosine")
    assert cos["training_schedule"] == "cosine" and lin["timesteps"] != cos["timesteps"]
    assert cos["scheduler_args"]["beta_schedule"] == "squaredcos_cap_v2"
    train = training_alphas_cumprod("cosine", 1000)
    np.testing.assert_array_equal(cos["alphas_cumprod_run"],
                                  train[np.array(cos["timesteps"])[::-1]])
    with pytest.raises(InputError, match="training_schedule"):
        export_diffusers(AB, training_schedule="karras")


def test_levels_outside_the_training_grid_are_warned_of():
    # karras: sigma_min = 0.002 < 0.01, the linear grid's smallest; sigma_max = 80 < 157
    w = training_grid_warnings(baseline_alphas_cumprod("karras", 10))
    assert len(w) == 1 and "below the linear T=1000 training grid" in w[0]
    assert w[0].startswith("step 1 ")
    sig = np.array([0.001, 0.005, 1.0, 500.0])
    w = training_grid_warnings(1.0 / (1.0 + sig**2))
    assert w[0].startswith("steps 1-2 ") and "above" in w[1] and w[1].startswith("step 4 ")
    assert training_grid_warnings(AB) == []


def _parse(argv):
    from specsched.cli import export as export_command

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    export_command.add_parser(sub)
    return ap.parse_args(argv)


@pytest.mark.parametrize("fmt", ["npy", "txt", "json"])
def test_export_command_arrays(tmp_path, fmt, capsys):
    f = tmp_path / "s.json"
    Schedule(AB).save(f)
    out = tmp_path / f"sig.{fmt}"
    args = _parse(["export", str(f), "--to", "k-diffusion", "--out", str(out)])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "11 values, noisiest first, descending" in printed and "last 0" in printed
    if fmt == "npy":
        got = np.load(out)
    elif fmt == "txt":
        got = np.loadtxt(out)
        header = out.read_text().splitlines()[0]
        assert header.startswith("# specsched export --to k-diffusion:") and "last 0" in header
    else:
        d = json.loads(out.read_text())
        got = np.array(d["sigmas"])
        assert d["kind"] == "k-diffusion" and d["ends_with_zero"] and d["last"] == 0.0
        assert "descending" in d["order"]
    np.testing.assert_array_equal(got, export_k_diffusion(AB))
    with pytest.raises(OutputExistsError):
        args.run(args)


@pytest.mark.parametrize("kind, key", [("ab", "alphas_cumprod"), ("betas", "betas"),
                                       ("sigmas", "sigmas")])
def test_every_array_says_its_order_and_last_value(tmp_path, kind, key, capsys):
    f = tmp_path / "s.json"
    Schedule(AB).save(f)
    values = export_array(AB, kind)
    for fmt in ("npy", "txt", "json"):
        out = tmp_path / f"{kind}.{fmt}"
        assert main(["export", str(f), "--to", kind, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "step 1 (least noisy) first" in printed and f"last {values[-1]:.6g}" in printed
        if fmt == "json":
            d = json.loads(out.read_text())
            assert d["kind"] == kind and d["last"] == values[-1] and not d["ends_with_zero"]
            np.testing.assert_array_equal(d[key], values)
        elif fmt == "txt":
            assert "step 1 (least noisy) first" in out.read_text().splitlines()[0]
            np.testing.assert_array_equal(np.loadtxt(out), values)
        # evaluate reads each back to the same levels (a .npy needs to be told its kind)
        lv = read_levels(out, kind if fmt == "npy" else None)
        np.testing.assert_allclose(lv.alphas_cumprod, AB, rtol=1e-12)


def test_export_command_diffusers(tmp_path, capsys):
    f = tmp_path / "s.json"
    Schedule(training_alphas_cumprod("linear", 1000)).save(f)
    args = _parse(["export", str(f), "--to", "diffusers", "--out", str(tmp_path / "d")])
    assert args.run(args) == 0
    err = capsys.readouterr().err
    assert "DDIMScheduler takes no custom timesteps" in err and "clip_sample=False" in err
    cfg = json.loads((tmp_path / "d" / "scheduler_config.json").read_text())
    assert len(cfg["trained_betas"]) == 1000
    d = json.loads((tmp_path / "d" / "diffusers_schedule.json").read_text())
    assert len(d["timesteps"]) == 1000 and d["scheduler_config_file"] == "scheduler_config.json"
    assert "scheduler_config" not in d and d["format"] == "specsched.diffusers-export"


def test_diffusers_export_writes_sigmas_when_timesteps_collide(tmp_path, capsys):
    f = tmp_path / "s.json"
    Schedule([0.99990, 0.99989, 0.5]).save(f)
    assert main(["export", str(f), "--to", "diffusers", "--out", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    assert "warning: steps 1 and 2" in err and "no timesteps are written" in err
    assert "sigmas: noisiest first" in out
    d = json.loads((tmp_path / "d" / "diffusers_schedule.json").read_text())
    assert d["timesteps"] is None and len(d["sigmas"]) == 4 and d["sigmas"][-1] == 0
    # evaluate: the timesteps are refused with the reason, the sigmas work
    code = main(["evaluate", "--spectrum", "cifar10", "--schedule", str(tmp_path / "d"),
                 "--sampler", "ddim"])
    assert code == 2 and "none were written" in capsys.readouterr().err
    assert main(["evaluate", "--spectrum", "cifar10", "--schedule", str(tmp_path / "d"),
                 "--sampler", "ddim-ve", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    th = evaluate_schedule(load_cifar().eigenvalues, None, [0.99990, 0.99989, 0.5],
                           sampler="ddim-ve")
    assert r["levels"] == "sigmas" and r["w2"] == pytest.approx(th.w2, rel=1e-12)


def load_cifar():
    from specsched.spectrum import load_spectrum

    return load_spectrum("cifar10")


def test_baseline_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "cosine10.json"
    assert main(["export", "--baseline", "cosine", "--steps", "10", "--to", "schedule",
                 "--out", str(out)]) == 0
    s = Schedule.load(out)
    np.testing.assert_array_equal(s.alphas_cumprod, baseline_alphas_cumprod("cosine", 10))
    assert s.name == "cosine/linspace"
    assert main(["export", "--baseline", "karras", "--steps", "5", "--to", "ab",
                 "--out", str(tmp_path / "k.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), baseline_alphas_cumprod("karras", 5))
    capsys.readouterr()
    for argv, needle in [
        (["--baseline", "cosine", "--to", "ab"], "--steps: required"),
        ([str(out), "--baseline", "cosine", "--steps", "3", "--to", "ab"], "not both"),
        (["--to", "ab"], "not neither"),
        ([str(out), "--steps", "3", "--to", "ab"], "--steps: applies to --baseline"),
    ]:
        assert main(["export", *argv, "--out", str(tmp_path / "x.npy")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("ab", [AB, baseline_alphas_cumprod("karras", 30),
                                baseline_alphas_cumprod("kl_optimal", 7, sigma_range=(1e-6, 3e3)),
                                baseline_alphas_cumprod("cosine", 1000)])
def test_sigmas_text_reads_back_to_the_exact_sigmas(tmp_path, ab, capsys):
    out = tmp_path / "sigmas.txt"
    assert main(["export", "--to", "sigmas-text", "--out", str(out), "--force"]
                + ["--baseline", "cosine", "--steps", "2"]) == 0  # --force on a new file
    Schedule(ab).save(tmp_path / "s.json")
    assert main(["export", str(tmp_path / "s.json"), "--to", "sigmas-text", "--out", str(out),
                 "--force"]) == 0
    assert "sigmas-text" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text == export_sigmas_text(ab) and text.endswith("\n") and text.count("\n") == 1
    values = [float(v) for v in text.split(",")]
    ref = export_k_diffusion(ab)  # (sigma_S, ..., sigma_1, 0)
    assert np.array_equal(np.array(values), ref)  # bit for bit: repr round-trips float64
    assert values[-1] == 0.0 and text.rstrip().endswith(", 0.0")
    assert np.all(np.diff(values) < 0)  # descending
    sigma = np.sqrt((1 - ab) / ab)  # written out independently, step 1 first
    np.testing.assert_allclose(values[:-1], sigma[::-1], rtol=1e-12)


def test_sigmas_text_is_written_like_the_other_targets(tmp_path, capsys):
    out = tmp_path / "sigmas.csv"
    argv = ["export", "--baseline", "exponential", "--steps", "4", "--to", "sigmas-text",
            "--out", str(out)]
    assert main(argv) == 0
    first = out.read_text()
    np.testing.assert_allclose([float(v) for v in first.split(",")],
                               [80.0, 80 * (0.002 / 80) ** (1 / 3), 80 * (0.002 / 80) ** (2 / 3),
                                0.002, 0.0], rtol=2e-11)
    capsys.readouterr()
    assert main([*argv[:4], "7", *argv[5:]]) == 2  # exists: refused, file kept
    assert "--force" in capsys.readouterr().err and out.read_text() == first
    assert main([*argv, "--format", "npy"]) == 2
    assert "--format: --to sigmas-text writes one line of text" in capsys.readouterr().err
    assert main([*argv[:4], "7", *argv[5:], "--force"]) == 0
    assert len(out.read_text().split(",")) == 8
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir()) \
        == ["sigmas.csv"]


def test_sigma_range_of_an_exported_baseline(tmp_path, capsys):
    out = tmp_path / "k.txt"
    assert main(["export", "--baseline", "karras", "--steps", "5", "--sigma-range",
                 "0.0292,14.61", "--to", "sigmas-text", "--out", str(out)]) == 0
    values = [float(v) for v in out.read_text().split(",")]
    assert values[0] == pytest.approx(14.61, rel=1e-12)
    assert values[-2] == pytest.approx(0.0292, rel=1e-10) and values[-1] == 0.0
    capsys.readouterr()
    for extra, needle in [
        (["--baseline", "linear", "--steps", "5", "--sigma-range", "0.1,1"],
         "--sigma-range: applies to the baselines karras, exponential, kl_optimal, not to "
         "'linear'"),
        (["--baseline", "karras", "--steps", "5", "--sigma-range", "14.61,0.0292"],
         "argument --sigma-range: expected edm or SIGMA_MIN,SIGMA_MAX with 0 < SIGMA_MIN < "
         "SIGMA_MAX, got '14.61,0.0292': inverted"),
        (["--baseline", "karras", "--steps", "5", "--sigma-range=-1,2"], "not positive"),
        (["--baseline", "karras", "--steps", "5", "--sigma-range", "0,2"], "not positive"),
        (["--baseline", "karras", "--steps", "5", "--sigma-range", "bounds"],
         "bounds needs --ab-min/--ab-max"),
        (["--baseline", "karras", "--steps", "5", "--sigma-range", "1,2,3"], "got '1,2,3'"),
        (["--baseline", "edm", "--steps", "5"], "'exponential', 'kl_optimal'"),
    ]:
        try:  # argparse's refusals exit 2 from inside main
            code = main(["export", *extra, "--to", "ab", "--out", str(tmp_path / "x.npy")])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_an_export_is_not_taken_for_a_schedule_file(tmp_path, capsys):
    assert main(["export", "--baseline", "linear", "--steps", "5", "--to", "diffusers",
                 "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    exported = tmp_path / "d" / "diffusers_schedule.json"
    assert main(["export", str(exported), "--to", "ab", "--out", str(tmp_path / "a.npy")]) == 2
    err = capsys.readouterr().err
    assert 'format: expected "specsched.schedule", got "specsched.diffusers-export"' in err
    assert "specsched evaluate" in err


def test_evaluate_reads_what_export_wrote(tmp_path, capsys):
    """diffusers folder (timesteps and sigmas), k-diffusion .npy, sigmas .txt: same numbers."""
    f = tmp_path / "s.json"
    Schedule(AB).save(f)
    for argv in (["--to", "diffusers", "--out", "d"], ["--to", "k-diffusion", "--out", "k.npy"],
                 ["--to", "sigmas", "--out", "s.txt"], ["--to", "sigmas", "--out", "s.npy"]):
        argv[-1] = str(tmp_path / argv[-1])
        assert main(["export", str(f), *argv]) == 0
    capsys.readouterr()
    lam = load_cifar().eigenvalues

    def w2(*argv):
        assert main(["evaluate", "--spectrum", "cifar10", "--json", *map(str, argv)]) == 0
        return json.loads(capsys.readouterr().out)

    info = export_diffusers(AB)
    r = w2("--schedule", tmp_path / "d", "--sampler", "ddpm")
    assert r["levels"] == "timesteps" and r["timesteps"] == info["timesteps"]
    run = evaluate_schedule(lam, None, info["alphas_cumprod_run"], sampler="ddpm").w2
    assert r["w2"] == pytest.approx(run, rel=1e-12)
    ve = evaluate_schedule(lam, None, AB, sampler="ddim-ve").w2
    for path, extra in [(tmp_path / "d" / "diffusers_schedule.json", []),
                        (tmp_path / "k.npy", []), (tmp_path / "s.txt", []),
                        (tmp_path / "s.npy", ["--levels", "sigmas"])]:
        assert w2("--schedule", path, "--sampler", "ddim-ve", *extra)["w2"] == \
            pytest.approx(ve, rel=1e-12)
    assert main(["evaluate", "--spectrum", "cifar10", "--schedule", str(tmp_path / "s.npy")]) == 2
    assert "--levels" in capsys.readouterr().err


@pytest.mark.parametrize("values, levels, needle", [
    ([80.0, 10.0, 1.0, 0.0], "sigmas", "noisiest-first layout with a final 0"),
    ([1.0, 10.0, 80.0], "k-diffusion", "read it as sigmas"),
    ([1.0, 10.0, 5.0, 0.0], "k-diffusion", "strictly descending before the final 0"),
    ([0.5, 0.9], "ab", "alphas_cumprod[1]: expected strictly decreasing"),
    ([0.1, 1.5], "betas", "betas[1]: expected a value in the open interval"),
])
def test_exported_arrays_in_the_wrong_order_are_refused(tmp_path, values, levels, needle):
    path = tmp_path / "a.npy"
    np.save(path, np.array(values))
    with pytest.raises(InputError, match="a.npy") as exc:
        read_levels(path, levels)
    assert needle in str(exc.value)


def test_one_export_validates_the_schedule_once(tmp_path, monkeypatch):
    """Validation at the boundary: loading validates alphas_cumprod; nothing below re-checks."""
    from specsched.schedules import conversions, families

    f = tmp_path / "s.json"
    Schedule(AB).save(f)
    calls = []
    original = conversions._as_float64

    def counting(values, name, **kw):
        calls.append(name)
        return original(values, name, **kw)

    monkeypatch.setattr(conversions, "_as_float64", counting)
    monkeypatch.setattr(families, "_as_float64", counting)
    for to, out in (("diffusers", "d"), ("k-diffusion", "k.npy"), ("sigmas", "sig.json"),
                    ("ab", "a.txt"), ("betas", "b.npy"), ("schedule", "copy.json")):
        calls.clear()
        assert main(["export", str(f), "--to", to, "--out", str(tmp_path / out)]) == 0
        assert calls == ["alphas_cumprod"], (to, calls)


def test_k_diffusion_loader_says_how_to_install(monkeypatch):
    """Without k-diffusion the loader names the pip line (the recipe tests then skip)."""
    import importlib.util

    from specsched.schedules import kdiffusion

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "k_diffusion" else real(name, *a))
    with pytest.raises(InputError, match=r"k-diffusion is not installed: pip install --no-deps "
                       r"k-diffusion==0\.1\.1\.post1 torchsde"):
        kdiffusion.load_k_diffusion_sampling()


def test_a_folder_with_both_diffusers_exports_is_refused(tmp_path):
    """A folder holding a VP and a flow export of different schedules: reading either would be
    a guess (evaluate --sampler fm-euler once read the VP file and reported its W2)."""
    f = tmp_path / "s.json"
    Schedule(AB).save(f)
    fm = tmp_path / "fm.json"
    Schedule([0.9, 0.5, 0.1, 0.0], param="fm").save(fm)
    out = tmp_path / "exported"
    assert main(["export", str(f), "--to", "diffusers", "--out", str(out)]) == 0
    vp = read_levels(out)
    assert main(["export", str(fm), "--to", "diffusers-flow", "--out", str(out)]) == 0
    with pytest.raises(InputError, match="both diffusers_schedule.json and "
                                         "diffusers_flow_schedule.json; name the file"):
        read_levels(out)
    np.testing.assert_array_equal(read_levels(out / "diffusers_schedule.json").alphas_cumprod,
                                  vp.alphas_cumprod)
