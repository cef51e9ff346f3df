"""Every recipe of docs/export.md, run in the real library with the exact Wiener denoiser.

Each recipe writes the export with the command (``specsched export``), runs diffusers 0.42 or
k-diffusion 0.1.1.post1 (``sampling.py`` through :func:`load_k_diffusion_sampling`) as
docs/export.md says, and returns what the library sampled next to what ``specsched evaluate
--json`` says of the exported file; the tests assert on it, and
``benchmarks/export_recipes.py`` runs the same recipes on CIFAR-10 for the table in
results/export_recipes.csv. Data here: 48 directions of the natural-patches spectrum, with its
mean, in the eigenbasis (where the denoiser is diagonal).

- Deterministic samplers are affine in the start: a run from ``x_S = 1`` with the mean set to
  0 gives the transfer function H, one from ``x_S = 0`` the output mean, hence the exact W2 of
  the library's output. k-diffusion computes in the input's float64: 1e-8 relative. diffusers'
  Euler and DPM-Solver steps cast the sample to float32 (``sample = sample.to(torch.float32)``,
  an upcast meant for half precision), so there the match is to float32 rounding: 5e-6.
- Stochastic samplers: Monte Carlo, debiased W2^2 within 3 standard errors.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from specsched.cli import main
from specsched.errors import InputError
from specsched.sampling import RunningMoments, WienerDenoiser, empirical_w2
from specsched.schedules import Schedule, baseline_alphas_cumprod, training_alphas_cumprod
from specsched.schedules.export import DIFFUSERS_FILE
from specsched.schedules.kdiffusion import load_k_diffusion_sampling
from specsched.spectrum import Spectrum, load_spectrum
from specsched.theory import closed_form
from specsched.theory.unchained import evaluate_unchained

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

RTOL_FLOAT32 = 5e-6  # diffusers' float32 steps
RTOL_FLOAT64 = 1e-8
N_MC = 20000


@dataclass
class Run:
    """What a library sampled on an exported schedule, and what ``evaluate`` says of it.

    ``library_w2`` is exact (probes) when ``se_w2_squared`` is None, else the debiased Monte
    Carlo estimate with the standard error of W2^2; ``others`` holds ``evaluate``'s W2 of the
    samplers the library does NOT follow (the traps).
    """

    recipe: str
    library: str
    scheduler: str
    sampler: str
    library_w2: float
    evaluate_w2: float
    w2_squared: float | None = None
    se_w2_squared: float | None = None
    others: dict = field(default_factory=dict)

    @property
    def z(self) -> float | None:
        if self.se_w2_squared is None:
            return None
        return (self.w2_squared - self.evaluate_w2**2) / self.se_w2_squared


@dataclass(frozen=True)
class Data:
    """A spectrum (``--spectrum`` argument, eigenvalues, mean) and a scratch folder."""

    spectrum: str
    lam: np.ndarray
    mean: np.ndarray
    tmp: Path

    @property
    def d(self) -> int:
        return self.lam.size


@pytest.fixture()
def data(tmp_path):
    p = load_spectrum("natural-patches")
    idx = np.linspace(0, p.dimension - 1, 48).astype(int)
    lam, m = p.eigenvalues[idx], p.mean[idx]
    Spectrum.from_eigenvalues(lam, mean=m, source="natural-patches[48]").save(tmp_path / "s.npz")
    return Data(str(tmp_path / "s.npz"), lam, m, tmp_path)


def cli(*argv):
    """Run ``specsched ARGV`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def export(*argv):
    code, out, err = cli("export", *argv)
    assert code == 0, err
    return out, err


def evaluate(data, *argv) -> float:
    """W2 that ``specsched evaluate --json`` gives for ARGV on the data's spectrum."""
    code, out, err = cli("evaluate", "--spectrum", data.spectrum, "--json", *argv)
    assert code == 0, err
    return json.loads(out)["w2"]


def exact_w2(run, data, start_std):
    """W2 of a deterministic sampler from its two probes (module docstring).

    ``run(mean, x_start)`` returns the library's output for denoiser mean ``mean`` and start
    ``x_start`` (shape (1, d)); the start is N(0, start_std^2).
    """
    H = run(np.zeros(data.d), np.ones((1, data.d)))[0]
    c = run(data.mean, np.zeros((1, data.d)))[0]
    return float(np.sqrt(np.sum((c - data.mean) ** 2
                                + (np.abs(H) * start_std - np.sqrt(data.lam)) ** 2)))


def mc_run(x, data, **fields):
    """A Run from samples ``x`` (n, d): the debiased W2 and its standard error."""
    mom = RunningMoments().partial_fit(x)
    emp = empirical_w2(mom.mean_, mom.variance_, x.shape[0], data.lam, data.mean)
    return Run(library_w2=emp.w2_debiased, w2_squared=emp.w2_squared_debiased,
               se_w2_squared=emp.se_w2_squared, **fields)


def eps_of(den, x, a):
    """The eps-prediction of the Wiener denoiser at level ``a`` (VP), numpy in and out."""
    return (x - np.sqrt(a) * den(x, a)) / np.sqrt(1.0 - a)


def read_info(folder):
    return json.loads((Path(folder) / DIFFUSERS_FILE).read_text())


# ---- the recipes ----------------------------------------------------------------------------


def recipe_ddpm(data, variance_type, n=N_MC, steps=10, seed=5):
    """DDPMScheduler(clip_sample=False).set_timesteps(timesteps=...): ddpm / diffusers-ddpm-large.

    ``fixed_large`` on a linear trailing schedule: its last timestep is 99, where diffusers adds
    noise on the final step and Ho et al.'s (specsched's ``ddpm-large``) does not.
    """
    out = data.tmp / f"ddpm-{variance_type}"
    spacing = "trailing" if variance_type == "fixed_large" else "linspace"
    baseline = "linear" if variance_type == "fixed_large" else "logsnr"
    export("--baseline", baseline, "--steps", steps, "--spacing", spacing, "--to", "diffusers",
           "--out", out, "--force")
    info = read_info(out)
    sched = diffusers.DDPMScheduler(**info["scheduler_args"], clip_sample=False,
                                    variance_type=variance_type)
    sched.set_timesteps(timesteps=info["timesteps"])
    ab = sched.alphas_cumprod.double().numpy()
    den = WienerDenoiser(data.lam, data.mean)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, data.d), generator=gen, dtype=torch.float64)
    for t in sched.timesteps:
        eps = eps_of(den, x.numpy(), float(ab[int(t)]))
        x = sched.step(torch.from_numpy(eps), t, x, generator=gen).prev_sample
    sampler = "ddpm" if variance_type == "fixed_small" else "diffusers-ddpm-large"
    other = "ddpm-large"  # Ho et al.'s large variance: no noise on the final step
    return mc_run(x.numpy(), data, recipe=f"ddpm-{variance_type}", library="diffusers",
                  scheduler=f"DDPMScheduler({variance_type}), {baseline}/{spacing} S={steps}",
                  sampler=sampler,
                  evaluate_w2=evaluate(data, "--schedule", out, "--sampler", sampler),
                  others={other: evaluate(data, "--schedule", out, "--sampler", other)})


def _dpm_solver(timesteps, lam, order=1):
    sched = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000,
                                                  beta_schedule="linear", solver_order=order)

    def run(mean, x):
        den = WienerDenoiser(lam, mean)
        sched.set_timesteps(timesteps=timesteps)  # also resets the step index
        x = torch.from_numpy(x)
        for i, t in enumerate(sched.timesteps):
            s = float(sched.sigmas[i])
            x = sched.step(torch.from_numpy(eps_of(den, x.numpy(), 1.0 / (1.0 + s * s))), t,
                           x).prev_sample
        return x.double().numpy()

    return run


def recipe_dpm_solver(data, steps=10):
    """DPMSolverMultistepScheduler(solver_order=1).set_timesteps(timesteps=...): ddim."""
    out = data.tmp / "dpm"
    export("--baseline", "logsnr", "--steps", steps, "--to", "diffusers", "--out", out,
           "--force")
    run = _dpm_solver(read_info(out)["timesteps"], data.lam)
    return Run("dpm-solver-1", "diffusers", f"DPMSolverMultistepScheduler(solver_order=1), "
               f"logsnr S={steps}", "ddim", exact_w2(run, data, 1.0),
               evaluate(data, "--schedule", out, "--sampler", "ddim"))


def recipe_ddim_overwrite(data, steps=25):
    """The trap: DDIMScheduler.set_timesteps(S), then .timesteps = the exported timesteps.

    Its step lands on ``t - T // S`` (the unchained closed form), not on the next exported
    timestep (DDIM on the exported levels, what the recipe above samples).
    """
    out = data.tmp / "ddim"
    export("--baseline", "logsnr", "--steps", steps, "--to", "diffusers", "--out", out,
           "--force")
    info = read_info(out)
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=False, set_alpha_to_one=True)

    def run(mean, x):
        den = WienerDenoiser(data.lam, mean)
        sched.set_timesteps(steps)
        sched.timesteps = torch.tensor(info["timesteps"])  # the overwrite
        ab = sched.alphas_cumprod.double().numpy()
        x = torch.from_numpy(x)
        for t in sched.timesteps:
            x = sched.step(torch.from_numpy(eps_of(den, x.numpy(), float(ab[int(t)]))), t,
                           x, eta=0.0).prev_sample
        return x.numpy()

    train = training_alphas_cumprod("linear", 1000)
    t = np.array(info["timesteps"])[::-1]  # step 1 first
    prev = t - 1000 // steps
    a_land = np.where(prev >= 0, train[np.clip(prev, 0, 999)], 1.0)
    return Run("ddim-overwrite", "diffusers", f"DDIMScheduler, .timesteps overwritten, logsnr "
               f"S={steps}", "ddim", exact_w2(run, data, 1.0),
               evaluate(data, "--schedule", out, "--sampler", "ddim"),
               others={"unchained": evaluate_unchained(data.lam, data.mean, train[t],
                                                       a_land).w2})


def _euler(sigmas, lam, spacing):
    sched = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                             timestep_spacing=spacing)

    def run(mean, x):
        den = WienerDenoiser(lam, mean)
        sched.set_timesteps(sigmas=sigmas)
        x = torch.from_numpy(x)  # a draw of N(0, init_noise_sigma^2)
        for i, t in enumerate(sched.timesteps):
            x_in = sched.scale_model_input(x, t).numpy()  # x / sqrt(1 + sigma^2): VP
            eps = eps_of(den, x_in, 1.0 / (1.0 + float(sched.sigmas[i]) ** 2))
            x = sched.step(torch.from_numpy(eps), t, x).prev_sample
        return x.double().numpy()

    sched.set_timesteps(sigmas=sigmas)
    return run, float(sched.init_noise_sigma)


def recipe_euler(data, spacing, ab_S=0.2, steps=8):
    """EulerDiscreteScheduler.set_timesteps(sigmas=...): ddim-ve, or ddim with 'leading'.

    ``init_noise_sigma`` is ``sigma_S`` for linspace/trailing and ``sqrt(sigma_S^2 + 1)`` for
    leading; a schedule ending at ``ab_S = 0.2`` (sigma_S = 2) tells the two apart.
    """
    f = data.tmp / "euler.json"
    Schedule(np.exp(np.linspace(np.log(0.999), np.log(ab_S), steps))).save(f, force=True)
    out = data.tmp / "euler"
    export(f, "--to", "diffusers", "--out", out, "--force")
    run, start = _euler(read_info(out)["sigmas"], data.lam, spacing)
    sampler, other = ("ddim", "ddim-ve") if spacing == "leading" else ("ddim-ve", "ddim")
    return Run(f"euler-{spacing}", "diffusers", f"EulerDiscreteScheduler({spacing}), "
               f"S={steps}, ab_S={ab_S}", sampler, exact_w2(run, data, start),
               evaluate(data, "--schedule", out, "--levels", "sigmas", "--sampler", sampler),
               others={other: evaluate(data, "--schedule", out, "--levels", "sigmas",
                                       "--sampler", other)})


def recipe_ascending_sigmas(data, steps=10):
    """The trap: ``--to sigmas`` (step 1 first, no final 0) given to set_timesteps(sigmas=)."""
    Schedule(baseline_alphas_cumprod("logsnr", steps)).save(data.tmp / "s.json", force=True)
    path = data.tmp / "sig.npy"
    out, _ = export(data.tmp / "s.json", "--to", "sigmas", "--out", path, "--force")
    assert "ascending" in out and "no final 0" in out
    run, start = _euler(np.load(path).tolist(), data.lam, "linspace")
    return Run("euler-ascending-sigmas", "diffusers", f"EulerDiscreteScheduler fed --to sigmas, "
               f"logsnr S={steps}", "ddim-ve", exact_w2(run, data, start),
               evaluate(data, "--schedule", path, "--levels", "sigmas", "--sampler", "ddim-ve"))


def _k_model(lam, mean):
    den = WienerDenoiser(lam, mean, param="ve")  # D(x, sigma), VE
    return lambda x, sigma: torch.from_numpy(den(x.numpy(), float(sigma[0])))


def _k_export(data, steps):
    path = data.tmp / "k-sigmas.npy"
    _, err = export("--baseline", "karras", "--steps", steps, "--to", "k-diffusion", "--out",
                    path, "--force")
    return path, torch.from_numpy(np.load(path)), err


def recipe_k_euler(data, k_sampling, steps=10):
    """k_diffusion.sampling.sample_euler on exported sigmas: ddim-ve."""
    path, sigmas, _ = _k_export(data, steps)

    def run(mean, x):
        return k_sampling.sample_euler(_k_model(data.lam, mean), torch.from_numpy(x), sigmas,
                                       disable=True).numpy()

    # the .npy descends and ends in 0: evaluate reads it as k-diffusion sigmas unasked
    return Run("k-euler", "k-diffusion", f"sample_euler, karras S={steps}", "ddim-ve",
               exact_w2(run, data, float(sigmas[0])),
               evaluate(data, "--schedule", path, "--sampler", "ddim-ve"))


def recipe_k_euler_ancestral(data, k_sampling, n=N_MC, steps=10, seed=7):
    """k_diffusion.sampling.sample_euler_ancestral on exported sigmas: ddpm-ve."""
    path, sigmas, _ = _k_export(data, steps)
    torch.manual_seed(seed)  # sample_euler_ancestral draws with torch.randn_like
    x = torch.randn((n, data.d), dtype=torch.float64) * sigmas[0]
    x = k_sampling.sample_euler_ancestral(_k_model(data.lam, data.mean), x, sigmas,
                                          disable=True).numpy()
    return mc_run(x, data, recipe="k-euler-ancestral", library="k-diffusion",
                  scheduler=f"sample_euler_ancestral, karras S={steps}", sampler="ddpm-ve",
                  evaluate_w2=evaluate(data, "--schedule", path, "--sampler", "ddpm-ve"))


@pytest.fixture()
def k_sampling():
    """k-diffusion's sampling.py, loaded as docs/export.md shows; skip when not installed."""
    try:
        return load_k_diffusion_sampling()
    except InputError as exc:  # not installed, or a module sampling.py imports is missing
        pytest.skip(str(exc))


# ---- the tests ------------------------------------------------------------------------------


def assert_matches(run: Run, rtol: float | None = None):
    if run.se_w2_squared is None:
        assert run.library_w2 == pytest.approx(run.evaluate_w2, rel=rtol), run
    else:
        assert abs(run.z) < 3, run


def test_ddpm_scheduler_fixed_small_is_ddpm(data):
    assert_matches(recipe_ddpm(data, "fixed_small"))


def test_ddpm_scheduler_fixed_large_is_diffusers_ddpm_large(data):
    run = recipe_ddpm(data, "fixed_large")
    assert_matches(run)
    ho = run.others["ddpm-large"]  # Ho et al.: no noise on the final step
    assert abs(run.w2_squared - ho**2) > 10 * run.se_w2_squared
    # the same closed form from the baseline's name, as DDPMScheduler.set_timesteps(10) runs it
    assert evaluate(data, "--schedule", "linear", "--steps", "10", "--spacing", "trailing",
                    "--sampler", "diffusers-ddpm-large") == pytest.approx(run.evaluate_w2,
                                                                          rel=1e-12)


def test_dpm_solver_order_1_on_timesteps_is_ddim(data):
    assert_matches(recipe_dpm_solver(data), RTOL_FLOAT32)


def test_dpm_solver_order_1_equals_diffusers_ddim_where_ddim_chains(data):
    """diffusers' own DDIMScheduler and DPM-Solver(order 1) on the same timesteps agree.

    ``leading`` spacing with S dividing T chains DDIM's steps (t - T // S is the next
    timestep), so DDIMScheduler runs plain DDIM there.
    """
    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                   clip_sample=False, set_alpha_to_one=True,
                                   timestep_spacing="leading")
    ddim.set_timesteps(10)
    timesteps = ddim.timesteps.tolist()
    assert timesteps == list(range(900, -1, -100))
    ab = ddim.alphas_cumprod.double().numpy()
    den = WienerDenoiser(data.lam, data.mean)
    x0 = np.random.default_rng(0).standard_normal((8, data.d))
    x = torch.from_numpy(x0)
    for t in ddim.timesteps:
        x = ddim.step(torch.from_numpy(eps_of(den, x.numpy(), float(ab[int(t)]))), t, x,
                      eta=0.0).prev_sample
    dpm = _dpm_solver(timesteps, data.lam)
    np.testing.assert_allclose(dpm(data.mean, x0), x.numpy(), rtol=2e-5, atol=2e-5)


def test_ddim_scheduler_with_overwritten_timesteps_samples_something_else(data):
    run = recipe_ddim_overwrite(data)
    assert run.library_w2 == pytest.approx(run.others["unchained"], rel=1e-4)
    assert abs(run.library_w2 - run.evaluate_w2) > 0.05 * run.evaluate_w2


@pytest.mark.parametrize("spacing", ["linspace", "trailing", "leading"])
def test_euler_scheduler_on_exported_sigmas(data, spacing):
    run = recipe_euler(data, spacing)
    assert_matches(run, RTOL_FLOAT32)
    (other,) = run.others.values()  # the sampler of the other start is told apart
    assert abs(run.library_w2 - other) > 1e-3 * run.library_w2


def test_ascending_sigmas_fed_to_euler_sample_nonsense(data):
    run = recipe_ascending_sigmas(data)
    assert run.library_w2 > 100 * run.evaluate_w2
    code, _, err = cli("evaluate", "--spectrum", data.spectrum, "--schedule",
                       data.tmp / "sig.npy", "--levels", "k-diffusion", "--sampler", "ddim-ve")
    assert code == 2 and "read it as sigmas" in err


def test_k_diffusion_euler_is_ddim_ve(data, k_sampling):
    _, _, err = _k_export(data, 10)
    assert "below the linear T=1000 training grid" in err  # karras' sigma_min = 0.002
    assert_matches(recipe_k_euler(data, k_sampling), RTOL_FLOAT64)


def test_k_diffusion_euler_ancestral_is_ddpm_ve(data, k_sampling):
    assert_matches(recipe_k_euler_ancestral(data, k_sampling))


def test_k_diffusion_euler_ancestral_noise_probes(data, k_sampling):
    """Exact variance through the ``noise_sampler`` hook: one probe per injected noise."""
    path, sigmas, _ = _k_export(data, 10)
    S = sigmas.numel() - 1
    model = _k_model(data.lam, np.zeros(data.d))

    def run(x, k):  # unit noise at step k only (k = -1: none)
        calls = iter(range(S))

        def noise(sigma, sigma_next):
            return torch.full((1, data.d), 1.0 if next(calls) == k else 0.0,
                              dtype=torch.float64)

        return k_sampling.sample_euler_ancestral(model, torch.from_numpy(x), sigmas,
                                                 disable=True, noise_sampler=noise).numpy()[0]

    H = run(np.ones((1, data.d)), -1)
    gains = [run(np.zeros((1, data.d)), k) for k in range(S)]
    variance = H**2 * float(sigmas[0]) ** 2 + np.sum(np.square(gains), axis=0)
    ab = 1.0 / (1.0 + np.load(path)[:-1][::-1] ** 2)
    np.testing.assert_allclose(variance, closed_form(data.lam, ab, sampler="ddpm-ve").variance,
                               rtol=1e-10)


@pytest.mark.parametrize("family, args", [
    ("linear", {"beta_schedule": "linear"}),
    ("scaled_linear", {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                       "beta_end": 0.012}),  # Stable Diffusion's; not diffusers' defaults
    ("cosine", {"beta_schedule": "squaredcos_cap_v2"}),
    ("sigmoid", {"beta_schedule": "sigmoid"})])
def test_scheduler_config_for_every_training_family(tmp_path, family, args):
    out = tmp_path / "exp"
    export("--baseline", family, "--steps", "1000", "--training-schedule", family, "--to",
           "diffusers", "--out", out)
    config = json.loads((out / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == args["beta_schedule"] and config["clip_sample"] is False
    ours = diffusers.DDPMScheduler.from_config(config)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, **args)
    # float32 in diffusers: cosine's last beta, 0.999, leaves ab ~2e-9 with ~1e-5 rounding
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), theirs.alphas_cumprod.numpy(),
                               rtol=5e-5)
    info = read_info(out)
    built = diffusers.DDPMScheduler(**info["scheduler_args"])  # the grid the file was rounded on
    np.testing.assert_allclose(built.alphas_cumprod.double().numpy(),
                               training_alphas_cumprod(family, 1000), rtol=5e-5)
    assert info["timesteps"] == list(range(999, -1, -1))
    assert info["logsnr_rounding_error"] == pytest.approx(0.0, abs=1e-9)
