"""benchmarks/unet_fm_study.py: the EDM network study, end to end on a tiny model, its tables,
and its refusals of bad input before any sampling starts."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from specsched.errors import InputError  # noqa: E402
from specsched.unet.train import TrainConfig, train_unet  # noqa: E402

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), groups=4, batch_size=16, warmup_steps=2,
            checkpoint_every=2)


@pytest.fixture
def study(monkeypatch):
    # importable by name, so spawned workers could unpickle its functions
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("unet_fm_study")


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, 8, 8, 1)) * 0.5 + np.linspace(-1, 1, 8)[:, None])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fm")
    edm, eps = d / "edm.pt", d / "eps.pt"
    train_unet(TrainConfig(**TINY, steps=2, preconditioning="edm"), edm,
               images=_images(64, 0).astype(np.float32), progress=False)
    train_unet(TrainConfig(**TINY, steps=1), eps, images=_images(64, 0).astype(np.float32),
               progress=False)
    np.save(d / "train.npy", _images(300, 1))
    np.save(d / "test.npy", _images(100, 2))
    np.save(d / "wrong.npy", np.zeros((50, 16, 16, 1)))
    return d


def _argv(files, out, *extra):
    return ["--checkpoint", str(files / "edm.pt"), "--train-images", str(files / "train.npy"),
            "--test-images", str(files / "test.npy"), "--plan", "smoke", "--seeds", "0", "1",
            "--n-samples", "12", "--batch-size", "12", "--calibration-samples", "40",
            "--calibration-levels", "3", "--gits-warmup", "4", "--jobs", "1", "--out",
            str(out), *extra]


def test_smoke_plan_writes_every_table_with_its_command(study, files, tmp_path):
    out = tmp_path / "res" / "fm"
    assert study.main(_argv(files, out)) == 0
    for suffix in ("_cells.csv", "_paired.csv", "_spearman.csv", "_floor.csv", "_gap.csv",
                   "_timing.csv", "_rapsd.csv", ".png", "_gap.png", "_report.md"):
        assert Path(f"{out}{suffix}").is_file(), suffix
    first = Path(f"{out}_cells.csv").read_text().splitlines()[0]
    assert first.startswith("# python benchmarks/unet_fm_study.py --checkpoint")
    cells = pd.read_csv(f"{out}_cells.csv", comment="#")
    assert len(cells) == len(study.plan_cells("smoke"))
    assert cells["fd_pixels_mean"].notna().all() and (cells["predicted_w2_squared"] > 0).all()
    # every schedule ran inside the tiny network's trained range, final level 0
    lo, hi = TrainConfig(**TINY, preconditioning="edm").trained_sigma_range()
    for text in cells["sigmas"]:
        s = np.array(text.split(), float)
        assert s[-1] == 0.0 and s[:-1].min() >= lo * (1 - 1e-7) and s[:-1].max() <= hi * 1.0001
    # the calibrated theory is given for the k-samplers, not for DDIM
    assert cells.loc[cells["sampler"] == "ddim", "calibrated_w2_squared"].isna().all()
    assert cells.loc[cells["sampler"] != "ddim", "calibrated_w2_squared"].notna().all()
    assert len(pd.read_csv(f"{out}_rapsd.csv", comment="#")) == len(cells) * 4  # 8 px: 4 rings
    text = Path(f"{out}_report.md").read_text()
    assert "| dpmpp-2m | 5 |" in text and "## Answers per sampler and NFE" in text
    # a rerun finds every cell done and samples nothing
    assert study.main(_argv(files, out)) == 0


@pytest.mark.parametrize("change, needle", [
    (("--checkpoint", "eps.pt"), "preconditioning = 'eps', expected 'edm'"),
    (("--image-size", "16"), "trained at 8 x 8, expected --image-size 16"),
    (("--sigma-range", "0.002", "80"), "outside the range"),
    (("--train-images", "wrong.npy"), "wrong.npy: expected images of shape (n, 8, 8, 1)"),
])
def test_bad_input_is_refused_before_sampling(study, files, tmp_path, capsys, change, needle):
    argv = _argv(files, tmp_path / "fm")
    if change[0] in argv:
        i = argv.index(change[0])
        value = change[1] if not change[1].endswith((".pt", ".npy")) else str(files / change[1])
        argv[i + 1] = value
        argv += list(change[2:]) if len(change) > 2 else []
    else:
        argv += list(change)
    assert study.main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_paired_verdicts_are_a_t_test_at_five_percent(study):
    df = pd.DataFrame({
        "sampler": "euler", "nfe_budget": 10, "clip": False,
        "schedule": ["optimized-w2", "karras", "gits"],
        "fd_pixels_seeds": ["1 1.1 0.9 1", "2 2.1 1.9 2", "1.2 0.8 1.3 0.9"]})
    p = study.paired_table(df).set_index("competitor")
    assert p.loc["karras", "fd_pixels_diff"] == pytest.approx(-1.0)
    assert p.loc["karras", "fd_pixels_diff_se"] == pytest.approx(0.0, abs=1e-12)
    assert p.loc["karras", "fd_pixels_verdict"] == "win"
    d = np.array([1, 1.1, 0.9, 1]) - np.array([1.2, 0.8, 1.3, 0.9])
    assert p.loc["gits", "fd_pixels_diff_se"] == pytest.approx(d.std(ddof=1) / 2)
    assert p.loc["gits", "fd_pixels_verdict"] == "tie"
    # mean 1, se 0.4 over 5 seeds: t = 2.5 < t(0.975, 4) = 2.776, a tie; 3 se is a loss
    d = np.array([1.0, 1.0, 1.0, 1.0, 1.0]) + 0.4 * np.sqrt(5) * np.array(
        [-1.0, -0.5, 0.0, 0.5, 1.0]) / np.std([-1.0, -0.5, 0.0, 0.5, 1.0], ddof=1)
    assert d.std(ddof=1) / np.sqrt(5) == pytest.approx(0.4)
    assert study.verdict(d) == "tie" and study.verdict(1 + (d - 1) * 2.5 / 3) == "lose"
    assert study.verdict(-(1 + (d - 1) * 2.5 / 3)) == "win"


def test_mapped_vp_families_keep_their_spacing_between_the_trained_ends(study):
    from specsched.schedules import baseline_alphas_cumprod, sigmas_from_alphas_cumprod

    for name in ("linear", "cosine"):
        s = sigmas_from_alphas_cumprod(study.mapped_vp_family(name, 7, 0.01, 10.0))
        assert s[0] == pytest.approx(0.01) and s[-1] == pytest.approx(10.0)
        own = np.log(sigmas_from_alphas_cumprod(baseline_alphas_cumprod(name, 7)))
        np.testing.assert_allclose(np.diff(np.log(s)) / np.log(1000.0),
                                   np.diff(own) / (own[-1] - own[0]), rtol=1e-10)


def test_check_images_names_the_source_and_the_range(study):
    with pytest.raises(InputError, match=r"src: expected finite pixels in \[-1, 1\]"):
        study.check_images(np.full((4, 8, 8, 1), 3.0), (8, 8, 1), "src")
    assert study.check_images(np.zeros((4, 8, 8)), (8, 8, 1), "src").shape == (4, 8, 8, 1)
