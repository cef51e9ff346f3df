"""``specsched train-unet --preconditioning edm`` and ``sample-unet`` on its checkpoint.

A tiny EDM network trains through the command line in about a second; sample-unet runs it
with k-diffusion's samplers on the trained sigma range (the same draws as the library's
sampler), refuses schedules reaching outside that range and k-samplers for eps checkpoints
before writing anything, and with the network's output forced to 0 (the denoiser is then
``c_skip x``, the Wiener filter of N(0, sigma_data^2 I)) its samples have the closed form's
variance.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cli_helpers import refused, run  # noqa: E402

from specsched.sampling.ksamplers import sample_k  # noqa: E402
from specsched.schedules import Schedule, baseline_alphas_cumprod  # noqa: E402
from specsched.theory import evaluate_schedule  # noqa: E402
from specsched.theory.kclosed import kdiffusion_sigmas  # noqa: E402
from specsched.unet.denoiser import EDMDenoiser  # noqa: E402
from specsched.unet.train import TrainConfig, load_checkpoint, train_unet  # noqa: E402

#: Non-default EDM parameters, so that the test sees them reach the checkpoint and the
#: denoiser (sigma_data = 0.4 sets the zero network's Wiener filter).
SIGMA_DATA, P_MEAN, P_STD = 0.4, -1.0, 1.1
TINY_ARGS = ["--image-size", "8", "--base-channels", "8", "--channel-mults", "1", "2",
             "--batch-size", "8", "--steps", "2", "--warmup-steps", "1",
             "--checkpoint-every", "2"]
EDM_ARGS = ["--preconditioning", "edm", "--sigma-data", SIGMA_DATA, "--p-mean", P_MEAN,
            "--p-std", P_STD]


def trained_range():
    """The range the checkpoint must hold, from the configuration alone."""
    return TrainConfig(preconditioning="edm", sigma_data=SIGMA_DATA, p_mean=P_MEAN,
                       p_std=P_STD).trained_sigma_range()


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory):
    """``(folder, checkpoint, printed JSON record)`` of one CLI training run."""
    from specsched.cli import main

    folder = tmp_path_factory.mktemp("edm")
    data = folder / "images.npy"
    rng = np.random.default_rng(0)
    np.save(data, np.tanh(rng.standard_normal((64, 8, 8, 1))).astype(np.float32))
    ck = folder / "edm.pt"
    out, err = io.StringIO(), io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train-unet", "--checkpoint", str(ck), "--data", str(data), *TINY_ARGS,
                     *map(str, EDM_ARGS), "--sample-grid", str(folder / "grid.png")])
    out, err = out.getvalue(), err.getvalue()
    assert code == 0, err
    return folder, ck, json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def zero_ck(edm_run):
    """A copy of the EDM checkpoint whose network output F is exactly 0 (output conv zeroed)."""
    folder, ck, _ = edm_run
    state = torch.load(ck, weights_only=True)
    for weights in (state["model"], state["ema"]):
        for name in ("conv_out.weight", "conv_out.bias"):
            weights[name].zero_()
    path = folder / "zero.pt"
    torch.save(state, path)
    return path


def test_train_unet_edm_stores_the_preconditioning_and_trained_range(edm_run):
    folder, ck, record = edm_run
    want = trained_range()
    assert record["preconditioning"] == "edm" and record["step"] == 2
    np.testing.assert_allclose(record["sigma_range"], want, rtol=1e-15)
    stored = load_checkpoint(ck)
    cfg = stored["config"]
    assert cfg["preconditioning"] == "edm"
    assert (cfg["sigma_data"], cfg["p_mean"], cfg["p_std"]) == (SIGMA_DATA, P_MEAN, P_STD)
    np.testing.assert_allclose(stored["sigma_range"], want, rtol=1e-15)
    # exp(p_mean -+ z p_std) with z the 99.9 % normal quantile (3.0902), written out
    np.testing.assert_allclose(want, np.exp(P_MEAN + np.array([-1, 1]) * 3.090232 * P_STD),
                               rtol=1e-6)
    assert (folder / "grid.png").stat().st_size > 0


def test_sample_unet_edm_runs_a_k_sampler_on_the_trained_range(edm_run, tmp_path, capsys):
    _, ck, _ = edm_run
    out = tmp_path / "s.npy"
    code, text, err = run(["sample-unet", "--checkpoint", ck, "--sampler", "dpmpp-2m",
                           "--schedule", "karras", "--steps", "10", "--n", "20", "--out", out],
                          capsys)
    assert code == 0, err
    assert "edm, dpmpp-2m, S = 10" in text
    x = np.load(out)
    assert x.shape == (20, 8, 8, 1) and np.all(np.isfinite(x))
    # the same draws as the library's sampler on Karras levels within the trained range
    sigmas = kdiffusion_sigmas(baseline_alphas_cumprod("karras", 10, sigma_range=trained_range()))
    np.testing.assert_allclose(sigmas[[0, -2]], trained_range()[::-1], rtol=1e-12)
    want = sample_k(EDMDenoiser.from_checkpoint(ck), sigmas, "dpmpp-2m", 20, 64,
                    rng=np.random.default_rng(0))
    np.testing.assert_allclose(x.reshape(20, 64), want, rtol=1e-12, atol=0)


def test_sample_unet_refuses_levels_outside_the_trained_range(edm_run, tmp_path, capsys):
    _, ck, _ = edm_run
    lo, hi = trained_range()
    out = tmp_path / "s.npy"
    argv = ["sample-unet", "--checkpoint", ck, "--sampler", "dpmpp-2m", "--n", "4",
            "--out", out]
    # linear's levels reach sigma = 157 (alphas_cumprod 4.04e-5)
    code, _, err = run([*argv, "--schedule", "linear", "--steps", "10"], capsys)
    assert refused(code, err, "--schedule linear: noise levels from", "to 157.4",
                   "outside the range", f"edm.pt was trained on [{lo:.4g}, {hi:.4g}]")
    assert not out.exists()
    # a file of EDM's default range (0.002 to 80), with ddim as with a k-sampler
    path = tmp_path / "wide.json"
    Schedule(baseline_alphas_cumprod("karras", 6)).save(path)
    for sampler in ("dpmpp-2m", "ddim"):
        code, _, err = run(["sample-unet", "--checkpoint", ck, "--sampler", sampler, "--n", "4",
                            "--out", out, "--schedule", path], capsys)
        assert refused(code, err, "wide.json: noise levels from 0.002 to 80",
                       f"[{lo:.4g}, {hi:.4g}]")
        assert not out.exists()
    code, _, err = run([*argv, "--schedule", "karras", "--steps", "5", "--eta", "0.5"], capsys)
    assert refused(code, err, "--eta: sampler 'dpmpp-2m'", "has no eta")
    assert not out.exists()


def test_an_eps_checkpoint_refuses_k_samplers_naming_the_flag(tmp_path, capsys):
    ck = tmp_path / "eps.pt"
    rng = np.random.default_rng(0)
    train_unet(TrainConfig(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4,
                           batch_size=8, steps=1, warmup_steps=1),
               ck, images=np.tanh(rng.standard_normal((16, 8, 8, 1))).astype(np.float32),
               progress=False)
    out = tmp_path / "s.npy"
    code, _, err = run(["sample-unet", "--checkpoint", ck, "--sampler", "dpmpp-2m",
                        "--schedule", "karras", "--steps", "5", "--n", "4", "--out", out],
                       capsys)
    assert refused(code, err, "--sampler: 'dpmpp-2m'", "eps.pt is an eps checkpoint",
                   "it takes ddim, ddpm, ddpm-large, ddim-ve, ddpm-ve")
    assert not out.exists()
    code, _, err = run(["sample-unet", "--checkpoint", ck, "--sampler", "ddim", "--schedule",
                        "karras", "--steps", "5", "--n", "4", "--out", out], capsys)
    assert code == 0, err  # the eps path as before
    assert np.load(out).shape == (4, 8, 8, 1)


@pytest.mark.parametrize("sampler, eta", [("dpmpp-2m", None), ("ddim", None),
                                          ("euler-ancestral", 0.5)])
def test_a_zero_network_samples_the_closed_form_through_the_cli(zero_ck, tmp_path, capsys,
                                                                 sampler, eta):
    # F = 0: D(x, sigma) = c_skip x, the Wiener filter of N(0, sigma_data^2 I), so the
    # samples' law is the closed form of that spectrum on the same schedule and sampler
    n, steps, d = 2000, 8, 64
    out = tmp_path / "s.npy"
    code, _, err = run(["sample-unet", "--checkpoint", zero_ck, "--sampler", sampler,
                        "--schedule", "kl_optimal", "--steps", steps, "--n", n,
                        "--batch-size", n, "--seed", 3, "--out", out,
                        *(["--eta", eta] if eta is not None else [])], capsys)
    assert code == 0, err
    x = np.load(out).reshape(n, d)
    ab = baseline_alphas_cumprod("kl_optimal", steps, sigma_range=trained_range())
    th = evaluate_schedule(np.full(d, SIGMA_DATA**2), None, ab, sampler=sampler, eta=eta)
    assert np.ptp(th.variance) == 0.0 and not math.isclose(th.variance[0], SIGMA_DATA**2,
                                                           rel_tol=0.02)
    z_var = (x.var(axis=0, ddof=1) - th.variance) / (th.variance * np.sqrt(2.0 / (n - 1)))
    z_mean = x.mean(axis=0) / np.sqrt(th.variance / n)
    assert np.all(np.abs(z_var) < 4.5), z_var
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    # the 64 directions together: mean z is N(0, 1/64) under the closed form
    assert abs(z_var.mean()) < 4.5 / 8 and abs(z_mean.mean()) < 4.5 / 8
