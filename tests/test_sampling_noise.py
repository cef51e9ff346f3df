"""Coloured forward noise in the torch-free samplers against its closed form (issue 15, item 4).

docs/theory.md section 9. The samplers draw ``C^(1/2) z`` (constant spectra: every sampler)
or run FANS' per-direction DDIM-eta steps, with the coloured Wiener denoiser; the closed form
they are checked against, ``evaluate_schedule(..., noise=...)``, is computed another way: the
constant spectra through the white closed form of ``y = x / sqrt(c)``, FANS through the
per-direction levels of ``specsched.theory.varying``. Each Monte Carlo check asserts W2^2 within
3 standard errors (``specsched.sampling.stats``) and every direction's variance and mean within
4.5 of theirs; and, so that the check has power, that the same samples are far (> 10 standard
errors in some direction) from the white closed form (FANS: also from the constant spectrum of
its band shape). Each check was also run by hand with seeds 0-9.
"""

import json

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.errors import InputError
from specsched.sampling import RunningMoments, WienerDenoiser, empirical_w2, sample, sample_batches
from specsched.sampling.ksamplers import WienerModel, sample_k, sample_k_batches
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.spectrum import Spectrum
from specsched.theory import closed_form, evaluate_schedule
from specsched.theory.kclosed import kclosed_form, kdiffusion_sigmas
from specsched.theory.ksolvers import resolve_options
from specsched.theory.noise import WHITE, NoiseSpectrum, noise_spectrum
from specsched.theory.samplers import get_sampler
from specsched.theory.varying import varying_closed_form

AB = baseline_alphas_cumprod("linear", 6)
N = 20000
SEED = 4
#: Constant spectra: 16 directions (4 x 4 images). FANS: 64, the smallest d whose 8 radial
#: bands all hold a direction (``specsched.theory.noise.fans_bands``).
D, D_FANS = 16, 64
DISCRETE = ["ddim", "ddpm", "ddpm-large", "ddim-ve", "ddpm-ve"]
KSAMPLERS = ["euler", "euler-ancestral", "dpmpp-2m-sde"]


def _gaussian(d):
    """A power-law spectrum ``4 / k^2`` (largest first) with a mean and random eigenvectors."""
    rng = np.random.default_rng(d)
    lam = 4.0 * (np.arange(d) + 1.0) ** -2.0
    U = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return lam, 0.3 * np.cos(np.arange(d)), U


def _generated_mean(lam, m, ns, sampler):
    """The closed form's mean of the samples in x (its ``GeneratedGaussian``)."""
    if ns.time_varying:
        return m + varying_closed_form(lam, AB, ns, sampler).mean_error(m)
    lam_y, m_y, c = ns.to_white(lam, m)
    if sampler in DISCRETE:
        gen = closed_form(lam_y, AB, sampler=sampler)
    else:
        gen = kclosed_form(lam_y, kdiffusion_sigmas(AB), sampler, resolve_options(sampler))
    return m + np.sqrt(c) * gen.mean_error(m_y)


def _made_for(noise):
    """A plain callable denoiser (the identity) that says which noise it was made for."""
    def denoise(x, level):
        return x
    denoise.noise = noise
    return denoise


def _z_variances(variance, want):
    return (variance - want) / (want * np.sqrt(2.0 / (N - 1)))


def _check(x, lam, m, ns, sampler, U=None, others=()):
    """Monte Carlo against the closed form under ``ns``, and power against ``others``."""
    v = x.reshape(N, -1) if U is None else x.reshape(N, -1) @ U
    mom = RunningMoments().partial_fit(v[: N // 3]).partial_fit(v[N // 3:])
    emp = empirical_w2(mom.mean_, mom.variance_, N, lam, m)
    th = evaluate_schedule(lam, m, AB, sampler=sampler, noise=ns)
    z = (emp.w2_squared_debiased - th.w2**2) / emp.se_w2_squared
    assert abs(z) < 3.0, (ns.label, sampler, th.w2, emp.w2_debiased, emp.se_w2)
    assert np.max(np.abs(_z_variances(mom.variance_, th.variance))) < 4.5
    zm = (mom.mean_ - _generated_mean(lam, m, ns, sampler)) / np.sqrt(th.variance / N)
    assert np.max(np.abs(zm)) < 4.5
    for other in (None, *others):  # the same samples against another noise's closed form
        wrong = evaluate_schedule(lam, m, AB, sampler=sampler, noise=other)
        assert np.max(np.abs(_z_variances(mom.variance_, wrong.variance))) > 10.0, other
    return z


# ---- Monte Carlo against the closed form --------------------------------------------------


@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5"])
@pytest.mark.parametrize("sampler", DISCRETE)
@pytest.mark.parametrize("pixel, param", [(False, "vp"), (True, "ve")])
def test_constant_colour_matches_the_closed_form(spec, sampler, pixel, param):
    # eigenbasis coordinates with a VP denoiser; pixel space (noise U sqrt(c) z) with a VE one
    lam, m, U = _gaussian(D)
    ns = noise_spectrum(spec, lam)
    den = WienerDenoiser(lam, m, U if pixel else None, param, noise=ns)
    x = sample(den, AB, N, (4, 4) if pixel else (D,), sampler=sampler, noise=ns,
               eigenvectors=U if pixel else None, rng=np.random.default_rng(SEED),
               batch_size=7000, progress=False)
    assert x.shape == (N, *((4, 4) if pixel else (D,))) and x.dtype == np.float64
    _check(x, lam, m, ns, sampler, U if pixel else None)


@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5"])
@pytest.mark.parametrize("sampler", KSAMPLERS)
def test_k_diffusion_samplers_under_constant_colour(spec, sampler):
    # euler deterministic, euler-ancestral independent draws, dpmpp-2m-sde a Brownian path
    lam, m, _ = _gaussian(D)
    ns = noise_spectrum(spec, lam)
    model = WienerDenoiser(lam, m, param="ve", noise=ns)
    x = sample_k(model, kdiffusion_sigmas(AB), sampler, N, D, rng=np.random.default_rng(SEED),
                 noise_spectrum=ns)
    _check(x, lam, m, ns, sampler)


@pytest.mark.parametrize("spec", ["fans", "fans:0.5"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("pixel", [False, True])
def test_fans_matches_the_per_direction_closed_form(spec, sampler, pixel):
    lam, m, U = _gaussian(D_FANS)
    ns = noise_spectrum(spec, lam)
    den = WienerDenoiser(lam, m, U if pixel else None, noise=ns)
    x = sample(den, AB, N, (8, 8) if pixel else (D_FANS,), sampler=sampler, noise=ns,
               eigenvectors=U if pixel else None, rng=np.random.default_rng(SEED),
               batch_size=7000, progress=False)
    # the level dependence matters: the band shape held constant is told apart too
    _check(x, lam, m, ns, sampler, U if pixel else None,
           others=(NoiseSpectrum("band shape, constant", ns.variances),))


def test_fans_with_ddim_eta_between_zero_and_one():
    lam, m, _ = _gaussian(D_FANS)
    ns = noise_spectrum("fans", lam)
    x = sample(WienerDenoiser(lam, m, noise=ns), AB, N, (D_FANS,), sampler="ddim", eta=0.5,
               noise=ns, rng=np.random.default_rng(SEED), progress=False)
    mom = RunningMoments().partial_fit(x)
    emp = empirical_w2(mom.mean_, mom.variance_, N, lam, m)
    th = evaluate_schedule(lam, m, AB, sampler="ddim", eta=0.5, noise=ns)
    assert abs(emp.w2_squared_debiased - th.w2**2) < 3.0 * emp.se_w2_squared
    assert np.max(np.abs(_z_variances(mom.variance_, th.variance))) < 4.5


# ---- the denoiser ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["equal-snr", "power:0.5", "fans"])
def test_coloured_denoiser_is_the_white_one_of_y(spec):
    # y = x / sqrt(c) is white noise on data lam / c: x0_hat = sqrt(c) y0_hat(y), at every
    # level (FANS: c of that level); VE at sigma is VP at ab = 1 / (1 + sigma^2); pixel space
    # is U (eigenbasis) U^T
    lam, m, U = _gaussian(D_FANS)
    ns = noise_spectrum(spec, lam)
    x = np.random.default_rng(1).normal(size=(5, D_FANS))
    for ab in (0.9, 0.3, 0.01):
        c = ns.at(ab)
        white_y = WienerDenoiser(lam / c, m / np.sqrt(c))
        want = np.sqrt(c) * white_y(x / np.sqrt(c), ab)
        np.testing.assert_allclose(WienerDenoiser(lam, m, noise=ns)(x, ab), want, rtol=1e-12,
                                   atol=1e-14)
        sigma = np.sqrt((1.0 - ab) / ab)
        ve = WienerDenoiser(lam, m, param="ve", noise=ns)
        np.testing.assert_allclose(ve(x / np.sqrt(ab), sigma), want, rtol=1e-12, atol=1e-14)
        pixel = WienerDenoiser(lam, m, U, noise=ns)
        np.testing.assert_allclose(pixel(x @ U.T, ab), want @ U.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(WienerDenoiser(lam, m, noise=ns).gain(ab),
                                   white_y.gain(ab), rtol=1e-13)


# ---- white noise is bit for bit what it was --------------------------------------------------


def test_white_noise_is_the_old_sampler_bit_for_bit():
    # DDPM's loop written out (start, then one draw per step, the Wiener filter, the update):
    # what the sampler drew before coloured noise existed, with every way of saying "white"
    lam, m, U = _gaussian(D)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((300, D))
    update = get_sampler("ddpm").update
    for s in range(AB.size, 0, -1):
        a, ap = float(AB[s - 1]), 1.0 if s == 1 else float(AB[s - 2])
        g = np.sqrt(a) * lam / (a * lam + (1.0 - a))
        x0_hat = m + g * (x - np.sqrt(a) * m)
        p, r, q = (float(v) for v in update(a, ap, 1.0))
        z = rng.standard_normal((300, D))
        x = p * x0_hat + r * x
        x = x + np.sqrt(q) * z if q > 0.0 else x
    runs = [sample(WienerDenoiser(lam, m, noise=noise), AB, 300, (D,), sampler="ddpm",
                   noise=given, rng=np.random.default_rng(SEED), progress=False)
            for noise, given in [(None, None), (WHITE, WHITE), (None, WHITE),
                                 (noise_spectrum("power:0", lam), None)]]
    for y in runs:
        assert np.array_equal(y, x)
    # k-diffusion's samplers: the white noise spectrum changes no draw
    sig = kdiffusion_sigmas(AB)
    want = sample_k(WienerModel(lam, m), sig, "dpmpp-2m-sde", 300, D,
                    rng=np.random.default_rng(SEED))
    got = sample_k(WienerModel(lam, m), sig, "dpmpp-2m-sde", 300, D,
                   rng=np.random.default_rng(SEED), noise_spectrum=WHITE)
    assert np.array_equal(got, want)


def test_batches_are_one_stream():
    # batch after batch from one generator: the first batch of a run is the run of its size
    lam, m, U = _gaussian(D)
    ns = noise_spectrum("equal-snr", lam)
    den = WienerDenoiser(lam, m, U, noise=ns)
    whole = sample(den, AB, 50, (4, 4), sampler="ddpm", noise=ns, eigenvectors=U,
                   rng=np.random.default_rng(0), batch_size=50, progress=False)
    first = next(sample_batches(den, AB, 80, (4, 4), sampler="ddpm", noise=ns, eigenvectors=U,
                                rng=np.random.default_rng(0), batch_size=50, progress=False))
    assert first[0] == 0 and np.array_equal(first[1], whole)


@pytest.mark.parametrize("spec", ["equal-snr", "fans"])
def test_array_api_namespace_draws_the_same_coloured_samples(spec):
    xps = pytest.importorskip("array_api_strict")
    lam, m, U = _gaussian(D_FANS)
    ns = noise_spectrum(spec, lam)
    den = WienerDenoiser(lam, m, U, noise=ns)
    kw = dict(sampler="ddpm", noise=ns, eigenvectors=U, progress=False)
    ref = sample(den, AB, 6, (8, 8), rng=np.random.default_rng(0), **kw)
    got = sample(den, AB, 6, (8, 8), rng=np.random.default_rng(0), xp=xps, **kw)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)


# ---- refusals -------------------------------------------------------------------------------


def test_a_denoiser_made_for_another_noise_is_refused():
    lam, m, U = _gaussian(D)
    eq, half = noise_spectrum("equal-snr", lam), noise_spectrum("power:0.5", lam)
    kw = dict(rng=np.random.default_rng(0), progress=False)
    cases = [(WienerDenoiser(lam, m), eq, "drawn under the forward noise 'equal-snr', but the "
              "denoiser was made for 'white'"),
             (WienerDenoiser(lam, m, noise=eq), None, "'white', but the denoiser was made for "
              "'equal-snr'"),
             (WienerDenoiser(lam, m, noise=eq), half, "'power:0.5', but the denoiser was made "
              "for 'equal-snr'"),
             (lambda x, ab: x, eq, "made for 'white'")]  # a plain callable: white
    for den, noise, needle in cases:
        with pytest.raises(InputError, match="^noise: ") as exc:
            sample_batches(den, AB, 10, (D,), noise=noise, **kw)
        assert needle in str(exc.value)
    with pytest.raises(InputError, match="made for 'white'"):  # WienerModel is white
        sample_k(WienerModel(lam, m), kdiffusion_sigmas(AB), "euler", 10, D, noise_spectrum=eq)


def test_what_coloured_noise_cannot_do_is_refused():
    lam, m, U = _gaussian(D_FANS)
    eq, fans = noise_spectrum("equal-snr", lam), noise_spectrum("fans", lam)
    kw = dict(rng=np.random.default_rng(0), progress=False)
    for sampler in ("ddpm-large", "ddim-ve", "ddpm-ve"):  # FANS: DDIM-eta only
        with pytest.raises(InputError, match="not '" + sampler):
            sample_batches(WienerDenoiser(lam, m, noise=fans), AB, 10, (D_FANS,),
                           sampler=sampler, noise=fans, **kw)
    with pytest.raises(InputError, match="changes with the level.*not 'euler'"):
        sample_k(WienerDenoiser(lam, m, param="ve", noise=fans), kdiffusion_sigmas(AB),
                 "euler", 10, D_FANS, noise_spectrum=fans)
    with pytest.raises(InputError, match="^eigenvectors: the denoiser works in pixel space"):
        sample_batches(WienerDenoiser(lam, m, U, noise=eq), AB, 10, (8, 8), noise=eq, **kw)
    with pytest.raises(InputError, match="^eigenvectors: the denoiser works in the eigenbasis"):
        sample_batches(WienerDenoiser(lam, m, noise=eq), AB, 10, (D_FANS,), noise=eq,
                       eigenvectors=U, **kw)
    with pytest.raises(InputError, match=r"^eigenvectors: expected shape \(64, 64\)"):
        sample_batches(_made_for(eq), AB, 10, (D_FANS,), noise=eq, eigenvectors=U[:4], **kw)
    with pytest.raises(InputError, match="^noise: expected a NoiseSpectrum"):
        sample_batches(WienerDenoiser(lam, m), AB, 10, (D_FANS,), noise="equal-snr", **kw)
    with pytest.raises(InputError, match="^noise: expected a NoiseSpectrum"):
        WienerDenoiser(lam, m, noise="equal-snr")
    short = noise_spectrum("equal-snr", lam[:16])
    with pytest.raises(InputError, match="has 16 variances, the data spectrum 64 directions"):
        WienerDenoiser(lam, m, noise=short)
    with pytest.raises(InputError, match="has 16 variances, the data spectrum 64 directions"):
        sample_batches(_made_for(short), AB, 10, (D_FANS,), noise=short, **kw)
    with pytest.raises(InputError, match="has 64 variances, the data spectrum 16 directions"):
        sample_k_batches(WienerDenoiser(lam, m, param="ve", noise=eq), kdiffusion_sigmas(AB),
                         "euler", 10, 16, rng=np.random.default_rng(0), noise_spectrum=eq)


# ---- the command ----------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path):
    """``(spectrum, its .npz, a function writing a schedule file made for a noise)``."""
    lam, m, U = _gaussian(D)
    spectrum = Spectrum(lam, mean=m, eigenvectors=U, sample_shape=(4, 4), source="power-16")
    path = tmp_path / "spec.npz"
    spectrum.save(path)

    def schedule(noise="white", sampler="ddim", name="s.json"):
        Schedule(AB, sampler=sampler, noise_spectrum=noise).save(tmp_path / name)
        return tmp_path / name

    return spectrum, path, schedule


@pytest.mark.parametrize("spec, sampler", [("equal-snr", "ddpm"), ("power:0.5", "ddim"),
                                           ("equal-snr", "euler-ancestral"),
                                           ("power:0.5", "dpmpp-2m-sde"), ("file", "ddpm-large")])
def test_sample_command_reports_the_coloured_closed_form(tmp_path, capsys, files, spec,
                                                          sampler):
    spectrum, path, schedule = files
    lam, m = spectrum.eigenvalues, spectrum.mean
    if spec == "file":  # variances used as given, recorded by their sha256
        spec = str(tmp_path / "c.npy")
        np.save(spec, np.linspace(2.0, 0.25, D))
    ns = noise_spectrum(spec, lam)
    out = tmp_path / "x.npy"
    code, stdout, err = run(["sample", "--schedule", schedule(ns.label, sampler), "--spectrum",
                             path, "--noise-spectrum", spec, "--n", N, "--batch-size", 6000,
                             "--seed", SEED, "--out", out, "--report"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    assert (rec["noise_spectrum"], rec["sampler"], rec["space"]) == (ns.label, sampler, "pixel")
    want = evaluate_schedule(lam, m, AB, sampler=sampler, noise=ns)
    assert rec["w2_closed_form"] == pytest.approx(want.w2, rel=1e-12)
    assert abs(rec["z_score_w2_squared"]) < 3.0, rec
    white = evaluate_schedule(lam, m, AB, sampler=sampler)
    assert abs(rec["w2_closed_form"] - white.w2) > 5 * rec["mc_standard_error_w2"]
    x = np.load(out)
    assert x.shape == (N, 4, 4)
    _check(x, lam, m, ns, sampler, spectrum.eigenvectors)


def test_sample_command_fans(tmp_path, capsys):
    lam, m, U = _gaussian(D_FANS)
    path = tmp_path / "spec.npz"
    Spectrum(lam, mean=m, eigenvectors=U, sample_shape=(8, 8)).save(path)
    ns = noise_spectrum("fans", lam)
    Schedule(AB, sampler="ddpm", noise_spectrum=ns.label).save(tmp_path / "s.json")
    out = tmp_path / "x.npy"
    code, stdout, err = run(["sample", "--schedule", tmp_path / "s.json", "--spectrum", path,
                             "--noise-spectrum", "fans", "--n", N, "--seed", SEED, "--out", out,
                             "--report"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    assert rec["noise_spectrum"] == "fans:1.0" and abs(rec["z_score_w2_squared"]) < 3.0, rec
    assert rec["w2_closed_form"] == pytest.approx(
        evaluate_schedule(lam, m, AB, sampler="ddpm", noise=ns).w2, rel=1e-12)


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m-sde"])
def test_sample_command_in_the_eigenbasis_of_a_fourier_model(tmp_path, capsys, sampler):
    # the Fourier model keeps no eigenvectors: coloured samples in its eigenbasis, (n, d)
    lam, m, _ = _gaussian(D)
    Spectrum(lam, mean=m, method="fourier", sample_shape=(4, 4)).save(tmp_path / "f.npz")
    Schedule(AB, sampler=sampler, noise_spectrum="equal-snr").save(tmp_path / "s.json")
    out = tmp_path / "x.npy"
    code, stdout, err = run(["sample", "--schedule", tmp_path / "s.json", "--spectrum",
                             tmp_path / "f.npz", "--noise-spectrum", "equal-snr", "--n", N,
                             "--seed", SEED, "--out", out, "--report"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    assert rec["space"] == "eigenbasis" and abs(rec["z_score_w2_squared"]) < 3.0, rec
    x = np.load(out)
    assert x.shape == (N, D)
    _check(x, lam, m, noise_spectrum("equal-snr", lam), sampler)


def test_white_flag_writes_the_same_file(tmp_path, capsys, files):
    _, path, schedule = files
    for sampler in ("ddpm", "euler-ancestral"):
        outs = [tmp_path / f"{sampler}-{i}.npy" for i in range(2)]
        for out, flags in zip(outs, [[], ["--noise-spectrum", "white"]], strict=True):
            code, _, err = run(["sample", "--schedule", schedule(sampler=sampler,
                                                                  name=out.stem + ".json"),
                                "--spectrum", path, "--n", 400, "--batch-size", 150, "--out",
                                out, *flags], capsys)
            assert code == 0, err
        assert outs[0].read_bytes() == outs[1].read_bytes()


def test_sample_command_refuses_a_schedule_made_for_another_noise(tmp_path, capsys, files):
    _, path, schedule = files
    lam, m, U = _gaussian(D_FANS)  # FANS on 64 directions
    Spectrum(lam, mean=m, eigenvectors=U, sample_shape=(8, 8)).save(tmp_path / "spec64.npz")
    out = tmp_path / "x.npy"
    white = schedule("white")
    cases = [
        (white, ["--noise-spectrum", "equal-snr"],
         ("s.json: noise_spectrum: the schedule was made for the forward noise 'white', not "
          "'equal-snr'",)),
        (schedule("equal-snr", name="eq.json"), [],
         ("eq.json: noise_spectrum:", "made for the forward noise 'equal-snr', not 'white'")),
        (schedule("power:0.5", name="p.json"), ["--noise-spectrum", "power:0.25"],
         ("not 'power:0.25'",)),
        (schedule("fans:1.0", name="f.json"), ["--noise-spectrum", "fans", "--sampler", "euler",
                                               "--spectrum", tmp_path / "spec64.npz"],
         ("sampler: under the noise spectrum fans:1.0", "not 'euler'")),
        (schedule("fans:1.0", name="g.json"), ["--noise-spectrum", "fans", "--sampler",
                                               "ddim-ve", "--spectrum", tmp_path / "spec64.npz"],
         ("not 'ddim-ve'",)),
        (white, ["--noise-spectrum", "power:3"], ("GAMMA must be a number in [0, 2]",)),
        (white, ["--noise-spectrum", "nope"], ("--noise-spectrum: expected one of white",)),
    ]
    made = sorted(p.name for p in tmp_path.iterdir())
    for sched, flags, needles in cases:
        code, _, err = run(["sample", "--schedule", sched, "--spectrum", path, "--n", 100,
                            "--out", out, *flags], capsys)
        assert refused(code, err, *needles)
        assert sorted(p.name for p in tmp_path.iterdir()) == made  # nothing written
