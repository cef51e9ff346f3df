"""benchmarks/flow_shift.py: the optimal flow-matching shift against resolution, its slope fit,
its refusal of a resolution the photographs cannot give, and a tiny end-to-end run."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specsched.data.builtin import natural_patches
from specsched.errors import InputError
from specsched.optimize import optimal_shift
from specsched.schedules.flow import flux_mu, fm_baseline_alphas_cumprod
from specsched.spectrum import estimate_spectrum
from specsched.theory import loss_summary


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("flow_shift")


@pytest.mark.parametrize("size", [301, 1000, 0, 2.5])
def test_patch_size_error_names_the_value_and_the_range(size):
    with pytest.raises(InputError) as info:
        natural_patches(patch_size=size, n_patches=5)
    msg = str(info.value)
    assert msg.startswith("patch_size: expected an integer in [1, 300]")
    assert msg.endswith(f"got {size!r}")
    assert "chelsea is 300 x 451" in msg


def test_largest_patch_is_accepted():
    assert natural_patches(patch_size=300, n_patches=5).shape == (5, 300, 300, 3)


def test_benchmark_refuses_a_resolution_above_the_photographs(study, tmp_path, capsys):
    out = tmp_path / "out"
    code = study.main(["--resolutions", "16", "512", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("flow_shift.py: error: --resolutions 512: patch_size: expected an "
                          "integer in [1, 300]")
    assert err.rstrip().endswith("got 512")
    assert not out.exists()


def test_benchmark_refuses_a_full_resolution_above_the_photographs(study, tmp_path, capsys):
    code = study.main(["--resolutions", "8", "--full-resolutions", "400",
                       "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--resolutions 400" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_slope_fit_recovers_a_power_law(study):
    r = np.array([16, 32, 64, 128, 256])
    fit = study.fit_slope(r, 0.5 * r**0.7)
    assert fit["slope"] == pytest.approx(0.7, rel=1e-12)
    assert fit["shift_at_64"] == pytest.approx(0.5 * 64**0.7, rel=1e-12)
    assert fit["points"] == 5 and fit["r2"] == pytest.approx(1.0)


def test_slope_fit_leaves_out_points_on_the_bound(study):
    r = np.array([16, 32, 64, 128])
    s = 2.0 * r.astype(float)
    s[-1] = 1e3  # the search's upper end: the true optimum may lie beyond
    fit = study.fit_slope(r, s, on_bound=[False, False, False, True])
    assert fit["slope"] == pytest.approx(1.0) and fit["points"] == 3
    one = study.fit_slope([16, 32], [1.0, 2.0], on_bound=[False, True])
    assert math.isnan(one["slope"]) and one["points"] == 1


def test_rules_and_the_closest_one(study):
    rules = study.rule_shifts(64)
    assert rules["hoogeboom"] == 1.0 and rules["sd3"] == 3.0
    assert rules["flux"] == pytest.approx(math.exp(flux_mu(16)))
    assert study.closest_rule(2.5, rules) == "sd3"
    assert study.closest_rule(1.1, rules) == "hoogeboom"
    assert study.closest_rule(1.5, rules) == "flux"


@pytest.mark.parametrize("loss", ["w2", "kl"])
def test_shift_band_brackets_the_optimum_at_the_tolerance(study, loss):
    lam = 50.0 * np.arange(1, 40, dtype=float) ** -2.0
    sh = optimal_shift(lam, None, 6, loss=loss)
    lo, hi = study.shift_band(lam, None, 6, "fm-euler", loss, sh, rtol=0.05)
    assert lo < sh.shift < hi
    for s in (lo, hi):
        ab = fm_baseline_alphas_cumprod("sd3-shift", 6, shift=s)
        value = loss_summary(lam, None, ab, sampler="fm-euler")[loss]
        assert value == pytest.approx(1.05 * sh.fun, rel=1e-6)


def test_patch_batches_are_the_built_in_patches_when_one_batch_fits(study):
    source = study.patch_source(8, 50, seed=3)
    assert source.parts[0].batch >= 50
    a = estimate_spectrum(source, "fourier")
    b = estimate_spectrum(natural_patches(8, 50, 3), "fourier")
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12)
    assert a.n_samples == 50 and a.sample_shape == (8, 8, 3)


def test_patch_batches_split_with_consecutive_seeds(study):
    part = study.PatchBatches(4, 7, batch=3, seed=5)
    x = np.concatenate(list(part.iter_chunks(2)))
    expected = np.concatenate([natural_patches(4, 3, 5), natural_patches(4, 3, 6),
                               natural_patches(4, 1, 7)])
    np.testing.assert_array_equal(x, expected)


def test_patch_counts(study):
    assert [study.n_patches_for(r) for r in (16, 32, 64, 128, 256)] == [
        20000, 20000, 20000, 12000, 3000]
    assert study.n_patches_for(256, quick=True) == 300
    assert study.n_patches_for(32, quick=True, method="full") == 6144  # 2 d: full rank
    assert study.n_patches_for(16, method="full") == 20000


def test_tiny_run_end_to_end(study, tmp_path, capsys):
    out = tmp_path / "fs"
    code = study.main(["--quick", "--resolutions", "4", "8", "--full-resolutions", "4",
                       "--steps", "3", "6", "--samplers", "fm-euler", "--losses", "w2",
                       "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### slopes of log(optimal shift) against log(r)" in printed
    first = (out / "flow_shift.csv").read_text().splitlines()[0]
    assert first.startswith("# python benchmarks/flow_shift.py --quick --resolutions 4 8")
    table = pd.read_csv(out / "flow_shift.csv", comment="#")
    assert len(table) == 6 and set(table["method"]) == {"fourier", "full"}
    assert list(table.columns) == study.COLUMNS
    # the optimal shift beats every shift of the uniform grid, the optimised schedule beats it
    for col in ("sd3_shift", "flux_shift", "hoogeboom_uniform", "fm_uniform"):
        assert (table["opt_shift"] <= table[col] * (1 + 1e-9)).all(), col
    assert (table["full"] <= table["opt_shift"] * (1 + 1e-9)).all()
    assert np.allclose(table["shift_hoogeboom"], table["resolution"] / 64)
    assert ((table["shift_lo"] < table["shift_opt"])
            & (table["shift_opt"] < table["shift_hi"])).all()
    slopes = pd.read_csv(out / "flow_shift_slopes.csv", comment="#")
    fourier = slopes[slopes["method"] == "fourier"]
    assert len(fourier) == 2 and (fourier["points"] == 2).all()
    assert (out / "flow_shift.png").stat().st_size > 0
