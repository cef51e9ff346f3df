"""The reference U-Net: a tiny model trains, resumes bit-identically and samples through the
torch-free sampler; its denoiser wrapper obeys the eps -> x0 algebra; the commands parse
and stay importable without torch."""

import argparse
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from specsched.data.fashion_mnist import fashion_mnist_images
from specsched.errors import InputError, OutputExistsError
from specsched.schedules import (
    baseline_alphas_cumprod,
    nearest_training_timesteps,
    training_alphas_cumprod,
)
from specsched.unet.train import TrainConfig

#: A few thousand parameters at 8 x 8: trains a handful of steps in about a second.
TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), groups=4, batch_size=16, warmup_steps=2,
            checkpoint_every=2)


def _images(n=64, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, size, size, 1))).astype(np.float32)


def _parser():
    from specsched.cli import fid as fid_command
    from specsched.cli import unet as command

    parser = argparse.ArgumentParser(prog="specsched")
    sub = parser.add_subparsers(dest="command", required=True)
    command.add_parser(sub)
    fid_command.add_parser(sub)
    return parser


def test_import_is_torch_free():
    code = ("import sys, specsched, specsched.unet, specsched.metrics, specsched.cli.unet, "
            "specsched.cli.fid, specsched.unet.train, specsched.data.fashion_mnist, "
            "specsched.fileio; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_says_how_to_install(monkeypatch):
    from specsched.unet import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    hint = r"pip install torch==2\.13\.0.*pip install 'specsched\[unet\]'"
    with pytest.raises(InputError, match=hint):
        require_torch()
    args = _parser().parse_args(["train-unet", "--checkpoint", "x.pt"])
    with pytest.raises(InputError, match=r"torch==2\.13\.0"):
        args.run(args)


def test_help_parses(capsys):
    for cmd in ("train-unet", "sample-unet", "fid"):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args([cmd, "--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "16 x 16" in out and "--minutes" in out and "--inception-weights" in out


def test_commands_wired_into_cli():
    from specsched.cli import COMMAND_MODULES

    if "specsched.cli.unet" not in COMMAND_MODULES:
        pytest.skip("specsched.cli.unet not in specsched.cli.COMMAND_MODULES")
    assert "specsched.cli.fid" in COMMAND_MODULES
    from specsched.cli import main

    for cmd in ("train-unet", "fid"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0


def test_nearest_timesteps_matches_schedules_module():
    from specsched.unet.denoiser import nearest_timesteps

    rng = np.random.default_rng(0)
    ab = np.sort(rng.uniform(1e-5, 1 - 1e-6, 200))[::-1]
    grid = training_alphas_cumprod("linear", 1000)
    np.testing.assert_array_equal(nearest_timesteps(grid, ab), nearest_training_timesteps(ab))
    np.testing.assert_array_equal(nearest_timesteps(grid, grid), np.arange(1000))


def test_config_validation():
    with pytest.raises(InputError, match="image_size"):
        TrainConfig(image_size=12, channel_mults=(1, 2, 2, 2))
    with pytest.raises(InputError, match="lr"):
        TrainConfig(lr=0.0)


def test_fashion_mnist_downsampling():
    from specsched.data.idx import read_idx
    from specsched.data.sources import FASHION_MNIST_DIR

    path = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    x, y = fashion_mnist_images(16, "test", labels=True)
    assert x.shape == (10000, 16, 16, 1) and x.dtype == np.float32 and y.shape == (10000,)
    assert -1.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    raw = read_idx(path)[:5].astype(np.float64) / 255 * 2 - 1
    padded = np.full((5, 32, 32), -1.0)
    padded[:, 2:30, 2:30] = raw
    # average pooling keeps the image mean; one 2 x 2 block checked by hand
    np.testing.assert_allclose(x[:5].mean(axis=(1, 2, 3)), padded.mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(x[0, 7, 9, 0], padded[0, 14:16, 18:20].mean(), atol=1e-6)


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (optional extra unet)")


@pytest.fixture
def torch():
    """torch, on one thread (two threads on a shared 2-core machine measured 100 times
    slower per step for tiny models)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


@needs_torch
def test_atomic_torch_save_round_trip_and_refusals(torch, tmp_path):
    from specsched.fileio import atomic_torch_save

    path = tmp_path / "sub" / "w.pt"
    atomic_torch_save({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    with pytest.raises(OutputExistsError, match="w.pt"):
        atomic_torch_save({"a": torch.zeros(1)}, path)
    atomic_torch_save({"a": torch.ones(2)}, path, force=True)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unpicklable()}, path, force=True)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.pt"]  # no temporary left


@needs_torch
def test_model_shapes_and_zero_init(torch):
    from specsched.unet.model import UNet, count_parameters

    model = UNet(**TrainConfig().model_kwargs())
    assert 0.5e6 <= count_parameters(model) <= 4e6  # the default: 1.11 M
    tiny = UNet(**TrainConfig(**TINY).model_kwargs())
    assert 1_000 <= count_parameters(tiny) <= 60_000
    x = torch.randn(3, 1, 8, 8)
    out = tiny(x, torch.tensor([0.0, 500.0, 999.0]))
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output layer


@needs_torch
def test_train_tiny_and_sample_through_sampler(torch, tmp_path):
    from specsched.sampling import sample
    from specsched.unet.denoiser import UNetDenoiser
    from specsched.unet.train import load_checkpoint, train_unet

    ck = tmp_path / "tiny.pt"
    r = train_unet(TrainConfig(**TINY, steps=5), ck, images=_images(), progress=False)
    assert r.step == 5 and r.stopped == "steps" and np.isfinite(r.loss)
    assert load_checkpoint(ck)["step"] == 5 and not list(tmp_path.glob(".*.tmp"))
    den = UNetDenoiser.from_checkpoint(ck, batch_size=7)
    assert den.sample_shape == (8, 8, 1)
    for sampler in ("ddim", "ddpm"):
        ab = baseline_alphas_cumprod("karras", 4)  # off the training grid
        x = sample(den, ab, 10, den.sample_shape, sampler=sampler,
                   rng=np.random.default_rng(1), batch_size=10, progress=False)
        assert x.shape == (10, 8, 8, 1) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert den.calls == 2 * 4 * 2  # 2 samplers x 4 steps x 2 network batches of <= 7


@needs_torch
def test_resume_is_bit_identical(torch, tmp_path):
    from specsched.unet.train import load_checkpoint, train_unet

    images = _images()
    train_unet(TrainConfig(**TINY, steps=4), tmp_path / "a.pt", images=images, progress=False)
    train_unet(TrainConfig(**TINY, steps=2), tmp_path / "b.pt", images=images, progress=False)
    r = train_unet(TrainConfig(**TINY, steps=4), tmp_path / "b.pt", images=images,
                   resume=True, progress=False)
    assert r.step == 4 and r.steps_this_run == 2
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    with pytest.raises(OutputExistsError, match="--resume"):
        train_unet(TrainConfig(**TINY, steps=4), tmp_path / "b.pt", images=images)
    with pytest.raises(InputError, match="base_channels"):
        train_unet(TrainConfig(**{**TINY, "base_channels": 16}, steps=6), tmp_path / "b.pt",
                   images=images, resume=True)


@needs_torch
def test_time_budget_stops_and_saves(torch, tmp_path):
    from specsched.unet.train import load_checkpoint, train_unet

    r = train_unet(TrainConfig(**TINY, steps=100_000), tmp_path / "c.pt", images=_images(),
                   minutes=0.02, progress=False)
    assert r.stopped == "time" and 0 < r.step < 100_000
    assert load_checkpoint(tmp_path / "c.pt")["step"] == r.step


@needs_torch
def test_denoiser_is_eps_to_x0_at_nearest_step(torch):
    from specsched.unet.denoiser import UNetDenoiser

    class ConstantEps(torch.nn.Module):
        """eps_hat = c everywhere; records the steps it was called with."""

        def __init__(self, c):
            super().__init__()
            self.c, self.seen = c, []
            self.config = {"image_size": 4, "image_channels": 1}

        def forward(self, x, t):
            self.seen.append(float(t[0]))
            return torch.full_like(x, self.c)

    grid = training_alphas_cumprod("linear", 1000)
    model = ConstantEps(0.5)
    den = UNetDenoiser(model, grid)
    x = np.random.default_rng(0).standard_normal((3, 4, 4, 1))
    ab = 0.3
    np.testing.assert_allclose(den(x, ab), (x - np.sqrt(1 - ab) * 0.5) / np.sqrt(ab),
                               rtol=1e-6)
    assert model.seen == [float(nearest_training_timesteps([ab])[0])]
    clipped = UNetDenoiser(model, grid, clip_denoised=True)(10 * x, ab)
    assert np.abs(clipped).max() <= 1.0
    with pytest.raises(InputError, match="shape"):
        den(np.zeros((2, 5, 5, 1)), ab)


@needs_torch
def test_cli_train_sample_fid_end_to_end(torch, tmp_path, capsys):
    data = tmp_path / "images.npy"
    np.save(data, _images(64))
    ck = tmp_path / "m.pt"
    parser = _parser()
    args = parser.parse_args(
        ["train-unet", "--checkpoint", str(ck), "--data", str(data), "--image-size", "8",
         "--base-channels", "8", "--channel-mults", "1", "2", "--attention-resolutions",
         "4", "--batch-size", "8", "--steps", "3", "--warmup-steps", "1"])
    assert args.run(args) == 0
    assert '"step": 3' in capsys.readouterr().out
    out = tmp_path / "s.npy"
    args = parser.parse_args(["sample-unet", "--checkpoint", str(ck), "--schedule", "logsnr",
                              "--steps", "3", "--sampler", "ddpm", "--n", "20", "--out",
                              str(out), "--grid", str(tmp_path / "g.png")])
    assert args.run(args) == 0
    assert np.load(out).shape == (20, 8, 8, 1) and (tmp_path / "g.png").stat().st_size > 0
    args = parser.parse_args(["fid", "--samples", str(out), "--reference", str(data),
                              "--json", "--kid", "--kid-subsets", "5"])
    capsys.readouterr()
    assert args.run(args) == 0
    assert '"fd": ' in capsys.readouterr().out


@needs_torch
def test_unet_sweep_benchmark_smoke_and_resume(torch, tmp_path, capsys, monkeypatch):
    """benchmarks/unet_sweep.py end to end on a tiny 8 x 8 model in 2 spawned workers, then
    resumed in-process (no work)."""
    import importlib
    from pathlib import Path

    from specsched.data.sources import FASHION_MNIST_DIR
    from specsched.unet.train import train_unet

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    # importable by name, so spawned workers can unpickle its functions
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sweep = importlib.import_module("unet_sweep")
    ck = tmp_path / "tiny.pt"
    train_unet(TrainConfig(**TINY, steps=3), ck, images=_images(), progress=False)
    out = tmp_path / "res" / "sweep.csv"
    argv = ["--checkpoint", str(ck), "--steps", "2", "10", "--samplers", "ddim",
            "--schedules", "linear", "karras", "optimized-w2", "--seeds", "0", "1",
            "--n-samples", "12", "--batch-size", "12", "--out", str(out)]
    assert sweep.main([*argv, "--jobs", "2"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# python benchmarks/unet_sweep.py --checkpoint")
    import pandas as pd

    df = pd.read_csv(out, comment="#")
    assert len(df) == 6 and df["fd_pixels_mean"].notna().all()
    assert (df["predicted_w2_squared"] > 0).all()
    # optimised within the network's training grid (linear, T = 1000: 4.04e-5 .. 0.9999)
    opt = df[df["schedule"] == "optimized-w2"]["alphas_cumprod"].str.split()
    levels = np.array([float(v) for row in opt for v in row])
    assert levels.min() >= 4.03e-5 and levels.max() <= 0.99990001
    assert (tmp_path / "res" / "sweep_spearman.csv").is_file()
    floor = pd.read_csv(tmp_path / "res" / "sweep_floor.csv", comment="#")
    assert 0 < floor["fd_pixels_mean"].iloc[0] < df["fd_pixels_mean"].min()  # untrained net
    cmp = pd.read_csv(tmp_path / "res" / "sweep_vs_baselines.csv", comment="#")
    row = cmp[(cmp["steps"] == 10) & (cmp["baseline"] == "linear")].iloc[0]
    cell = df.set_index(["steps", "schedule"])["fd_pixels_mean"]
    assert row["pixels_diff"] == pytest.approx(cell[10, "optimized-w2"] - cell[10, "linear"],
                                               abs=1e-5 * cell[10, "linear"])
    assert (tmp_path / "res" / "sweep.png").is_file()
    assert (tmp_path / "res" / "sweep_S10_ddim_best.png").is_file()
    capsys.readouterr()
    assert sweep.main([*argv, "--jobs", "1"]) == 0
    assert "6 of 6 cells done already" in capsys.readouterr().out


def test_unet_sweep_spearman_and_paired_tables(monkeypatch):
    """Rank correlation with and without optimized-kl; paired differences over seeds."""
    import importlib
    from pathlib import Path

    import pandas as pd

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sweep = importlib.import_module("unet_sweep")
    names = ["linear", "cosine", "optimized-w2", "optimized-kl"]
    df = pd.DataFrame({
        "sampler": "ddim", "steps": 10, "schedule": names,
        "predicted_w2_squared": [2.0, 3.0, 1.0, 10.0],
        "fd_pixels_mean": [2.0, 1.0, 1.5, 9.0],  # cosine measured best
        "fd_pixels_seeds": ["2 2.5 1.5", "1 1 1", "1.5 1.7 1.3", "9 9 9"]})
    sp = sweep.spearman_table(df).set_index("steps")
    # with kl: ranks (2,3,1,4) vs (3,1,2,4) -> 0.4; without: (2,3,1) vs (3,1,2) -> -0.5
    assert sp.loc[10, "spearman_pixels"] == pytest.approx(0.4)
    assert sp.loc[10, "spearman_pixels_without_kl"] == pytest.approx(-0.5)
    cmp = sweep.compare_table(df).set_index(["optimized", "baseline"])
    d = np.array([1.5, 1.7, 1.3]) - np.array([2, 2.5, 1.5])
    row = cmp.loc[("optimized-w2", "linear")]
    assert row["pixels_diff"] == pytest.approx(d.mean())
    assert row["pixels_diff_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert row["pixels_ratio"] == pytest.approx(1.5 / 2.0)
