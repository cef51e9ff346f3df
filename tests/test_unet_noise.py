"""Coloured forward noise for the U-Net (specsched.unet.colour): the FFT colouring has
covariance C exactly, its sorted variances are noise_spectrum's, white training is the old
training, a coloured network trains, saves and samples, the coloured sampler matches the
closed form under that noise by Monte Carlo, and the refusals."""

import importlib.util

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.errors import InputError
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.spectrum import estimate_spectrum
from specsched.theory import evaluate_schedule
from specsched.theory.noise import noise_spectrum
from specsched.unet.colour import FourierColour, check_trainable_noise, fourier_colour
from specsched.unet.train import TrainConfig

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (optional extra unet)")

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), groups=4, batch_size=16, warmup_steps=2,
            checkpoint_every=2)


def _smooth_images(n=200, shape=(8, 8), seed=0):
    """Stationary-ish random fields with a decaying spectrum, (n, H, W, 1) float32."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    filt = 1.0 / (1.0 + 40.0 * (fx ** 2 + fy ** 2))
    z = np.fft.fft2(rng.standard_normal((n, *shape)), axes=(1, 2))
    x = np.real(np.fft.ifft2(z * filt, axes=(1, 2)))
    return np.tanh(x)[..., None].astype(np.float32)


def _dft_matrix(h, w):
    """The unitary 2-D DFT as a (h w, h w) matrix on row-major flattened images."""
    fh = np.fft.fft(np.eye(h), norm="ortho")
    fw = np.fft.fft(np.eye(w), norm="ortho")
    return np.kron(fh, fw)


@pytest.mark.parametrize("shape", [(8, 8), (6, 5)])
@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5"])
def test_fft_colouring_has_covariance_c_exactly(shape, spec):
    colour = fourier_colour(spec, _smooth_images(shape=shape))
    c = colour.variances
    d = c.size
    np.testing.assert_allclose(c, c[(-np.arange(shape[0])) % shape[0]][
        :, (-np.arange(shape[1])) % shape[1]], rtol=0, atol=0)  # c_f = c_{-f}
    assert abs(c.mean() - 1.0) < 1e-12 and c.min() > 0
    # C^(1/2) probed with unit vectors: row i is colour(e_i); C = M M^T
    m = colour.colour(np.eye(d).reshape(d, *shape), axes=(1, 2)).reshape(d, d)
    f = _dft_matrix(*shape)
    cov = f.conj().T @ np.diag(c.ravel()) @ f  # F^H diag(c) F
    np.testing.assert_allclose(np.abs(cov.imag).max(), 0.0, atol=1e-13)
    np.testing.assert_allclose(m @ m.T, cov.real, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m, m.T, atol=1e-13)  # C^(1/2) is symmetric


def test_colouring_axes_nhwc_and_monte_carlo():
    colour = fourier_colour("equal-snr", _smooth_images())
    rng = np.random.default_rng(3)
    n = 40_000
    x = colour.colour(rng.standard_normal((n, 8, 8, 1)))  # NHWC, image axes (1, 2)
    power = (np.abs(np.fft.fft2(x[..., 0], norm="ortho")) ** 2)
    est, se = power.mean(0), power.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(est - colour.variances) < 4 * se)  # 64 frequencies, 4 s.e.
    assert abs(est.sum() - colour.variances.sum()) < 3 * np.sqrt((se ** 2).sum())


@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5", "power:1.7"])
def test_sorted_variances_are_noise_spectrums(spec):
    x = _smooth_images(n=300)
    colour = fourier_colour(spec, x)
    lam = estimate_spectrum(x[..., 0].astype(np.float64), method="fourier").eigenvalues
    theory = noise_spectrum(spec, lam)
    assert colour.label == theory.label
    np.testing.assert_allclose(colour.sorted_variances, theory.variances, rtol=1e-10)


def test_white_and_refusals_of_the_noise_option():
    assert fourier_colour("white", _smooth_images()) is None
    assert fourier_colour("power:0", _smooth_images()) is None
    with pytest.raises(InputError, match="noise_spectrum: a network trains with"):
        check_trainable_noise("fans")
    with pytest.raises(InputError, match="GAMMA"):
        check_trainable_noise("power:3")
    with pytest.raises(InputError, match="noise_spectrum: .*eps preconditioning only"):
        TrainConfig(preconditioning="edm", noise_spectrum="equal-snr")
    TrainConfig(preconditioning="edm", noise_spectrum="power:0")  # white by another name
    with pytest.raises(InputError, match="single-channel"):
        fourier_colour("equal-snr", np.zeros((4, 8, 8, 3)))


class _StationaryWiener:
    """The exact denoiser of a zero-mean stationary Gaussian (power ``P`` per frequency)
    under the coloured forward noise ``c``, standing in for a network in :func:`sample_eps`."""

    def __init__(self, power, colour: FourierColour):
        self.power, self.colour = power, colour
        self.sample_shape = (*power.shape, 1)

    def __call__(self, x, a):
        c = self.colour.variances
        gain = np.sqrt(a) * self.power / (a * self.power + (1 - a) * c)
        w = self.power.shape[1] // 2 + 1
        f = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
        return np.fft.irfft2(gain[:, :w, None] * f, s=self.power.shape, axes=(1, 2),
                             norm="ortho")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_coloured_sampler_matches_closed_form_by_monte_carlo(sampler):
    from specsched.unet.denoiser import sample_eps

    fy, fx = np.fft.fftfreq(8)[:, None], np.fft.fftfreq(8)[None, :]
    power = 2.0 / (1.0 + 60.0 * (fx ** 2 + fy ** 2)) ** 1.5  # symmetric, decaying
    spec = noise_spectrum("equal-snr", power.ravel())  # the frequency-by-frequency rule
    den = _StationaryWiener(power, FourierColour(spec.label, spec.variances.reshape(8, 8)))
    ab = baseline_alphas_cumprod("linear", 6)
    n = 20_000
    x = sample_eps(den, ab, n, sampler=sampler, rng=np.random.default_rng(0), batch_size=5000)
    got = np.abs(np.fft.fft2(x[..., 0], norm="ortho")) ** 2
    # every direction's generated variance, in x, frequency by frequency (any order)
    var = evaluate_schedule(power.ravel(), None, ab, sampler=sampler, noise="equal-snr").variance
    se = got.std(0, ddof=1).ravel() / np.sqrt(n)
    assert abs(got.mean(0).ravel().sum() - var.sum()) < 3 * np.sqrt((se ** 2).sum())
    hi = np.sqrt(fx ** 2 + fy ** 2).ravel() > 0.3  # the high frequencies alone
    assert abs(got.mean(0).ravel()[hi].sum() - var[hi].sum()) < 3 * np.sqrt((se[hi] ** 2).sum())
    white = evaluate_schedule(power.ravel(), None, ab, sampler=sampler).variance
    assert abs(white[hi].sum() - var[hi].sum()) > 10 * np.sqrt((se[hi] ** 2).sum())  # can fail


@pytest.fixture
def torch():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


def _first_step_loss(torch, config, images, colour=None):
    """Ho et al.'s loss of the first training step, drawn independently of train_unet in the
    order it draws (init seed, then batch, steps, noise from a generator seeded seed + 1)."""
    from specsched.schedules import training_alphas_cumprod
    from specsched.unet.model import UNet

    torch.manual_seed(config.seed)
    model = UNet(**config.model_kwargs())
    gen = torch.Generator().manual_seed(config.seed + 1)
    data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    ab = training_alphas_cumprod("linear", 1000)
    idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=gen)
    t = torch.randint(0, 1000, (config.batch_size,), generator=gen)
    eps = torch.randn((config.batch_size, 1, 8, 8), generator=gen)
    if colour is not None:
        eps = colour.colour_torch(eps)
    sa = torch.from_numpy(np.sqrt(ab)).float()[t, None, None, None]
    s1 = torch.from_numpy(np.sqrt(1 - ab)).float()[t, None, None, None]
    xt = sa * data[idx] + s1 * eps
    with torch.no_grad():
        return float((model(xt, t.float()) - eps).square().mean())


@needs_torch
def test_white_training_is_the_old_training_and_colour_only_changes_eps(torch, tmp_path):
    from specsched.unet.train import load_checkpoint, train_unet

    images = _smooth_images(64)
    cfg = TrainConfig(**TINY, steps=3)
    a = train_unet(cfg, tmp_path / "a.pt", images=images, progress=False)
    assert a.loss_history[0] == (1, _first_step_loss(torch, cfg, images))  # bit for bit
    assert load_checkpoint(tmp_path / "a.pt")["noise_spectrum"] is None
    train_unet(TrainConfig(**TINY, steps=3, noise_spectrum="power:0"), tmp_path / "b.pt",
               images=images, progress=False)  # GAMMA = 0 is white: the same weights
    ka, kb = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for name, value in ka["model"].items():
        assert torch.equal(value, kb["model"][name]), name
    cfg = TrainConfig(**TINY, steps=3, noise_spectrum="equal-snr")
    c = train_unet(cfg, tmp_path / "c.pt", images=images, progress=False)
    colour = fourier_colour("equal-snr", images)
    assert c.loss_history[0] == (1, _first_step_loss(torch, cfg, images, colour))
    assert c.loss_history[0][1] != a.loss_history[0][1]


@needs_torch
def test_equal_snr_network_trains_saves_samples_and_refuses(torch, tmp_path, capsys):
    from specsched.unet.denoiser import UNetDenoiser, sample_eps
    from specsched.unet.train import load_checkpoint, train_unet

    images = _smooth_images(64)
    ck = tmp_path / "esnr.pt"
    train_unet(TrainConfig(**TINY, steps=2, noise_spectrum="equal-snr"), ck, images=images,
               progress=False)
    rec = load_checkpoint(ck)["noise_spectrum"]
    assert rec["label"] == "equal-snr"
    np.testing.assert_array_equal(rec["variances"].numpy(),
                                  fourier_colour("equal-snr", images).variances)
    den = UNetDenoiser.from_checkpoint(ck, batch_size=8)
    assert den.noise_label == "equal-snr"
    for sampler in ("ddim", "ddpm"):
        x = sample_eps(den, baseline_alphas_cumprod("linear", 3), 10, sampler=sampler,
                       rng=np.random.default_rng(0), batch_size=10)
        assert x.shape == (10, 8, 8, 1) and np.all(np.isfinite(x))
    with pytest.raises(InputError, match="VP samplers"):
        sample_eps(den, [0.9, 0.5], 2, sampler="ddim-ve", rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="eps preconditioning only"):
        train_unet(TrainConfig(**{**TINY, "preconditioning": "edm"}, steps=2,
                               noise_spectrum="equal-snr"), tmp_path / "e.pt", images=images)

    ab = baseline_alphas_cumprod("linear", 3)
    white_file = tmp_path / "white.json"
    Schedule(ab, sampler="ddim").save(white_file)
    esnr_file = tmp_path / "esnr.json"
    Schedule(ab, sampler="ddim", noise_spectrum="equal-snr").save(esnr_file)
    out = tmp_path / "s.npy"
    common = ["sample-unet", "--checkpoint", ck, "--n", "4", "--out", out]
    code, _, err = run([*common, "--schedule", white_file], capsys)
    assert refused(code, err, "noise_spectrum", "'white', not 'equal-snr'") and not out.exists()
    code, stdout, err = run([*common, "--schedule", esnr_file, "--sampler", "ddpm"], capsys)
    assert code == 0 and "equal-snr noise" in stdout and np.load(out).shape == (4, 8, 8, 1)
    code, _, err = run([*common, "--schedule", "linear", "--steps", "3", "--sampler",
                        "ddim-ve", "--force"], capsys)
    assert refused(code, err, "VP samplers")
    white_ck = tmp_path / "white.pt"
    train_unet(TrainConfig(**TINY, steps=1), white_ck, images=images, progress=False)
    code, _, err = run(["sample-unet", "--checkpoint", white_ck, "--n", "4", "--out",
                        tmp_path / "w.npy", "--schedule", esnr_file], capsys)
    assert refused(code, err, "'equal-snr', not 'white'")
    code, _, err = run(["train-unet", "--checkpoint", tmp_path / "f.pt", "--preconditioning",
                        "edm", "--noise-spectrum", "equal-snr"], capsys)
    assert refused(code, err, "eps preconditioning only")
    code, _, err = run(["train-unet", "--checkpoint", tmp_path / "f.pt", "--noise-spectrum",
                        "fans"], capsys)
    assert refused(code, err, "--noise-spectrum: a network trains with")


def _study(monkeypatch):
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("unet_noise_study")


def test_noise_study_paired_differences_and_verdicts(monkeypatch):
    import pandas as pd

    study = _study(monkeypatch)
    seeds = {"white": "2 2.5 1.5", "equal-snr": "1.5 1.7 1.3"}
    df = pd.DataFrame([dict(model=m, sampler="ddim", steps=10, **{
        f"{k}_seeds": s for k in study.METRICS}, **{
        f"{k}_mean": np.mean(np.array(s.split(), float)) for k in study.METRICS})
        for m, s in seeds.items()])
    p = study.paired(df).set_index("metric").loc["fd_pixels"]
    d = np.array([1.5, 1.7, 1.3]) - np.array([2, 2.5, 1.5])
    assert p["diff"] == pytest.approx(d.mean())
    assert p["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert p["ratio"] == pytest.approx(1.5 / 2.0)
    assert study.verdict(-0.5, 0.2) == "better" and study.verdict(0.5, 0.2) == "worse"
    assert study.verdict(-0.39, 0.2) == "tie"
    assert study.noise_label(0) == "white" and study.noise_label(1) == "equal-snr"
    assert study.noise_label(0.5) == "power:0.5"


def test_noise_study_gamma_search_finds_the_grid_minimum_or_better(monkeypatch):
    study = _study(monkeypatch)
    lam = 5.0 * np.arange(1, 17, dtype=float) ** -2.0  # a power law, 16 directions
    best, points = study.gamma_search(lam, np.zeros(16), 5, "ddim", (1e-4, 0.9999))
    grid = [points[g] for g in study.GAMMA_GRID]
    assert points[best] <= min(grid) and set(study.GAMMA_GRID) < set(points)
    assert 0.0 <= best <= 2.0
    white = study.optimised(lam, np.zeros(16), 5, "ddim", "white", (1e-4, 0.9999)).w2
    assert points[0.0] == pytest.approx(white)
