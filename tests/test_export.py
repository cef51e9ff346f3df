"""Exporters, the export command, and round trips through the real diffusers schedulers."""

import argparse
import json

import numpy as np
import pytest

from specsched.errors import InputError, OutputExistsError
from specsched.sampling import RunningMoments, WienerDenoiser, empirical_w2
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
)
from specsched.spectrum import load_spectrum
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
    assert info["scheduler_config"] is None and "trained_betas" in info["notes"][1]
    json.dumps(info)
    full = export_diffusers(training_alphas_cumprod("linear", 1000))
    assert full["timesteps"] == list(range(999, -1, -1)) and full["logsnr_rounding_error"] == 0
    np.testing.assert_allclose(full["scheduler_config"]["trained_betas"],
                               np.linspace(1e-4, 0.02, 1000), rtol=1e-9)


def test_duplicate_timesteps_rejected():
    with pytest.raises(InputError, match="round to training step"):
        export_diffusers([0.99990, 0.99989, 0.5])


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
    if fmt == "npy":
        got = np.load(out)
    elif fmt == "txt":
        got = np.loadtxt(out)
    else:
        got = np.array(json.loads(out.read_text())["sigmas"])
    np.testing.assert_array_equal(got, export_k_diffusion(AB))
    with pytest.raises(OutputExistsError):
        args.run(args)


def test_export_command_diffusers(tmp_path, capsys):
    f = tmp_path / "s.json"
    Schedule(training_alphas_cumprod("linear", 1000)).save(f)
    args = _parse(["export", str(f), "--to", "diffusers", "--out", str(tmp_path / "d")])
    assert args.run(args) == 0
    assert "DDIMScheduler ignores custom timesteps" in capsys.readouterr().err
    cfg = json.loads((tmp_path / "d" / "scheduler_config.json").read_text())
    assert len(cfg["trained_betas"]) == 1000
    d = json.loads((tmp_path / "d" / "diffusers_schedule.json").read_text())
    assert len(d["timesteps"]) == 1000


# ---- round trips through diffusers -------------------------------------------------------


@pytest.fixture(scope="module")
def patches():
    return load_spectrum("natural-patches")


def _w2_check(x, spectrum, theory_w2):
    mom = RunningMoments().partial_fit(x)
    emp = empirical_w2(mom.mean_, mom.variance_, x.shape[0], spectrum.eigenvalues,
                       spectrum.mean)
    z = (emp.w2_squared_debiased - theory_w2**2) / emp.se_w2_squared
    assert abs(z) < 4, (theory_w2, emp.w2_debiased, emp.se_w2)


def test_ddpm_scheduler_with_exported_timesteps(patches):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    info = export_diffusers(AB)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(timesteps=info["timesteps"])
    ab_sched = sched.alphas_cumprod.double().numpy()
    ab_run = ab_sched[np.array(info["timesteps"])[::-1]]
    np.testing.assert_allclose(ab_run, info["alphas_cumprod_run"], rtol=2e-6)
    lam, m = patches.eigenvalues, patches.mean
    den = WienerDenoiser(lam, m)  # eigenbasis coordinates
    n = 800
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((n, lam.size), generator=gen, dtype=torch.float64)
    for t in sched.timesteps:
        a = float(ab_sched[int(t)])
        xn = x.numpy()
        eps = (xn - np.sqrt(a) * den(xn, a)) / np.sqrt(1 - a)
        x = sched.step(torch.from_numpy(eps), t, x, generator=gen).prev_sample
    th = evaluate_schedule(lam, m, ab_run, sampler="ddpm")  # fixed_small = beta-tilde
    _w2_check(x.numpy(), patches, th.w2)


def test_euler_scheduler_with_exported_sigmas(patches):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    info = export_diffusers(AB)
    sched = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="linear")
    sched.set_timesteps(sigmas=info["sigmas"])
    sigmas = sched.sigmas.double().numpy()
    np.testing.assert_allclose(sigmas, info["sigmas"], rtol=1e-6)
    lam, m = patches.eigenvalues, patches.mean
    den = WienerDenoiser(lam, m)
    n = 800
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((n, lam.size), generator=gen, dtype=torch.float64) * sigmas[0]
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t).numpy()  # x / sqrt(1 + sigma^2): VP
        a = 1.0 / (1.0 + float(sched.sigmas[i]) ** 2)  # the level the scheduler runs at
        eps = (x_in - np.sqrt(a) * den(x_in, a)) / np.sqrt(1 - a)
        x = sched.step(torch.from_numpy(eps), t, x).prev_sample
    ab_run = 1.0 / (1.0 + sigmas[:-1][::-1] ** 2)
    th = evaluate_schedule(lam, m, ab_run, sampler="ddim-ve")  # Euler = DDIM in VE form
    _w2_check(x.numpy(), patches, th.w2)
