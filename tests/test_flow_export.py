"""Flow-matching exports (``--to diffusers-flow``, ``--to t``) run in diffusers' own schedulers.

docs/export.md, "Flow-matching models (SD3, Flux)". Data: a 6-direction Gaussian with a
nonzero mean in four directions, in its eigenbasis, where the exact velocity is
``v = (x - x0_hat) / t`` with the FM Wiener denoiser ``x0_hat = m + g (x - (1 - t) m)``,
``g = (1 - t) lam / ((1 - t)^2 lam + t^2)`` (docs/theory.md section 10).

The samplers are affine in their start: a run from ``x = 1`` with the mean set to 0 gives the
transfer function H, one from ``x = 0`` with the mean the output mean ``m + mean_gain m``;
together the exact law of what the scheduler samples. diffusers' flow-matching steps cast the
sample to float32 (``sample.to(torch.float32)``) and hold their sigmas in float32, so the match
with specsched's float64 closed forms is to float32 rounding: the state carries ~6e-8
relative error per step, and with <= 55 model calls the tests ask 1e-5 relative. Measured:
<= 1e-6 on H and the mean for exported schedules, <= 6e-6 on diffusers' default grids (the
worst: Heun on the 4-step grid at shift 1, whose last level is t = 0.001).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from specsched.cli import main
from specsched.errors import InputError
from specsched.optimize import optimize_schedule
from specsched.sampling import WienerDenoiser
from specsched.schedules import (
    Schedule,
    alphas_cumprod_from_fm_times,
    baseline_alphas_cumprod,
    sd3_shift,
)
from specsched.schedules.export import (
    DIFFUSERS_FLOW_FILE,
    export_array,
    export_diffusers,
    export_diffusers_flow,
    export_k_diffusion,
    export_sigmas_text,
    write_export,
)
from specsched.schedules.exported import read_levels
from specsched.schedules.flow import (
    FLUX_BASE_SEQ_LEN,
    FLUX_BASE_SHIFT,
    FLUX_MAX_SEQ_LEN,
    FLUX_MAX_SHIFT,
    flux_mu,
    fm_baseline_alphas_cumprod,
    fm_baseline_times,
)
from specsched.theory import closed_form, evaluate_schedule
from specsched.theory.losses import w2_terms

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)

RTOL = 1e-5  # diffusers' float32 state and sigmas (module docstring)
ATOL = 1e-6  # the output mean in directions where it is 0
LAM = np.array([9.0, 2.0, 0.5, 0.1, 0.02, 0.003])
MEAN = np.array([1.5, -0.7, 0.0, 0.3, 0.0, -0.2])


# --- helpers ------------------------------------------------------------------------------


def _drive(scheduler, lam, mean, start):
    """Run a diffusers flow-matching scheduler from ``start`` with the exact velocity.

    The model is called at the scheduler's own sigma (its FM time); the network would be
    given ``timestep / 1000``, the same to float32 rounding (checked). Returns the float64
    output and the number of model calls.
    """
    den = WienerDenoiser(lam, mean, param="fm")
    x = torch.tensor(np.atleast_2d(start), dtype=torch.float32)
    calls = 0
    for i, timestep in enumerate(scheduler.timesteps):
        t = float(scheduler.sigmas[i])  # = sigmas[step_index]: Euler, and Heun's both stages
        assert abs(float(timestep) / scheduler.config.num_train_timesteps - t) <= 1e-6
        x64 = x.double().numpy()
        v = (x64 - den(x64, t)) / t
        x = scheduler.step(torch.from_numpy(v).float(), timestep, x).prev_sample
        calls += 1
    return x.double().numpy()[0], calls


def _law(make_scheduler, lam=LAM, mean=MEAN):
    """Transfer H and output mean of what the scheduler samples (two probe runs)."""
    d = lam.size
    H, calls = _drive(make_scheduler(), lam, np.zeros(d), np.ones(d))
    out_mean, _ = _drive(make_scheduler(), lam, mean, np.zeros(d))
    return H, out_mean, calls


def _assert_law(make_scheduler, ab, sampler, lam=LAM, mean=MEAN):
    H, out_mean, calls = _law(make_scheduler, lam, mean)
    gen = closed_form(lam, ab, sampler)
    np.testing.assert_allclose(H, gen.transfer, rtol=RTOL)
    np.testing.assert_allclose(out_mean, mean + gen.mean_error(mean), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(H**2, gen.variance, rtol=2 * RTOL)  # start N(0, 1)
    return H, out_mean, calls


def _euler(info):
    """The recipe: FlowMatchEulerDiscreteScheduler(**scheduler_args), set_timesteps(sigmas=)."""
    def make():
        s = FlowMatchEulerDiscreteScheduler(**info["scheduler_args"])
        s.set_timesteps(sigmas=info["sigmas"])
        return s
    return make


def _heun_on(sigmas, num_train_timesteps=1000):
    """FlowMatchHeunDiscreteScheduler on given sigmas (t_S, ..., t_1): its set_timesteps takes
    none, so set it for S steps (which resets its state) and overwrite ``sigmas`` and
    ``timesteps`` with the layout set_timesteps builds (every level but the first and the
    final 0 twice: the second stage of each step)."""
    def make():
        s = FlowMatchHeunDiscreteScheduler(shift=1.0, num_train_timesteps=num_train_timesteps)
        s.set_timesteps(len(sigmas))
        sig = torch.tensor(list(sigmas) + [0.0], dtype=torch.float32)
        s.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]])
        t = sig[:-1] * num_train_timesteps
        s.timesteps = torch.cat([t[:1], t[1:].repeat_interleave(2)])
        return s
    return make


def _levels(scheduler):
    """alphas_cumprod (step 1 first) of a flow-matching scheduler's float32 sigmas."""
    sig = scheduler.sigmas.numpy().astype(np.float64)
    assert sig[-1] == 0.0
    return alphas_cumprod_from_fm_times(sig[:-1][::-1])


def _schedule_file(tmp_path, ab, name="s.json", **kw):
    path = tmp_path / name
    Schedule(ab, **kw).save(path)
    return path


def _optimised(sampler, S=8):
    r = optimize_schedule(LAM, MEAN, S, sampler=sampler)
    assert r.success and r.x[-1] == 0.0
    return r.x


# --- FlowMatchEulerDiscreteScheduler on exported sigmas ----------------------------------


@pytest.mark.parametrize("schedule", ["optimised", "sd3-shift", "fm-t_S<1", "vp-karras"])
def test_euler_scheduler_on_exported_sigmas_is_fm_euler(tmp_path, schedule, capsys):
    """The command's diffusers-flow export, run as docs/export.md says, samples exactly
    specsched's fm-euler on the schedule: from pure noise (t_S = 1: optimised, sd3-shift) and
    from N(0, 1) at t_S < 1 (a flow-matching schedule, and a VP Karras schedule to sigma 3,
    t_S = 0.75, which gets a
    warning and is not ddim)."""
    ab, param = {
        "optimised": (_optimised("fm-euler"), "fm"),
        "sd3-shift": (fm_baseline_alphas_cumprod("sd3-shift", 10), "fm"),
        "fm-t_S<1": (alphas_cumprod_from_fm_times(np.linspace(0.02, 0.9, 7)), "fm"),
        "vp-karras": (baseline_alphas_cumprod("karras", 10, sigma_range=(0.002, 3.0)), "vp"),
    }[schedule]
    f = _schedule_file(tmp_path, ab, param=param, sampler="fm-euler" if param == "fm" else "ddim")
    assert main(["export", str(f), "--to", "diffusers-flow", "--out", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    assert ("made for param 'vp'" in err) == (param == "vp")
    info = json.loads((tmp_path / "d" / DIFFUSERS_FLOW_FILE).read_text())
    S = ab.size
    t = Schedule(ab, param="fm").fm_times
    assert info["sigmas"] == t[::-1].tolist() and len(info["sigmas"]) == S
    assert info["starts_from_pure_noise"] == (ab[-1] == 0.0)
    assert (info["sigmas"][0] == 1.0) == (ab[-1] == 0.0)
    assert "first 1.0 (pure noise)" in out if ab[-1] == 0.0 else "(< 1: not pure noise)" in out
    s = _euler(info)()
    # the scheduler appends the final 0, computes timesteps in float32 as the file says, and
    # runs the sigmas unshifted
    assert s.sigmas.shape == (S + 1,) and float(s.sigmas[-1]) == 0.0
    assert s.timesteps.numpy().tolist() == info["timesteps"]
    np.testing.assert_allclose(s.sigmas.numpy()[:-1], info["sigmas"], rtol=1e-7)
    H, _, calls = _assert_law(_euler(info), ab, "fm-euler")
    assert calls == S
    if ab[-1] > 0:  # from N(0, 1) at t_S < 1 fm-euler is not DDIM (docs/theory.md section 10)
        assert np.abs(H / closed_form(LAM, ab, "ddim").transfer - 1).max() > 1e-3


def test_from_config_with_the_export_args_runs_the_sigmas_unshifted():
    """An SD3 config (shift=3.0) and a Flux config (dynamic shift) rebuilt with
    ``from_config(config, **scheduler_args)`` run the exported sigmas as they are; without
    the args SD3's shift moves every sigma (the trap the layout note warns of)."""
    ab = _optimised("fm-euler")
    info = export_diffusers_flow(ab)
    sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0)
    flux = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=256,
                                           max_image_seq_len=4096, base_shift=0.5,
                                           max_shift=1.15)
    for config in (sd3.config, flux.config):
        s = FlowMatchEulerDiscreteScheduler.from_config(config, **info["scheduler_args"])
        s.set_timesteps(sigmas=info["sigmas"], mu=0.8)  # Flux's pipeline passes mu: ignored
        assert s.timesteps.numpy().tolist() == info["timesteps"]
    sd3.set_timesteps(sigmas=info["sigmas"])
    np.testing.assert_allclose(sd3.sigmas.numpy()[:-1],
                               sd3_shift(np.array(info["sigmas"]), 3.0), rtol=1e-6)
    assert float(sd3.sigmas[-2]) > 2 * info["sigmas"][-1]  # t_1 moved towards the noise


def test_cifar10_numbers_of_the_docs():
    """CIFAR-10 (3072 directions, with its mean), S = 10, each W2 measured on diffusers' own
    run (probes) and equal to specsched's closed form to float32 rounding (docs/export.md):

    - the exported optimum of fm-euler in FlowMatchEulerDiscreteScheduler: 4.9207;
    - the same sigmas in a scheduler left at SD3's shift=3.0 (shift(t, 3) runs): 6.0002;
    - SD3's pipeline default, set_timesteps(10) at shift 3: 6.0623 (closed form only: our
      sd3-shift baseline, shift 3 on Flux's pipeline grid, 5.6907; fm-uniform 9.2790);
    - FlowMatchHeunDiscreteScheduler at shift 3, its own grid (19 model calls): 3.4436;
    - the exported optimum of fm-heun run by that scheduler with overwritten sigmas: 0.9364.
    """
    from specsched.spectrum import load_spectrum

    sp = load_spectrum("cifar10")
    lam, mean = sp.eigenvalues, sp.mean
    S = 10

    def w2(make):
        H, out_mean, _ = _law(make, lam, mean)
        return float(np.sqrt(w2_terms(lam, H**2, out_mean - mean).sum()))

    def check(make, ab, sampler, value):
        want = evaluate_schedule(lam, mean, ab, sampler=sampler).w2
        assert w2(make) == pytest.approx(want, rel=RTOL)
        assert want == pytest.approx(value, abs=1e-4)

    ab = optimize_schedule(lam, mean, S, sampler="fm-euler").x
    info = export_diffusers_flow(ab)
    check(_euler(info), ab, "fm-euler", 4.9207)

    def shifted():
        s = FlowMatchEulerDiscreteScheduler(shift=3.0)
        s.set_timesteps(sigmas=info["sigmas"])
        return s

    check(shifted, _levels(shifted()), "fm-euler", 6.0002)

    def sd3_default(cls):
        def make():
            s = cls(shift=3.0)
            s.set_timesteps(S)
            return s
        return make

    default = _levels(sd3_default(FlowMatchEulerDiscreteScheduler)())
    check(sd3_default(FlowMatchEulerDiscreteScheduler), default, "fm-euler", 6.0623)
    for name, value in (("sd3-shift", 5.6907), ("fm-uniform", 9.2790)):  # closed form only
        baseline = evaluate_schedule(lam, mean, fm_baseline_alphas_cumprod(name, S),
                                     sampler="fm-euler").w2
        assert baseline == pytest.approx(value, abs=1e-4)
    check(sd3_default(FlowMatchHeunDiscreteScheduler), default, "fm-heun", 3.4436)
    ab = optimize_schedule(lam, mean, S, sampler="fm-heun").x
    check(_heun_on(export_diffusers_flow(ab)["sigmas"]), ab, "fm-heun", 0.9364)


# --- diffusers' own grids and shifts ------------------------------------------------------


@pytest.mark.parametrize("S", [1, 4, 28])
def test_sd3_shift_is_diffusers_shift(S):
    """fm-uniform sigmas passed to FlowMatchEulerDiscreteScheduler(shift=3.0) become our
    sd3-shift baseline (to float32): sd3_shift is diffusers' shift formula."""
    s = FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(sigmas=fm_baseline_times("fm-uniform", S)[::-1])
    np.testing.assert_allclose(s.sigmas.numpy()[:-1][::-1],
                               fm_baseline_times("sd3-shift", S, shift=3.0), rtol=1e-6)
    for shift in (0.5, 1.7):
        s = FlowMatchEulerDiscreteScheduler(shift=shift)
        s.set_timesteps(sigmas=np.linspace(1.0, 1 / S, S))
        np.testing.assert_allclose(s.sigmas.numpy()[:-1][::-1],
                                   fm_baseline_times("sd3-shift", S, shift=shift), rtol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("S", [4, 28])
def test_default_grid_is_not_a_baseline(shift, S):
    """set_timesteps(num_inference_steps=S), as SD3's pipeline calls it, runs
    shift(linspace(1, shift(1/1000), S)): linspace from sigma_max = 1 to the shifted
    sigma_min of the 1000-step training grid, then shifted again, so the last level is
    shifted twice (t_1 = 0.001 at shift 1, 9/1008 = 0.00893 at shift 3), not our sd3-shift
    (t_1 = shift(1/S)). It is fm-euler on that grid (real run against the closed form)."""
    s = FlowMatchEulerDiscreteScheduler(shift=shift)
    s.set_timesteps(S)
    grid = sd3_shift(np.linspace(1.0, sd3_shift(1e-3, shift), S), shift)
    np.testing.assert_allclose(s.sigmas.numpy()[:-1], grid, rtol=1e-6)
    assert float(s.sigmas[-2]) == pytest.approx(shift**2 * 1e-3 / (1 + (shift**2 - 1) * 1e-3),
                                                rel=1e-6)
    assert abs(float(s.sigmas[-2]) - fm_baseline_times("sd3-shift", S, shift=shift)[0]) > 1e-2
    ab = _levels(s)

    def make():
        sch = FlowMatchEulerDiscreteScheduler(shift=shift)
        sch.set_timesteps(S)
        return sch

    _assert_law(make, ab, "fm-euler")


def _diffusers_calculate_shift():
    """diffusers' own ``calculate_shift`` (Flux), without importing its pipeline module.

    ``diffusers.pipelines.flux.pipeline_flux`` imports transformers, and every other copy
    (``modular_pipelines``, the other pipelines) imports a module that does; the function
    itself is self-contained, so it is compiled from the installed source file alone.
    """
    spec = importlib.util.find_spec("diffusers")
    path = Path(spec.submodule_search_locations[0]) / "pipelines" / "flux" / "pipeline_flux.py"
    if not path.is_file():
        pytest.skip(f"{path} not found in this diffusers")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name == "calculate_shift"]
    if not defs:
        pytest.skip(f"no calculate_shift in {path}")
    namespace = {}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["calculate_shift"]


@pytest.mark.parametrize("tokens", [1, 256, 1024, 4096, 6000])
def test_flux_shift_is_diffusers(tokens):
    """flux_mu is diffusers' calculate_shift with Flux's defaults (extrapolated outside
    256..4096 as diffusers does), and FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=
    True) on Flux's pipeline sigmas linspace(1, 1/S, S) with that mu runs our flux-shift."""
    calculate_shift = _diffusers_calculate_shift()
    mu = calculate_shift(tokens, FLUX_BASE_SEQ_LEN, FLUX_MAX_SEQ_LEN, FLUX_BASE_SHIFT,
                         FLUX_MAX_SHIFT)
    assert flux_mu(tokens) == pytest.approx(mu, rel=1e-12, abs=1e-15)
    assert calculate_shift(tokens) == pytest.approx(mu, rel=1e-12, abs=1e-15)  # its defaults
    S = 12
    s = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    s.set_timesteps(sigmas=np.linspace(1.0, 1 / S, S), mu=mu)
    np.testing.assert_allclose(s.sigmas.numpy()[:-1][::-1],
                               fm_baseline_times("flux-shift", S, tokens=tokens), rtol=1e-6)


# --- FlowMatchHeunDiscreteScheduler -------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("S", [1, 4, 28])
def test_heun_scheduler_default_grid_is_fm_heun(shift, S):
    """FlowMatchHeunDiscreteScheduler runs only its own grid (set_timesteps takes no sigmas in
    diffusers 0.42), the same as Euler's default; on it, it is specsched's fm-heun: 2S - 1
    model calls, Heun's average of the velocities at t and t', Euler onto t = 0."""
    def make():
        s = FlowMatchHeunDiscreteScheduler(shift=shift)
        s.set_timesteps(S)
        return s

    euler = FlowMatchEulerDiscreteScheduler(shift=shift)
    euler.set_timesteps(S)
    ab = _levels(euler)
    s = make()
    np.testing.assert_array_equal(s.sigmas.numpy()[[0, *range(1, 2 * S - 1, 2), -1]],
                                  euler.sigmas.numpy())
    _, _, calls = _assert_law(make, ab, "fm-heun")
    assert calls == 2 * S - 1
    if S > 1:  # a different sampler from Euler on the same grid
        H_euler = closed_form(LAM, ab, "fm-euler").transfer
        assert np.abs(closed_form(LAM, ab, "fm-heun").transfer / H_euler - 1).max() > 1e-2


@pytest.mark.parametrize("S", [1, 4, 8])  # not 3: optimize_schedule fails there (scipy's
# dgttrf with n = 2 free levels, specsched/optimize/newton.py; not this test's subject)
def test_heun_scheduler_on_exported_sigmas_by_overwriting(S):
    """The workaround of docs/export.md: set_timesteps(S), then overwrite its sigmas and
    timesteps in the layout set_timesteps builds; it then runs fm-heun on an exported
    (optimised) schedule. This relies on the scheduler's internals (``step`` reads only
    ``sigmas[step_index]``), as the UniPC recipe does."""
    ab = _optimised("fm-heun", S)
    info = export_diffusers_flow(ab)
    make = _heun_on(info["sigmas"])
    assert make().sigmas.shape == (2 * S,)
    _, _, calls = _assert_law(make, ab, "fm-heun")
    assert calls == 2 * S - 1


# --- the files ----------------------------------------------------------------------------


def test_t_array_round_trips(tmp_path, capsys):
    """--to t (npy, txt, json) holds Schedule.fm_times exactly, step 1 first, ending at 1 for
    a schedule from pure noise; read_levels (evaluate --schedule) gives the levels back."""
    ab = _optimised("fm-euler")
    sched = Schedule(ab, param="fm", sampler="fm-euler")
    f = _schedule_file(tmp_path, ab, param="fm", sampler="fm-euler")
    t = sched.fm_times
    assert t[-1] == 1.0 and np.all(np.diff(t) > 0)
    np.testing.assert_array_equal(export_array(sched, "t"), t)
    for fmt in ("npy", "txt", "json"):
        out = tmp_path / f"t.{fmt}"
        assert main(["export", str(f), "--to", "t", "--out", str(out)]) == 0
        printed, err = capsys.readouterr()
        assert "t: 8 values, step 1 (least noisy) first, ascending" in printed
        assert "last 1" in printed and "made for param" not in err
        if fmt == "npy":
            got = np.load(out)
        elif fmt == "txt":
            got = np.loadtxt(out)
            assert out.read_text().startswith("# specsched export --to t: t: 8 values")
        else:
            d = json.loads(out.read_text())
            got = np.array(d["t"])
            assert d["kind"] == "t" and d["last"] == 1.0 and not d["ends_with_zero"]
            assert "ascending" in d["order"]
        np.testing.assert_array_equal(got, t)
        lv = read_levels(out, "t" if fmt == "npy" else None)
        assert lv.levels == "t" and lv.alphas_cumprod[-1] == 0.0
        np.testing.assert_allclose(lv.alphas_cumprod, ab, rtol=1e-12, atol=0)
    np.save(tmp_path / "reversed.npy", t[::-1])  # diffusers' order: refused, with the hint
    with pytest.raises(InputError, match="expected ascending flow-matching times.*reverse it"):
        read_levels(tmp_path / "reversed.npy", "t")


def test_export_command_diffusers_flow(tmp_path, capsys):
    """From a fresh FM schedule file: a folder or a .json file, the layout printed, refused
    formats and paths, and evaluate reads the export back to the same W2."""
    ab = fm_baseline_alphas_cumprod("sd3-shift", 6)
    f = _schedule_file(tmp_path, ab, param="fm", sampler="fm-euler")
    assert main(["export", str(f), "--to", "diffusers-flow", "--out", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    assert "sigmas: noisiest first, descending, 6 values" in out and "no final 0" in out
    assert "shift=1.0" in out and "wrote " + str(tmp_path / "d" / DIFFUSERS_FLOW_FILE) in out
    assert "note: build the scheduler with shift=1.0 and use_dynamic_shifting=False" in err
    assert "warning" not in err
    d = json.loads((tmp_path / "d" / DIFFUSERS_FLOW_FILE).read_text())
    assert d["format"] == "specsched.diffusers-flow-export" and d["steps"] == 6
    assert d["scheduler_args"]["shift"] == 1.0 and not d["scheduler_args"]["use_dynamic_shifting"]
    assert d["sigmas"][0] == 1.0 and d["timesteps"][0] == 1000.0 and 0 not in d["sigmas"]
    assert main(["export", str(f), "--to", "diffusers-flow", "--out",
                 str(tmp_path / "flow.json")]) == 0
    assert json.loads((tmp_path / "flow.json").read_text()) == d
    capsys.readouterr()
    # again without --force: refused, nothing changed
    assert main(["export", str(f), "--to", "diffusers-flow", "--out", str(tmp_path / "d")]) == 2
    assert "--force" in capsys.readouterr().err
    (tmp_path / "plain.txt").write_text("x")
    for extra, needle in [
        (["--out", str(tmp_path / "x.json"), "--format", "npy"],
         "--format: --to diffusers-flow writes JSON"),
        (["--out", str(tmp_path / "plain.txt")], "exists and is not a folder or a .json file"),
    ]:
        assert main(["export", str(f), "--to", "diffusers-flow", *extra]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    # evaluate reads the folder, the file and the t array as the same levels
    sp_w2 = None
    for path in (tmp_path / "d", tmp_path / "flow.json"):
        lv = read_levels(path)
        assert lv.levels == "t" and lv.num_train_timesteps == 1000
        np.testing.assert_allclose(lv.alphas_cumprod, ab, rtol=1e-12, atol=0)
        assert main(["evaluate", "--spectrum", "cifar10", "--schedule", str(path),
                     "--sampler", "fm-euler", "--json"]) == 0
        w2 = json.loads(capsys.readouterr().out)["w2"]
        sp_w2 = w2 if sp_w2 is None else sp_w2
        assert w2 == pytest.approx(sp_w2, rel=1e-12)
    from specsched.spectrum import load_spectrum

    sp = load_spectrum("cifar10")
    assert sp_w2 == pytest.approx(
        evaluate_schedule(sp.eigenvalues, sp.mean, ab, sampler="fm-euler").w2, rel=1e-10)


@pytest.mark.parametrize("to, out", [("k-diffusion", "k.npy"), ("k-diffusion", "k.json"),
                                     ("sigmas", "s.txt"), ("sigmas-text", "s.txt"),
                                     ("diffusers", "d")])
def test_sigma_targets_refuse_pure_noise(tmp_path, to, out, capsys):
    """ab_S = 0 has sigma = inf: the targets made of sigmas exit 2 with one line naming the
    target and the two that work, and write nothing (before: a traceback for JSON, a silent
    'inf' in sigmas-text)."""
    f = _schedule_file(tmp_path, fm_baseline_alphas_cumprod("sd3-shift", 5), param="fm")
    assert main(["export", str(f), "--to", to, "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("specsched export: error: ")
    assert f"--to {to}: the schedule ends at pure noise" in err
    assert "--to diffusers-flow" in err and "--to t" in err
    assert not (tmp_path / out).exists()


def test_the_command_as_a_process(tmp_path):
    """``python -m specsched.cli export``: the flow export exits 0, the k-diffusion export of
    the same schedule (t_S = 1) exits 2 with one line on stderr and no traceback."""
    import subprocess
    import sys

    f = _schedule_file(tmp_path, fm_baseline_alphas_cumprod("sd3-shift", 4), param="fm",
                       sampler="fm-euler")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "specsched.cli", "export", str(f), *args],
                              cwd=tmp_path, capture_output=True, text=True)

    ok = run("--to", "diffusers-flow", "--out", "d")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "d" / DIFFUSERS_FLOW_FILE).read_text())["sigmas"][0] == 1.0
    bad = run("--to", "k-diffusion", "--out", "k.npy")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("specsched export: error: --to k-diffusion: the schedule "
                                 "ends at pure noise")
    assert not (tmp_path / "k.npy").exists()


def test_python_exporters_refuse_pure_noise_and_take_the_rest():
    ab = fm_baseline_alphas_cumprod("shifted-cosine", 5)
    sched = Schedule(ab, param="fm")
    for call, target in [(lambda: export_k_diffusion(sched), "k-diffusion"),
                         (lambda: export_sigmas_text(ab), "sigmas-text"),
                         (lambda: export_diffusers(sched), "diffusers"),
                         (lambda: export_array(ab, "sigmas"), "sigmas")]:
        with pytest.raises(InputError, match=f"^--to {target}: the schedule ends at pure"):
            call()
    np.testing.assert_array_equal(export_array(ab, "ab"), ab)
    assert export_array(ab, "betas")[-1] == 1.0
    assert export_diffusers_flow(ab)["sigmas"][0] == 1.0
    # a flow-matching schedule short of t = 1 has finite sigmas: every target takes it
    short = alphas_cumprod_from_fm_times(np.linspace(0.05, 0.95, 5))
    sig = export_k_diffusion(Schedule(short, param="fm"))
    np.testing.assert_allclose(sig[0] / (1 + sig[0]), 0.95, rtol=1e-12)
    info = export_diffusers_flow(short)
    assert not info["starts_from_pure_noise"] and "0.95 < 1" in info["notes"][-1]


def test_vp_schedule_exported_for_flow_matching_is_warned_of(tmp_path):
    """Any schedule has flow-matching times; one made for a VP sampler gets a warning (a
    flow-matching model run on them is fm-euler), a bare array none (no provenance)."""
    ab = baseline_alphas_cumprod("cosine", 10)
    for to, out in (("diffusers-flow", "d"), ("t", "t.json")):
        r = write_export(Schedule(ab, sampler="ddim"), to, tmp_path / out)
        assert len(r.warnings) == 1
        assert r.warnings[0].startswith("made for param 'vp', sampler 'ddim'")
        assert "--sampler fm-euler" in r.warnings[0]
        r = write_export(ab, to, tmp_path / ("bare-" + out))
        assert r.warnings == []
