"""``specsched sample`` with k-diffusion's samplers (and diffusers' unipc), issue 13.

The command runs the steps of ``specsched.theory.ksolvers`` on samples
(``specsched.sampling.ksamplers``) in the eigenbasis and rotates them to pixel space. What is
checked here: the samples' W2 against the closed form of the sampler they were drawn with
(Monte Carlo z-scores, with the power to tell the wrong sampler's or option's closed form
apart), the file against a direct ``sample_k`` run on the same random stream (batching,
rotation, mean, layout), the schedule file's sampler and eta as the default, and the refusals.
"""

import json

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.sampling.ksamplers import WienerModel, sample_k
from specsched.sampling.stats import RunningMoments, empirical_w2
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.spectrum import Spectrum
from specsched.theory import evaluate_schedule
from specsched.theory.kclosed import kdiffusion_sigmas
from specsched.theory.ksolvers import KSAMPLERS

AB = baseline_alphas_cumprod("karras", 6)
D = 16


def _spectrum() -> Spectrum:
    """A random 16-dimensional Gaussian with a mean and eigenvectors, samples of shape 4 x 4."""
    rng = np.random.default_rng(0)
    lam = rng.lognormal(0.0, 1.5, D)
    U = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return Spectrum(lam, mean=rng.normal(0.0, 0.5, D), eigenvectors=U, sample_shape=(4, 4),
                    source="random-16")


@pytest.fixture()
def files(tmp_path):
    """``(spectrum, its .npz, a function writing a schedule file made for a sampler)``."""
    spectrum = _spectrum()
    path = tmp_path / "spec.npz"
    spectrum.save(path)

    def schedule(sampler, eta=None, name="s.json"):
        Schedule(AB, sampler=sampler, eta=eta).save(tmp_path / name)
        return tmp_path / name

    return spectrum, path, schedule


def _moments(x, spectrum):
    """Eigenbasis mean and variance of pixel samples (n, 4, 4), and ``empirical_w2``."""
    v = x.reshape(x.shape[0], -1) @ spectrum.eigenvectors
    mom = RunningMoments().partial_fit(v)
    return empirical_w2(mom.mean_, mom.variance_, x.shape[0], spectrum.eigenvalues,
                        spectrum.mean)


def _z(emp, w2):
    return (emp.w2_squared_debiased - w2**2) / emp.se_w2_squared


@pytest.mark.parametrize("sampler", sorted(KSAMPLERS))
def test_report_agrees_with_the_closed_form_of_the_sampler(tmp_path, capsys, files, sampler):
    # dpmpp-2m deterministic, euler-ancestral iid noise, dpmpp-sde Brownian, and the others;
    # 20000 samples in four batches, written one after the other
    spectrum, spec, schedule = files
    out = tmp_path / "x.npy"
    code, stdout, err = run(["sample", "--schedule", schedule(sampler), "--spectrum", spec,
                             "--n", "20000", "--batch-size", "6000", "--seed", "1", "--out",
                             out, "--report"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    want = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, AB, sampler=sampler)
    assert (rec["sampler"], rec["space"], rec["steps"]) == (sampler, "pixel", 6)
    assert rec["w2_closed_form"] == pytest.approx(want.w2, rel=1e-12)
    assert abs(rec["z_score_w2_squared"]) < 4, rec
    x = np.load(out)
    assert x.shape == (20000, 4, 4) and x.dtype == np.float64
    # the report's estimate is the file's
    assert _z(_moments(x, spectrum), want.w2) == pytest.approx(rec["z_score_w2_squared"],
                                                               rel=1e-9, abs=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "spec.npz", "x.npy"]


def test_the_wrong_closed_form_is_told_apart(tmp_path, capsys, files):
    # the z-scores above have power: the same files against another sampler's (or another
    # option's) closed form are far off
    spectrum, spec, schedule = files
    lam, m = spectrum.eigenvalues, spectrum.mean
    cases = [("dpmpp-2m", [], {}, "unipc", {}),  # the nearest other W2, 0.95 vs 0.80
             ("euler-ancestral", [], {}, "euler", {}),
             ("dpmpp-sde", ["--r", "0.3"], {"r": 0.3}, "dpmpp-sde", {"r": 0.5})]
    for sampler, flags, options, wrong, wrong_options in cases:
        out = tmp_path / f"{sampler}.npy"
        code, stdout, err = run(["sample", "--schedule", schedule(sampler, name=f"{sampler}.json"),
                                 "--spectrum", spec,
                                 "--n", "20000", "--seed", "2", "--out", out, "--report",
                                 *flags], capsys)
        assert code == 0, err
        rec = json.loads(stdout)
        assert abs(rec["z_score_w2_squared"]) < 4, rec
        assert {k: rec["options"][k] for k in options} == options
        emp = _moments(np.load(out), spectrum)
        right = evaluate_schedule(lam, m, AB, sampler=sampler, options=options).w2
        assert rec["w2_closed_form"] == pytest.approx(right, rel=1e-12)
        bad = evaluate_schedule(lam, m, AB, sampler=wrong, options=wrong_options).w2
        assert abs(_z(emp, bad)) > 10, (sampler, wrong, wrong_options)


def _direct(spectrum, sampler, n, seed, sizes, options=None):
    """``sample_k`` batch after batch on one stream, rotated: what the file should hold."""
    rng = np.random.default_rng(seed)
    model = WienerModel(spectrum.eigenvalues, spectrum.mean)
    v = np.concatenate([sample_k(model, kdiffusion_sigmas(AB), sampler, b, D, rng=rng,
                                 options=options) for b in sizes])
    assert v.shape == (n, D)
    return v @ spectrum.eigenvectors.T


@pytest.mark.parametrize("sampler", ["dpmpp-sde", "euler-ancestral", "dpmpp-2m", "unipc"])
@pytest.mark.parametrize("batch_size, sizes", [(500, [500]), (200, [200, 200, 100])])
def test_file_is_the_rotated_eigenbasis_run(tmp_path, capsys, files, sampler, batch_size,
                                            sizes):
    # pixel x = U v, v the eigenbasis samples (their mean m = U^T mu included), in the
    # spectrum's sample shape; one batch is sample_k itself, several are its runs in order
    spectrum, spec, schedule = files
    out = tmp_path / "x.npy"
    code, _, err = run(["sample", "--schedule", schedule(sampler), "--spectrum", spec, "--n",
                        "500", "--seed", "7", "--batch-size", str(batch_size), "--out", out],
                       capsys)
    assert code == 0, err
    x = np.load(out)
    assert x.shape == (500, 4, 4)
    want = _direct(spectrum, sampler, 500, 7, sizes)
    np.testing.assert_allclose(x.reshape(500, D), want, rtol=1e-12, atol=1e-12)
    # the pixel mean is U times the eigenbasis mean: mu, up to the sampler's error and noise
    gen = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, AB, sampler=sampler)
    se = np.sqrt(gen.variance.max() / 500)
    np.testing.assert_allclose(x.reshape(500, D).mean(axis=0),
                               spectrum.eigenvectors @ spectrum.mean, atol=5 * se + 0.05)
    # the same seed gives the same file
    code, _, err = run(["sample", "--schedule", tmp_path / "s.json", "--spectrum", spec,
                        "--n", "500", "--seed", "7", "--batch-size", str(batch_size), "--out",
                        tmp_path / "again.npy"], capsys)
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "again.npy"), x)


def test_eigenbasis_output_without_eigenvectors(tmp_path, capsys):
    # a bare eigenvalues .npy: the samples are eigenbasis coordinates (n, d), mean zero
    lam = np.geomspace(0.01, 5.0, 8)
    np.save(tmp_path / "eigs.npy", lam)
    Schedule(AB, sampler="dpmpp-2m-sde").save(tmp_path / "s.json")
    code, stdout, err = run(["sample", "--schedule", tmp_path / "s.json", "--spectrum",
                             tmp_path / "eigs.npy", "--n", "300", "--seed", "4", "--out",
                             tmp_path / "x.npy", "--report"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["space"] == "eigenbasis"
    want = sample_k(WienerModel(lam[::-1]), kdiffusion_sigmas(AB), "dpmpp-2m-sde", 300, 8,
                    rng=np.random.default_rng(4))  # the spectrum stores them descending
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), want, rtol=1e-12, atol=1e-12)


def test_the_schedule_files_sampler_and_eta_are_the_default(tmp_path, capsys, files):
    spectrum, spec, schedule = files
    argv = ["sample", "--schedule", schedule("dpmpp-sde", eta=0.5), "--spectrum", spec,
            "--n", "300", "--seed", "3", "--out", tmp_path / "x.npy", "--report"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert err == ""
    rec = json.loads(stdout)
    assert (rec["sampler"], rec["eta"], rec["options"]) == ("dpmpp-sde", 0.5,
                                                            {"s_noise": 1.0, "r": 0.5})
    x = np.load(tmp_path / "x.npy").reshape(300, D)
    np.testing.assert_allclose(x, _direct(spectrum, "dpmpp-sde", 300, 3, [300], {"eta": 0.5}),
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(x, _direct(spectrum, "dpmpp-sde", 300, 3, [300]))  # not eta = 1
    want = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, AB, sampler="dpmpp-sde",
                             eta=0.5).w2
    assert rec["w2_closed_form"] == pytest.approx(want, rel=1e-12)
    # --eta overrides the file's; --sampler another sampler, with one warning line
    code, stdout, err = run([*argv, "--force", "--eta", "0.8"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["eta"] == 0.8
    code, stdout, err = run([*argv, "--force", "--sampler", "euler"], capsys)
    assert code == 0, err
    assert (json.loads(stdout)["sampler"], json.loads(stdout)["eta"]) == ("euler", None)
    assert err.strip().splitlines() == [
        f"specsched sample: warning: {tmp_path / 's.json'}: this schedule was made for the "
        "sampler 'dpmpp-sde'; sampling it with 'euler' as --sampler asks"]
    # k-diffusion's eta is not bounded by 1 (DDIM-eta is)
    code, stdout, err = run([*argv, "--force", "--sampler", "dpmpp-sde", "--eta", "1.5"],
                            capsys)
    assert code == 0, err
    with np.errstate(divide="ignore"):  # eta 1.5 lands some stages on sigma_down = 0: log 0
        want = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, AB, sampler="dpmpp-sde",
                                 eta=1.5).w2
    assert json.loads(stdout)["w2_closed_form"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("made_for, eta, argv, needles", [
    ("dpmpp-2m", None, ["--eta", "0.5"],
     ["--eta: sampler 'dpmpp-2m' (sample_dpmpp_2m) has no eta", "applies to euler-ancestral"]),
    ("dpmpp-2m", None, ["--sampler", "euler", "--r", "0.3"],
     ["--r: sampler 'euler' (sample_euler) has no r; r applies to dpmpp-sde"]),
    ("dpmpp-2m", None, ["--sampler", "dpmpp-9m"],
     ["argument --sampler: invalid choice: 'dpmpp-9m'", "'dpmpp-2m'", "'unipc'"]),
    ("dpmpp-2m", None, ["--sampler", "ddim", "--s-noise", "0.5"],
     ["--s-noise: sampler 'ddim' has no s_noise"]),
    ("dpmpp-2m", None, ["--sampler", "ddim", "--eta", "1.5"],
     ["--eta: expected a number in [0, 1], got 1.5"]),
    ("dpmpp-sde", None, ["--r", "1.5"], ["--r: expected a number in (0, 1), got 1.5"]),
    ("euler-ancestral", None, ["--eta", "-1"],
     ["argument --eta: expected a finite number >= 0, got -1"]),
    ("ddim-ve", None, ["--eta", "0.5"], ["--eta: sampler 'ddim-ve' has no eta"]),
    ("pg-euler", None, [], ["s.json: sampler 'pg-euler' (from the file): expected one of",
                            "pass --sampler"]),
    ("dpmpp-2m", 0.5, [], ["s.json: sampler 'dpmpp-2m', eta 0.5 (from the file): eta: sampler",
                           "has no eta"]),
])
def test_what_a_sampler_cannot_do_is_refused_before_any_work(tmp_path, capsys, files,
                                                             made_for, eta, argv, needles):
    _, spec, schedule = files
    code, _, err = run(["sample", "--schedule", schedule(made_for, eta), "--spectrum", spec,
                        "--n", "10", "--out", tmp_path / "x.npy", *argv], capsys)
    assert refused(code, err, *needles)
    assert "warning" not in err
    assert not (tmp_path / "x.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "spec.npz"]


# ---- the batch generator and the Brownian path it keeps short --------------------------------

def test_batches_are_sample_k_runs_and_arguments_are_checked_first():
    from specsched.errors import InputError
    from specsched.sampling.ksamplers import sample_k_batches

    lam = np.array([0.1, 1.0, 4.0])
    model, sigmas = WienerModel(lam, np.array([0.5, 0.0, -1.0])), kdiffusion_sigmas(AB)
    got = list(sample_k_batches(model, sigmas, "dpmpp-3m-sde", 7, 3, batch_size=3,
                                rng=np.random.default_rng(5), options={"s_noise": 0.9},
                                progress=False))
    rng = np.random.default_rng(5)
    want = [sample_k(model, sigmas, "dpmpp-3m-sde", b, 3, rng=rng,
                     options={"eta": 1.0, "s_noise": 0.9}) for b in (3, 3, 1)]
    assert [s for s, _ in got] == [0, 3, 6]
    for (_, a), b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    for kwargs, needle in [({"n": 0}, "n: expected an integer >= 1"),
                           ({"batch_size": True}, "batch_size: expected an integer >= 1"),
                           ({"noise": "pink"}, "noise: expected one of"),
                           ({"options": {"r": 0.3}}, "r: sampler 'euler' (sample_euler) has no r"),
                           ({"sampler": "ddim"}, "sampler: expected one of")]:
        args = {"n": 4, "batch_size": 2, "noise": "default", "options": None,
                "sampler": "euler", **kwargs}
        with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            sample_k_batches(model, sigmas, args["sampler"], args["n"], 3, rng=rng,
                             batch_size=args["batch_size"], noise=args["noise"],
                             options=args["options"])  # raised on the call, not on next()


def test_forgetting_the_path_above_the_lowest_level_changes_no_draw():
    # levels reached in decreasing order, as the samplers reach them: forgetting all but the
    # lowest keeps every increment (the same draws of the same stream); a level above the
    # forgotten part is refused rather than drawn from the wrong law
    from specsched.sampling.ksamplers import BrownianNoise

    pairs = [(8.0, 3.0), (8.0, 1.0), (1.0, 0.4), (1.0, 0.1), (0.1, 0.02)]  # dpmpp-sde's shape
    full, short = (BrownianNoise((4, 2), np.random.default_rng(9)) for _ in range(2))
    for a, b in pairs:
        np.testing.assert_array_equal(full(a, b), short(a, b))
        if b in (1.0, 0.1, 0.02):  # the end of a step
            short.forget_all_but_lowest()
    assert len(full.times) == 6 and short.times == [0.02]
    with pytest.raises(RuntimeError, match="above 0.02"):
        short(0.5, 0.01)
