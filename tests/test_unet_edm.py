"""The EDM-preconditioned, noise-level-conditioned U-Net: training mode, loading, sampling.

A tiny network trains and resumes in seconds; with its output forced to 0 the denoiser is
``c_skip x``, the Wiener filter of isotropic data of variance ``sigma_data^2``, so sampling
with it reproduces the closed form of that spectrum (the same samplers' steps as the theory).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from specsched.errors import InputError  # noqa: E402
from specsched.sampling.ksamplers import sample_k  # noqa: E402
from specsched.theory.kclosed import kclosed_form  # noqa: E402
from specsched.unet.denoiser import EDMDenoiser  # noqa: E402
from specsched.unet.train import TrainConfig, train_unet  # noqa: E402

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), groups=4, batch_size=16, warmup_steps=2,
            checkpoint_every=2)


def images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, 8, 8, 1))).astype(np.float32)


def test_edm_training_resumes_to_the_same_weights(tmp_path):
    cfg = TrainConfig(**TINY, steps=4, preconditioning="edm")
    straight, split = tmp_path / "a.pt", tmp_path / "b.pt"
    train_unet(cfg, straight, images=images(), progress=False)
    train_unet(TrainConfig(**TINY, steps=2, preconditioning="edm"), split, images=images(),
               progress=False)
    r = train_unet(cfg, split, images=images(), resume=True, progress=False)
    assert r.step == 4 and np.isfinite(r.loss)
    a, b = (torch.load(p, weights_only=True) for p in (straight, split))
    for k in a["ema"]:
        torch.testing.assert_close(a["ema"][k], b["ema"][k], rtol=0, atol=0)
    lo, hi = a["sigma_range"]
    assert lo == pytest.approx(np.exp(-1.2 - 3.0902 * 1.2), rel=1e-3) and hi > 10.0
    with pytest.raises(InputError, match="cannot resume: the checkpoint has preconditioning"):
        train_unet(TrainConfig(**TINY, steps=6), split, images=images(), resume=True,
                   progress=False)


def test_a_zero_network_is_the_isotropic_wiener_filter_and_samples_its_closed_form(tmp_path):
    class Zero(torch.nn.Module):
        def forward(self, x, c_noise):
            return torch.zeros_like(x)

    sd = 0.5
    den = EDMDenoiser(Zero(), sd, (0.002, 80.0), (8, 8, 1))
    x = np.random.default_rng(0).standard_normal((3, 64))
    np.testing.assert_allclose(den(x, 2.0), sd**2 / (sd**2 + 4.0) * x, rtol=1e-12)
    sigmas = np.concatenate([np.geomspace(80.0, 0.01, 8), [0.0]])
    n = 4000
    out = sample_k(den, sigmas, "dpmpp-2m", n, 64, rng=np.random.default_rng(1))
    gen = kclosed_form(np.full(64, sd**2), sigmas, "dpmpp-2m")
    z = (out.var(axis=0, ddof=1) - gen.variance) / (gen.variance * np.sqrt(2.0 / (n - 1)))
    assert np.all(np.abs(z) < 4.5), z
    assert abs(np.mean(z)) < 4.5 / np.sqrt(64) * 2  # the 64 directions together


def test_bad_checkpoints_levels_and_shapes_are_refused(tmp_path):
    eps_ck = tmp_path / "eps.pt"
    train_unet(TrainConfig(**TINY, steps=1), eps_ck, images=images(), progress=False)
    with pytest.raises(InputError, match="preconditioning = 'eps', expected 'edm'"):
        EDMDenoiser.from_checkpoint(eps_ck)
    edm_ck = tmp_path / "edm.pt"
    train_unet(TrainConfig(**TINY, steps=1, preconditioning="edm"), edm_ck, images=images(),
               progress=False)
    den = EDMDenoiser.from_checkpoint(edm_ck)
    with pytest.raises(InputError, match="outside the range .*edm.pt was trained on"):
        den.check_sigmas([80.0, 1.0, 0.0])
    den.check_sigmas([10.0, 1.0, 0.01, 0.0])
    with pytest.raises(InputError, match="x: expected shape"):
        den(np.zeros((2, 60)), 1.0)
    with pytest.raises(InputError, match="preconditioning"):
        TrainConfig(preconditioning="v")
