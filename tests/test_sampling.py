"""The torch-free sampler against the closed form (docs/theory.md section 3), and its command.

The array sampler (``specsched.sampling.step``) and the closed form share each sampler's
definition, its update ``(p, r, q)``; what these Monte Carlo runs check is everything between
that definition and the closed form's numbers: the Wiener denoiser on samples (eigenbasis and
pixel space, VP and VE calling conventions), the start, the recursion and the mean term. The
updates themselves are checked against the papers' formulas written out independently in
test_samplers.py, and against diffusers' DDIMScheduler in test_unchained.py.
"""

import argparse
import json

import numpy as np
import pytest

from specsched.errors import InputError, OutputExistsError
from specsched.sampling import (
    GaussianMixtureDenoiser,
    RunningMoments,
    WienerDenoiser,
    empirical_w2,
    eps_from_x0,
    sample,
    sample_batches,
    x0_from_eps,
)
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.spectrum import load_spectrum
from specsched.theory import closed_form, evaluate_schedule

AB10 = baseline_alphas_cumprod("linear", 10)


def _mc_check(spectrum, sampler, n, seed, ab=AB10, eta=None, k=3.0):
    """Sample with the Wiener denoiser; compare W2^2 and per-direction variances."""
    den = WienerDenoiser.from_spectrum(spectrum)
    pixel = spectrum.eigenvectors is not None
    shape = spectrum.sample_shape if pixel else (spectrum.dimension,)
    x = sample(den, ab, n, shape, sampler=sampler, eta=eta, rng=np.random.default_rng(seed),
               batch_size=700, progress=False)
    assert x.shape == (n, *shape) and x.dtype == np.float64
    v = x.reshape(n, -1)
    if pixel:
        v = v @ spectrum.eigenvectors
    mom = RunningMoments().partial_fit(v[: n // 3]).partial_fit(v[n // 3:])
    emp = empirical_w2(mom.mean_, mom.variance_, n, spectrum.eigenvalues, spectrum.mean)
    th = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, ab, sampler=sampler, eta=eta)
    z = (emp.w2_squared_debiased - th.w2**2) / emp.se_w2_squared
    assert abs(z) < k, (sampler, th.w2, emp.w2_debiased, emp.se_w2)
    # per-direction variances: z-scores of an unbiased variance of n Gaussian samples
    keep = th.variance > 1e-12 * th.variance.max()
    zv = (mom.variance_[keep] - th.variance[keep]) / (th.variance[keep] * np.sqrt(2 / (n - 1)))
    d = zv.size
    assert abs(np.mean(zv**2) - 1.0) < 5 * np.sqrt(2.0 / d) + 0.05
    assert np.max(np.abs(zv)) < 6.0
    # per-direction means
    gen = closed_form(spectrum.eigenvalues, ab, sampler=sampler, eta=eta)
    mean_gen = spectrum.mean + gen.mean_error(spectrum.mean)
    zm = (mom.mean_[keep] - mean_gen[keep]) / np.sqrt(th.variance[keep] / n)
    assert np.max(np.abs(zm)) < 6.0
    return th.w2, emp


@pytest.fixture(scope="module")
def cifar10():
    return load_spectrum("cifar10")


@pytest.fixture(scope="module")
def patches():
    return load_spectrum("natural-patches")


#: Seeds of the Monte Carlo tests; each test was also run by hand with seeds 0-9.
SEED = 11


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "ddim-ve", "ddpm-ve", "ddpm-large"])
def test_w2_matches_closed_form_cifar10_eigenbasis(cifar10, sampler):
    _mc_check(cifar10, sampler, n=600, seed=SEED)


def test_ddim_eta_cifar10(cifar10):
    _mc_check(cifar10, "ddim", n=600, seed=SEED, eta=0.5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "ddpm-ve"])
def test_w2_matches_closed_form_natural_patches_pixel_space(patches, sampler):
    _mc_check(patches, sampler, n=500, seed=SEED)


def test_deterministic_samplers_are_the_linear_map(patches):
    """DDIM in VP and VE: each sample is exactly H x_S + mean terms (no Monte Carlo)."""
    lam, m = patches.eigenvalues, patches.mean
    den = WienerDenoiser(lam, m)  # eigenbasis coordinates
    for sampler, scale in (("ddim", 1.0), ("ddim-ve", np.sqrt((1 - AB10[-1]) / AB10[-1]))):
        x = sample(den, AB10, 5, (lam.size,), sampler=sampler, rng=np.random.default_rng(0),
                   progress=False)
        x_S = scale * np.random.default_rng(0).standard_normal((5, lam.size))
        gen = closed_form(lam, AB10, sampler=sampler)
        c_S = np.sqrt(AB10[-1]) if sampler == "ddim" else 1.0
        expected = gen.transfer * x_S + m * (1.0 - c_S * gen.transfer)
        np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-9)


def test_schedule_object_and_seed_reproducible(cifar10):
    den = WienerDenoiser.from_spectrum(cifar10)
    sched = Schedule(AB10, sampler="ddpm", eta=1.0)
    kw = dict(sampler="ddpm", progress=False, batch_size=3)
    a = sample(den, sched, 7, (cifar10.dimension,), rng=np.random.default_rng(1), **kw)
    b = sample(den, AB10, 7, (cifar10.dimension,), rng=np.random.default_rng(1), **kw)
    np.testing.assert_array_equal(a, b)


def test_sample_into_memmap(tmp_path):
    den = WienerDenoiser(np.array([2.0, 1.0, 0.1]))
    out = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64,
                                    shape=(10, 3))
    res = sample(den, AB10, 10, (3,), rng=np.random.default_rng(0), out=out, batch_size=4,
                 progress=False)
    assert res is out
    out.flush()
    ref = sample(den, AB10, 10, (3,), rng=np.random.default_rng(0), batch_size=4,
                 progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), ref)


def test_bad_input_messages():
    den = WienerDenoiser(np.array([1.0, 2.0]))
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="sampler"):
        sample(den, AB10, 2, (2,), sampler="euler-maruyama", rng=rng)
    with pytest.raises(InputError, match="sample_k"):  # k-diffusion's run elsewhere
        sample(den, AB10, 2, (2,), sampler="euler", rng=rng)
    with pytest.raises(InputError, match="alphas_cumprod"):
        sample(den, AB10[::-1], 2, (2,), rng=rng)
    with pytest.raises(InputError, match="out"):
        sample(den, AB10, 2, (2,), rng=rng, out=np.zeros((3, 2)))
    with pytest.raises(InputError, match="eta"):
        sample(den, AB10, 2, (2,), sampler="ddpm", eta=0.3, rng=rng)
    with pytest.raises(InputError, match="x: expected 2 values"):
        den(np.zeros((4, 3)), 0.5)
    with pytest.raises(InputError, match="sample_shape"):
        sample(den, AB10, 2, None, rng=rng)
    with pytest.raises(InputError, match="eta"):  # at the call, before any batch is asked for
        sample_batches(den, AB10, 2, (2,), sampler="ddpm", eta=0.3, rng=rng)


def test_eps_wrappers_round_trip():
    den = WienerDenoiser(np.array([3.0, 0.5, 0.01]), np.array([1.0, -1.0, 0.2]))
    x = np.random.default_rng(0).standard_normal((6, 3))
    back = x0_from_eps(eps_from_x0(den))
    np.testing.assert_allclose(back(x, 0.3), den(x, 0.3), rtol=1e-12, atol=1e-12)


def test_ve_denoiser_equals_vp_denoiser_rescaled(patches):
    vp = WienerDenoiser.from_spectrum(patches)
    ve = WienerDenoiser.from_spectrum(patches, param="ve")
    x = np.random.default_rng(0).standard_normal((4, *patches.sample_shape))
    ab = 0.3
    sigma = np.sqrt((1 - ab) / ab)
    np.testing.assert_allclose(ve(x, sigma), vp(np.sqrt(ab) * x, ab), rtol=1e-10, atol=1e-10)
    # and a VE denoiser drives a VP sampler to the same samples as the VP denoiser
    a = sample(vp, AB10, 5, patches.sample_shape, rng=np.random.default_rng(2), progress=False)
    b = sample(ve, AB10, 5, patches.sample_shape, rng=np.random.default_rng(2), progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_array_api_strict_namespace():
    xps = pytest.importorskip("array_api_strict")
    den = WienerDenoiser(np.array([2.0, 1.0, 0.1]), np.array([0.5, 0.0, -0.5]))
    ref = sample(den, AB10, 6, (3,), sampler="ddpm", rng=np.random.default_rng(0),
                 progress=False)
    got = sample(den, AB10, 6, (3,), sampler="ddpm", rng=np.random.default_rng(0), xp=xps,
                 progress=False)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)


# ---- Gaussian mixture ------------------------------------------------------------------


def _mixture():
    rng = np.random.default_rng(0)
    d = 3
    covs = []
    for _ in range(3):
        a = rng.standard_normal((d, d)) * 0.3
        covs.append(a @ a.T + 0.05 * np.eye(d))
    means = np.array([[2.0, 0.0, 1.0], [-2.0, 1.0, 0.0], [0.0, -2.0, -1.0]])
    return GaussianMixtureDenoiser([0.5, 0.3, 0.2], means, np.array(covs))


def test_mixture_denoiser_single_component_is_wiener():
    lam = np.array([2.0, 0.5, 0.1])
    U = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    m = np.array([0.3, -0.2, 1.0])
    wd = WienerDenoiser(lam, m, U)
    gm = GaussianMixtureDenoiser([1.0], (U @ m)[None], (U * lam) @ U.T[None])
    x = np.random.default_rng(2).standard_normal((5, 3))
    np.testing.assert_allclose(gm(x, 0.4), wd(x, 0.4), rtol=1e-10, atol=1e-10)


def test_mixture_denoiser_far_from_means_is_finite():
    gm = _mixture()
    x = np.full((2, 3), 1e4)
    assert np.all(np.isfinite(gm(x, 0.5)))


def test_mixture_samples_match_mixture():
    from scipy import stats

    gm = _mixture()
    # S = 1000: at S = 200 the DDPM discretisation bias is visible to KS with n = 4000
    ab = baseline_alphas_cumprod("linear", 1000)
    n = 4000
    x = sample(gm, ab, n, (3,), sampler="ddpm", rng=np.random.default_rng(8),
               batch_size=2000, progress=False)
    ref = gm.draw(200000, np.random.default_rng(80))
    mu = (gm.weights[:, None] * gm.means).sum(0)
    second = sum(w * (C + np.outer(m, m)) for w, m, C in
                 zip(gm.weights, gm.means, gm.covariances, strict=True))
    cov = second - np.outer(mu, mu)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mu) < 4 * se_mean)
    emp_cov = np.cov(x.T)
    se_cov = np.sqrt(np.var(((ref - mu)[:, :, None] * (ref - mu)[:, None, :]), axis=0) / n)
    assert np.all(np.abs(emp_cov - cov) < 4 * se_cov + 0.02 * np.abs(cov).max())
    # 1-D projection: KS test against exact mixture draws
    u = np.array([0.6, -0.3, 0.74])
    p = stats.ks_2samp(x @ u, ref @ u).pvalue
    assert p > 1e-3
    # and the mixture CDF directly on another direction
    u2 = np.array([0.0, 1.0, 0.0])
    s = np.sqrt(np.einsum("i,kij,j->k", u2, gm.covariances, u2))

    def cdf(t):
        return np.sum(gm.weights * stats.norm.cdf((t[:, None] - gm.means @ u2) / s), axis=1)

    assert stats.kstest(x @ u2, cdf).pvalue > 1e-3


# ---- command ----------------------------------------------------------------------------


def _parse(argv):
    from specsched.cli import sample as command

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    command.add_parser(sub)
    return ap.parse_args(argv)


def test_sample_command_report_and_no_overwrite(tmp_path, capsys):
    sched = tmp_path / "s.json"
    Schedule(AB10, sampler="ddim", eta=0.0).save(sched)
    out = tmp_path / "x.npy"
    argv = ["sample", "--schedule", str(sched), "--spectrum", "cifar10", "--n", "300",
            "--seed", "3", "--out", str(out), "--report", "--batch-size", "250"]
    args = _parse(argv)
    assert args.run(args) == 0
    rec = json.loads(capsys.readouterr().out)
    x = np.load(out)
    assert x.shape == (300, 3072)
    assert rec["w2_closed_form"] == pytest.approx(5.5886354714898, rel=1e-9)
    assert abs(rec["z_score_w2_squared"]) < 4
    assert set(rec) >= {"w2_empirical", "mc_standard_error_w2", "mc_error_method"}
    with pytest.raises(OutputExistsError):
        args.run(args)
    args = _parse(argv + ["--force", "--sampler", "ddpm"])
    with pytest.warns(UserWarning, match="made for the sampler 'ddim'; sampling it with 'ddpm'"):
        assert args.run(args) == 0
    assert json.loads(capsys.readouterr().out)["sampler"] == "ddpm"
