"""k-diffusion's samplers through the optimiser and the command line (issue 13)."""

import json

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.optimize import optimize_schedule
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.theory import evaluate_schedule, loss_and_grad, loss_value
from specsched.theory.ksolvers import KSAMPLERS
from specsched.theory.samplers import steps_for_nfe

LAM = np.geomspace(1e-3, 20.0, 40)
MEAN = np.linspace(-0.5, 0.5, 40)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp-2m", "dpmpp-sde", "lms"])
@pytest.mark.parametrize("loss", ["w2", "kl"])
def test_gradient_in_alphas_cumprod_matches_finite_differences(sampler, loss):
    # the chain rule from sigmas to alphas_cumprod (sigma index j is ab index S - 1 - j)
    ab = baseline_alphas_cumprod("linear", 6)
    value, grad = loss_and_grad(LAM, MEAN, ab, loss=loss, sampler=sampler)
    assert value == pytest.approx(loss_value(LAM, MEAN, ab, loss=loss, sampler=sampler),
                                  rel=1e-13)
    fd = np.empty_like(ab)
    for j in range(ab.size):
        h = 1e-4 * min(ab[j], 1 - ab[j])  # rounding dominates below this
        up, down = ab.copy(), ab.copy()
        up[j] += h
        down[j] -= h
        fd[j] = (loss_value(LAM, MEAN, up, loss=loss, sampler=sampler)
                 - loss_value(LAM, MEAN, down, loss=loss, sampler=sampler)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


def test_euler_optimum_is_the_ddim_ve_optimum():
    # k-diffusion's sample_euler is DDIM in VE form: the same problem, the same optimum
    a = optimize_schedule(LAM, MEAN, 6, sampler="euler", starts=("linear",))
    b = optimize_schedule(LAM, MEAN, 6, sampler="ddim-ve", starts=("linear",))
    assert a.success and b.success
    assert a.w2 == pytest.approx(b.w2, rel=1e-6)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-3)


def test_optimised_schedule_beats_its_start_for_dpmpp_2m():
    res = optimize_schedule(LAM, MEAN, 5, sampler="dpmpp-2m")
    assert res.success
    assert res.w2 < min(v["w2"] for v in res.baselines.values())
    again = evaluate_schedule(LAM, MEAN, res.x, sampler="dpmpp-2m").w2
    assert again == pytest.approx(res.w2, rel=1e-12)


def test_nfe_rule_of_each_sampler():
    two = {"heun", "dpm-2", "dpm-2-ancestral", "dpmpp-2s-ancestral", "dpmpp-sde"}
    for name, spec in KSAMPLERS.items():
        assert spec.nfe(10) == (19 if name in two else 10), name
    assert steps_for_nfe("heun", 9) == 5
    assert steps_for_nfe("dpmpp-2m", 10) == 10


def _eigenvalues(tmp_path):
    path = tmp_path / "eigs.npy"
    np.save(path, LAM)
    return path


def test_optimize_with_an_nfe_budget(tmp_path, capsys):
    code, out, err = run(["optimize", "--spectrum", _eigenvalues(tmp_path), "--sampler",
                          "heun", "--nfe", "9", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    files = list((tmp_path / "o").glob("schedule_heun_w2_S5.json"))
    assert len(files) == 1, list((tmp_path / "o").iterdir())
    sched = Schedule.load(files[0])
    assert (sched.sampler, sched.param, sched.alphas_cumprod.size) == ("heun", "ve", 5)
    assert json.loads(files[0].read_text())["sampler"] == "heun"


@pytest.mark.parametrize("argv, needles", [
    (["--sampler", "heun", "--nfe", "10"], ["--nfe: heun spends", "nearest are 9 or 11"]),
    (["--sampler", "dpmpp-2m", "--eta", "0.5"],
     ["--eta: sampler 'dpmpp-2m' (sample_dpmpp_2m) has no eta", "euler-ancestral"]),
    (["--sampler", "dpmpp-2m", "--steps", "5", "--nfe", "5"], ["not allowed with argument"]),
])
def test_optimize_refuses_what_a_sampler_cannot_do(tmp_path, capsys, argv, needles):
    code, _, err = run(["optimize", "--spectrum", _eigenvalues(tmp_path), *argv,
                        "--out", tmp_path / "o"], capsys)
    assert refused(code, err, *needles)
    assert not (tmp_path / "o").exists()


def test_evaluate_says_when_a_schedule_was_made_for_another_sampler(tmp_path, capsys):
    path = tmp_path / "s.json"
    Schedule(alphas_cumprod=baseline_alphas_cumprod("cosine", 8), sampler="ddim").save(path)
    code, out, err = run(["evaluate", "--spectrum", _eigenvalues(tmp_path), "--schedule", path,
                          "--sampler", "dpmpp-2m", "--json"], capsys)
    assert code == 0, err
    assert "made for the sampler 'ddim'; evaluating it with 'dpmpp-2m'" in err
    w2 = json.loads(out)["w2"]
    ab = baseline_alphas_cumprod("cosine", 8)
    assert w2 == pytest.approx(evaluate_schedule(LAM, None, ab, sampler="dpmpp-2m").w2,
                               rel=1e-9)


@pytest.mark.parametrize("sampler", sorted(KSAMPLERS))
def test_monte_carlo_of_the_same_steps_matches_the_closed_form(sampler):
    # the array run of the very steps the closed form is read from: mean and variance
    from specsched.sampling.ksamplers import WienerModel, sample_k
    from specsched.theory.kclosed import kclosed_form, kdiffusion_sigmas

    lam, m = np.array([0.01, 0.5, 2.0, 9.0]), np.array([0.3, -0.2, 1.0, -2.0])
    sigmas = kdiffusion_sigmas(baseline_alphas_cumprod("linear", 6))
    n = 40_000
    x = sample_k(WienerModel(lam, m), sigmas, sampler, n, lam.size,
                 rng=np.random.default_rng(7))
    gen = kclosed_form(lam, sigmas, sampler)
    se_var = gen.variance * np.sqrt(2.0 / (n - 1))
    assert np.all(np.abs(x.var(axis=0, ddof=1) - gen.variance) < 4 * se_var)
    se_mean = np.sqrt(gen.variance / n)
    assert np.all(np.abs(x.mean(axis=0) - (m + gen.mean_error(m))) < 4 * se_mean)


def test_options_flags_reach_the_closed_form(tmp_path, capsys):
    # --r, --s-noise and --solver-type are k-diffusion's r, s_noise and solver_type
    eigs = _eigenvalues(tmp_path)
    ab = baseline_alphas_cumprod("karras", 6)
    for sampler, flags, options in [("dpmpp-sde", ["--r", "0.3"], {"r": 0.3}),
                                    ("euler-ancestral", ["--s-noise", "0.5"], {"s_noise": 0.5}),
                                    ("dpmpp-2m-sde", ["--solver-type", "heun"],
                                     {"solver_type": "heun"})]:
        code, out, err = run(["evaluate", "--spectrum", eigs, "--schedule", "karras", "--steps",
                              "6", "--sampler", sampler, *flags, "--json"], capsys)
        assert code == 0, err
        want = evaluate_schedule(LAM, None, ab, sampler=sampler, options=options).w2
        assert json.loads(out)["w2"] == pytest.approx(want, rel=1e-12)
        assert want != pytest.approx(evaluate_schedule(LAM, None, ab, sampler=sampler).w2,
                                     rel=1e-6)


@pytest.mark.parametrize("argv, needles", [
    (["--sampler", "ddim-ve", "--s-noise", "0.3"], ["--s-noise: sampler 'ddim-ve' has no"]),
    (["--sampler", "dpmpp-2m", "--r", "0.3"], ["--r: sampler 'dpmpp-2m'", "applies to dpmpp-sde"]),
    (["--sampler", "dpmpp-sde", "--r", "1.5"], ["--r: expected a number in (0, 1)"]),
])
def test_sampler_options_are_refused_where_they_do_not_apply(tmp_path, capsys, argv, needles):
    for command in (["evaluate", "--schedule", "karras", "--steps", "4"],
                    ["optimize", "--steps", "4", "--out", tmp_path / "o"]):
        code, _, err = run([command[0], "--spectrum", _eigenvalues(tmp_path), *command[1:],
                            *argv], capsys)
        assert refused(code, err, *needles)
    assert not (tmp_path / "o").exists()


def test_sweep_over_nfe_budgets(tmp_path, capsys):
    # each sampler gets the most steps within the budget; sweep.csv says what it spends
    import pandas as pd

    code, _, err = run(["sweep", "--spectrum", _eigenvalues(tmp_path), "--nfe", "5", "8",
                        "--samplers", "heun", "dpmpp-2m", "--losses", "w2", "--jobs", "1",
                        "--out", tmp_path / "sw"], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv", comment="#")
    spent = table[["sampler", "steps", "nfe"]].drop_duplicates().sort_values(["sampler", "nfe"])
    assert spent.values.tolist() == [["dpmpp-2m", 5, 5], ["dpmpp-2m", 8, 8], ["heun", 3, 5],
                                     ["heun", 4, 7]]
    opt = table[table["schedule"] == "optimized-w2"].set_index(["sampler", "steps"])["w2"]
    ab = Schedule.load(next((tmp_path / "sw" / "schedules").glob("*heun*S3*.json")))
    assert opt[("heun", 3)] == pytest.approx(
        evaluate_schedule(LAM, None, ab.alphas_cumprod, sampler="heun").w2, rel=1e-9)


def test_eta_of_k_diffusion_is_not_bounded_by_one(tmp_path, capsys):
    # k-diffusion's eta is any number >= 0 (the library's rule); DDIM-eta is in [0, 1]: the
    # flag takes what is >= 0 and the sampler refuses the rest, alike in every command
    eigs = _eigenvalues(tmp_path)
    ab = baseline_alphas_cumprod("karras", 6)
    code, out, err = run(["evaluate", "--spectrum", eigs, "--schedule", "karras", "--steps", "6",
                          "--sampler", "euler-ancestral", "--eta", "1.5", "--json"], capsys)
    assert code == 0, err
    want = evaluate_schedule(LAM, None, ab, sampler="euler-ancestral", eta=1.5).w2
    assert json.loads(out)["w2"] == pytest.approx(want, rel=1e-12)
    assert want != pytest.approx(evaluate_schedule(LAM, None, ab, sampler="euler-ancestral").w2,
                                 rel=1e-6)
    for command in (["evaluate", "--schedule", "karras", "--steps", "4"],
                    ["optimize", "--steps", "4", "--out", tmp_path / "o"]):
        code, _, err = run([command[0], "--spectrum", eigs, *command[1:], "--sampler", "ddim",
                            "--eta", "1.5"], capsys)
        assert refused(code, err, "--eta: expected a number in [0, 1], got 1.5")
        code, _, err = run([command[0], "--spectrum", eigs, *command[1:], "--sampler",
                            "ddim-ve", "--eta", "0.5"], capsys)
        assert refused(code, err, "--eta: sampler 'ddim-ve' has no eta")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sampler", sorted(KSAMPLERS))
def test_zero_eigenvalues_give_a_finite_loss(sampler):
    # CIFAR-10 has 9 zero eigenvalues: there the generated variance is 0 in exact arithmetic,
    # and LMS's rounding made it -1e-30 (a NaN W2) until the variance was clipped at 0
    from specsched.data.builtin import cifar10_eigenvalues

    lam = cifar10_eigenvalues()
    assert np.sum(lam == 0) > 0
    for name in ("karras", "linear"):
        report = evaluate_schedule(lam, None, baseline_alphas_cumprod(name, 10), sampler=sampler)
        assert np.isfinite(report.w2) and np.all(report.variance >= 0)
