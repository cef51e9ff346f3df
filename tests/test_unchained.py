"""DDIM on unchained levels (diffusers' DDIMScheduler) against its closed form."""

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.sampling import RunningMoments, WienerDenoiser, empirical_w2, step
from specsched.schedules import baseline_alphas_cumprod, spacing_indices, training_alphas_cumprod
from specsched.spectrum import load_spectrum
from specsched.theory import closed_form, evaluate_schedule
from specsched.theory.unchained import (
    diffusers_ddim_levels,
    diffusers_ddpm_closed_form,
    diffusers_ddpm_levels,
    evaluate_diffusers_ddpm,
    evaluate_unchained,
    unchained_closed_form,
)


@pytest.fixture(scope="module")
def patches():
    return load_spectrum("natural-patches")


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("S", [1, 7, 10])
def test_chained_levels_equal_evaluate_schedule(patches, eta, S):
    ab = baseline_alphas_cumprod("linear", S, spacing="trailing")
    lam, m = patches.eigenvalues, patches.mean  # nonzero mean: the mean recursion matters
    r1 = evaluate_schedule(lam, m, ab, sampler="ddim", eta=eta)
    r2 = evaluate_unchained(lam, m, ab, np.r_[1.0, ab[:-1]], eta=eta)
    for f in ("w2", "kl", "kl_data_gen", "kl_excluded"):
        assert getattr(r2, f) == pytest.approx(getattr(r1, f), rel=1e-12, abs=1e-12)
    for f in ("w2_terms", "kl_terms", "kl_data_gen_terms", "transfer", "variance"):
        np.testing.assert_allclose(getattr(r2, f), getattr(r1, f), rtol=1e-12, atol=1e-14)


def test_levels_follow_diffusers_rules():
    ab = training_alphas_cumprod("linear", 1000)
    a, ap, ts = diffusers_ddim_levels("linspace", 10)
    np.testing.assert_array_equal(ts, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])
    np.testing.assert_array_equal(a, ab[ts[::-1]])
    # prev_timestep = t - 100: lands on 899, 788, ..., 11, then -100 -> final alpha 1
    np.testing.assert_array_equal(ap, np.r_[1.0, ab[[11, 122, 233, 344, 455, 566, 677, 788, 899]]])
    for spacing in ("leading", "trailing"):  # S divides T: the steps chain
        a, ap, ts = diffusers_ddim_levels(spacing, 10)
        np.testing.assert_array_equal(ts[::-1], spacing_indices(spacing, 10))
        np.testing.assert_array_equal(ap, np.r_[1.0, a[:-1]])
    a, ap, _ = diffusers_ddim_levels("trailing", 3)  # 999, 666, 332: 666 - 333 = 333 != 332
    assert ap[1] != a[0]
    a, ap, ts = diffusers_ddim_levels("leading", 10, set_alpha_to_one=False, steps_offset=1)
    assert ts[-1] == 1 and ap[0] == ab[0]


def test_mean_recursion_differs_when_unchained(patches):
    a, ap, _ = diffusers_ddim_levels("linspace", 10)
    _, _, err = unchained_closed_form(patches.eigenvalues, patches.mean, a, ap)
    r = evaluate_schedule(patches.eigenvalues, patches.mean, a)
    assert np.all(np.isfinite(err)) and r.w2 > 0


def test_cifar10_linspace_numbers():
    c = load_spectrum("cifar10")
    a, ap, _ = diffusers_ddim_levels("linspace", 10)
    unchained = evaluate_unchained(c.eigenvalues, c.mean, a, ap).w2
    chained = evaluate_schedule(c.eigenvalues, c.mean, a).w2
    assert chained == pytest.approx(5.5886, abs=1e-4)  # docs/theory.md section 5
    assert unchained == pytest.approx(7.6434, abs=1e-4)  # measured; worse than chained


def test_bad_levels():
    lam = np.ones(3)
    with pytest.raises(InputError, match="a_land"):
        evaluate_unchained(lam, None, [0.5, 0.2], [0.4, 0.5], eta=1.0)
    with pytest.raises(InputError, match="a_denoise"):
        evaluate_unchained(lam, None, [1.5], [1.0])
    with pytest.raises(InputError, match="spacing"):
        diffusers_ddim_levels("cosine", 10)


def _numpy_unchained(den, a_den, a_land, x):
    """Reference run of the unchained levels with specsched's step (DDIM, eta = 0)."""
    for a, ap in zip(a_den[::-1], a_land[::-1], strict=True):
        x = step("ddim", x, den(x, float(a)), float(a), float(ap), 0.0, None)
    return x


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_diffusers_ddim_scheduler_matches_unchained_closed_form(patches, spacing):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    S, n = 10, 800
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=False, set_alpha_to_one=True,
                                    timestep_spacing=spacing)
    sched.set_timesteps(S)
    a_den, a_land, ts = diffusers_ddim_levels(spacing, S)
    np.testing.assert_array_equal(sched.timesteps.numpy(), ts)
    ab_sched = sched.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(a_den, ab_sched[ts[::-1]], rtol=2e-6)
    lam, m = patches.eigenvalues, patches.mean
    den = WienerDenoiser(lam, m)  # eigenbasis coordinates
    x_S = np.random.default_rng(3).standard_normal((n, lam.size))
    x = torch.from_numpy(x_S.copy())
    for t in sched.timesteps:
        a = float(ab_sched[int(t)])  # the scheduler's own alphas_cumprod[t]
        eps = (x.numpy() - np.sqrt(a) * den(x.numpy(), a)) / np.sqrt(1 - a)
        x = sched.step(torch.from_numpy(eps), t, x, eta=0.0).prev_sample
    x = x.numpy()
    # the same run in numpy (float32 levels of diffusers aside): sample by sample
    ref = _numpy_unchained(den, a_den, a_land, x_S)
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-4)
    mom = RunningMoments().partial_fit(x)
    emp = empirical_w2(mom.mean_, mom.variance_, n, lam, m)
    th = evaluate_unchained(lam, m, a_den, a_land)
    assert abs(emp.w2_squared_debiased - th.w2**2) < 4 * emp.se_w2_squared
    chained = evaluate_schedule(lam, m, a_den).w2
    if spacing == "linspace":
        assert abs(th.w2 - chained) > 10 * emp.se_w2  # the closed forms are told apart
    else:
        assert th.w2 == pytest.approx(chained, rel=1e-12)


# ---- diffusers' DDPMScheduler as it behaves -------------------------------------------------


@pytest.mark.parametrize("variance_type", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_diffusers_ddpm_scheduler_matches_its_closed_form(patches, monkeypatch, spacing,
                                                          variance_type):
    """DDPMScheduler.step with the Wiener denoiser, probed exactly through its noise draws.

    The output is affine in the start and in each noise draw: one run from x_S = 1 (mean 0,
    no noise) gives H, one per step with a unit draw there gives that noise's gain, one from
    x_S = 0 with the mean gives the mean. The scheduler's alphas_cumprod are set to float64
    (its own are float32 copies of the same grid, checked to 2e-6).
    """
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import diffusers.schedulers.scheduling_ddpm as ddpm_module

    S = 10
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=False, variance_type=variance_type,
                                    timestep_spacing=spacing)
    sched.set_timesteps(S)
    ab, ts = diffusers_ddpm_levels(spacing, S)
    np.testing.assert_array_equal(sched.timesteps.numpy(), ts)
    train = training_alphas_cumprod("linear", 1000)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), train, rtol=2e-6)
    sched.alphas_cumprod = torch.from_numpy(train)
    idx = np.linspace(0, patches.dimension - 1, 32).astype(int)
    lam, m = patches.eigenvalues[idx], patches.mean[idx]
    d = lam.size

    def run(mean, x, k):  # unit noise on the k-th draw only (k = -1: no noise)
        den = WienerDenoiser(lam, mean)
        draws = iter(range(S))
        monkeypatch.setattr(ddpm_module, "randn_tensor", lambda shape, **kw: torch.full(
            shape, 1.0 if next(draws) == k else 0.0, dtype=torch.float64))
        x = torch.from_numpy(x)
        for t in sched.timesteps:
            a = float(train[int(t)])
            eps = (x.numpy() - np.sqrt(a) * den(x.numpy(), a)) / np.sqrt(1 - a)
            x = sched.step(torch.from_numpy(eps), t, x).prev_sample
        return x.numpy()[0]

    zero, one = np.zeros((1, d)), np.ones((1, d))
    H = run(np.zeros(d), one, -1)
    variance = H**2 + sum(run(np.zeros(d), zero, k) ** 2 for k in range(S))
    mean_error = run(m, zero, -1) - m
    gen = diffusers_ddpm_closed_form(lam, ab, int(ts[-1]), variance_type)
    np.testing.assert_allclose(H, gen.transfer, rtol=1e-10)
    np.testing.assert_allclose(variance, gen.variance, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean_error, gen.mean_error(m), rtol=1e-9, atol=1e-12)
    ours = closed_form(lam, ab, sampler="ddpm" if variance_type == "fixed_small" else "ddpm-large")
    if variance_type == "fixed_large" and ts[-1] > 0:  # trailing: the last timestep is 99
        np.testing.assert_allclose(gen.variance - ours.variance, 1 - ab[0], rtol=1e-12)
    else:  # fixed_small, or a last timestep 0: exactly specsched's sampler
        np.testing.assert_allclose(gen.variance, ours.variance, rtol=1e-12)


def test_diffusers_ddpm_report_and_errors(patches):
    ab, ts = diffusers_ddpm_levels("trailing", 10)
    assert ts[-1] == 99 and np.all(np.diff(ab) < 0)
    r = evaluate_diffusers_ddpm(patches.eigenvalues, patches.mean, ab, int(ts[-1]))
    ho = evaluate_schedule(patches.eigenvalues, patches.mean, ab, sampler="ddpm-large")
    assert r.w2 > ho.w2
    np.testing.assert_allclose(r.transfer, ho.transfer, rtol=1e-12)
    same = evaluate_diffusers_ddpm(patches.eigenvalues, patches.mean, ab, 0)
    assert same.w2 == pytest.approx(ho.w2, rel=1e-12)
    with pytest.raises(InputError, match="variance_type"):
        diffusers_ddpm_closed_form(patches.eigenvalues, ab, 99, "learned")
    with pytest.raises(InputError, match="trailing.*61"):
        diffusers_ddpm_levels("trailing", 61)


def test_cifar10_ddpm_large_numbers():
    """The measured case of docs/export.md: diffusers' fixed_large against Ho et al.'s."""
    c = load_spectrum("cifar10")
    ab, ts = diffusers_ddpm_levels("trailing", 10)
    diffusers_w2 = evaluate_diffusers_ddpm(c.eigenvalues, c.mean, ab, int(ts[-1])).w2
    ho_w2 = evaluate_schedule(c.eigenvalues, c.mean, ab, sampler="ddpm-large").w2
    assert diffusers_w2 > 1.5 * ho_w2
