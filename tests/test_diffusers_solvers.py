"""The closed forms of ``unipc`` and ``dpmpp-2m``, proven against diffusers' own schedulers.

diffusers 0.42's ``UniPCMultistepScheduler()`` (default configuration) and
``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`` run on the
timesteps ``export --to diffusers`` writes (:func:`specsched.schedules.export.export_diffusers`),
with the exact Wiener denoiser handed to them as an epsilon prediction. Both are affine in the
start ``x_T``, so a run from ``x_T = 1`` with the data mean 0 gives the transfer function and a
run from ``x_T = 0`` the output mean (tests/test_recipes.py's probes).

Tolerances (measured, see each test):

- UniPC computes in the dtype of its ``sigmas`` and the sample, so with the exported levels given
  as float64 ``sigmas`` it is float64 throughout: 1e-8 relative. The remaining error is the
  epsilon round trip ``x0 -> eps -> x0`` (``(x - sigma_vp eps) / alpha``), which loses
  ``eps_machine (1 + sigma^2) / lambda`` relative at the noisiest level (sigma = 157 at t = 999):
  5e-8 for lambda = 1e-4, hence data variances from 1e-2 here (measured: 1.2e-10 at S = 1,
  <= 1e-14 from S = 10).
- diffusers' own float32 ``sigmas`` (``set_timesteps`` casts them) and DPMSolver's float32 step
  (``sample.to(torch.float32)``): the same round trip then loses 6e-8 (1 + sigma^2) / lambda, so
  per-direction transfers of small lambda are float32 noise; W2, dominated by the directions
  that carry variance, matches to 5e-6 (tests/test_recipes.py's RTOL_FLOAT32).
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from specsched.cli import main
from specsched.sampling import WienerDenoiser
from specsched.schedules import Schedule, baseline_alphas_cumprod
from specsched.schedules.export import DIFFUSERS_FILE, export_diffusers
from specsched.spectrum import Spectrum, load_spectrum
from specsched.theory.kclosed import kclosed_form, kdiffusion_sigmas

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

RTOL_FLOAT64 = 1e-8
RTOL_FLOAT32 = 5e-6
LAM = np.geomspace(1e-2, 50.0, 9)  # module docstring: why not below 1e-2
MEAN = np.linspace(-1.0, 2.0, LAM.size)
CASES = [("logsnr", 1), ("logsnr", 2), ("logsnr", 3), ("logsnr", 10), ("cosine", 10),
         ("linear", 25)]


def exported(family: str, steps: int) -> dict:
    """``export --to diffusers`` of a baseline: timesteps, and the levels they run."""
    info = export_diffusers(baseline_alphas_cumprod(family, steps))
    assert info["timesteps"] is not None, info["timesteps_problem"]
    return info


def run_sigmas(info) -> np.ndarray:
    """k-diffusion-ordered sigmas of the exported timesteps (noisiest first, final 0)."""
    return kdiffusion_sigmas(np.array(info["alphas_cumprod_run"]))


def unipc(info, float64: bool = True, **config):
    """``UniPCMultistepScheduler(**config)`` on the exported timesteps (docs/export.md).

    UniPC's ``set_timesteps`` takes no timesteps (diffusers 0.42): it is set for S steps, which
    resets its multistep state, then ``timesteps`` and ``sigmas`` are overwritten; its ``step``
    reads only ``sigmas[step_index]``. ``float64``: the float64 sigmas of the exported levels,
    else diffusers' float32 ones of its own grid.
    """
    sched = diffusers.UniPCMultistepScheduler(**config)
    ts = torch.tensor(info["timesteps"])
    sched.set_timesteps(len(ts))
    sched.timesteps = ts
    if float64:
        sched.sigmas = torch.from_numpy(run_sigmas(info))
    else:
        a = sched.alphas_cumprod[ts]
        sched.sigmas = torch.cat([((1 - a) / a) ** 0.5, torch.zeros(1)])
    return sched


def dpm_solver(info, **config):
    """``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **config)``
    on the exported timesteps (its ``set_timesteps`` takes them)."""
    sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                                  **config)
    sched.set_timesteps(timesteps=info["timesteps"])
    return sched


def drive(sched, x_T, lam=LAM, mean=None):
    """The scheduler's output (d,) from ``x_T`` (d,) with the Wiener denoiser of N(mean, lam).

    The network's epsilon is the Wiener x0 prediction at the scheduler's own level
    ``ab = 1 / (1 + sigma^2)`` turned into eps (``(x - sqrt(ab) x0) / sqrt(1 - ab)``), or
    the x0 prediction itself for ``prediction_type="sample"``.
    """
    den = WienerDenoiser(lam, np.zeros(lam.size) if mean is None else mean)
    x = torch.from_numpy(np.asarray(x_T, dtype=np.float64)[None, :])
    for i, t in enumerate(sched.timesteps):
        s = float(sched.sigmas[i])
        a = 1.0 / (1.0 + s * s)
        xn = x.double().numpy()
        eps = den(xn, a)
        if sched.config.prediction_type == "epsilon":
            eps = (xn - np.sqrt(a) * eps) / np.sqrt(1.0 - a)
        x = sched.step(torch.from_numpy(eps).to(x.dtype), t, x).prev_sample
    return x.double().numpy()[0]


def probes(make, lam=LAM, mean=MEAN):
    """``(H, out_mean)``: transfer from ``x_T = 1`` (mean 0) and output from ``x_T = 0``."""
    d = lam.size
    return drive(make(), np.ones(d), lam), drive(make(), np.zeros(d), lam, mean)


# ---- unipc ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("family, steps", CASES)
def test_unipc_closed_form_equals_diffusers(family, steps, backend):
    info = exported(family, steps)
    # the overwrite puts the same levels in float64; diffusers' float32 grid has them to 4e-7
    # in ab, which is up to 3e-4 in sigma at t = 0 (1 - ab = 1e-4 cancels: 6e-8 / 2e-4)
    sched = unipc(info, float64=False)
    np.testing.assert_allclose(sched.sigmas.double().numpy(), run_sigmas(info), rtol=3e-4)
    H, out = probes(lambda: unipc(info))
    gen = kclosed_form(LAM, run_sigmas(info), "unipc", backend=backend)
    np.testing.assert_allclose(gen.transfer, H, rtol=RTOL_FLOAT64)  # from diffusers' x_T
    np.testing.assert_allclose(out - MEAN, gen.mean_error(MEAN), rtol=RTOL_FLOAT64)
    # start N(0, 1): the law of the output is H^2 per direction, no noise added
    np.testing.assert_allclose(gen.variance, H**2, rtol=RTOL_FLOAT64)


@pytest.mark.parametrize("config", [{"disable_corrector": list(range(10))},
                                    {"disable_corrector": [0]}, {"solver_order": 3}],
                         ids=["no-corrector", "no-first-corrector", "order-3"])
def test_unipc_closed_form_is_the_default_configuration_only(config):
    """The test above can fail: a scheduler with another corrector or order samples another
    transfer (measured, S = 10: 3.6e-2 without the corrector, 1.1e-1 at order
    3). Not among them: ``solver_type="bh1"``, ``predict_x0=False`` and
    ``lower_order_final=False``, with which diffusers 0.42 returns NaN or inf on the step onto
    sigma = 0 (``h`` is infinite there)."""
    info = exported("logsnr", 10)
    theirs = drive(unipc(info, **config), np.ones(LAM.size))
    ours = kclosed_form(LAM, run_sigmas(info), "unipc").transfer
    assert np.isfinite(theirs).all()
    assert np.max(np.abs(theirs / ours - 1.0)) > 1e-4


def test_unipc_on_diffusers_float32_grid_w2(tmp_path):
    """The docs/export.md recipe as written (diffusers' float32 sigmas) against ``specsched
    evaluate --sampler unipc`` of the export folder, which reads its timesteps (unipc is VP)."""
    p = load_spectrum("natural-patches")
    idx = np.linspace(0, p.dimension - 1, 48).astype(int)
    lam, m = p.eigenvalues[idx], p.mean[idx]
    Spectrum.from_eigenvalues(lam, mean=m, source="np48").save(tmp_path / "s.npz")
    Schedule(baseline_alphas_cumprod("logsnr", 10)).save(tmp_path / "sched.json")
    out = tmp_path / "exp"
    assert _cli("export", tmp_path / "sched.json", "--to", "diffusers", "--out", out)[0] == 0
    info = json.loads((out / DIFFUSERS_FILE).read_text())
    H, c = probes(lambda: unipc(info, float64=False), lam, m)
    w2 = float(np.sqrt(np.sum((c - m) ** 2 + (np.abs(H) - np.sqrt(lam)) ** 2)))
    code, text, err = _cli("evaluate", "--spectrum", tmp_path / "s.npz", "--schedule", out,
                           "--sampler", "unipc", "--json")
    assert code == 0, err
    assert json.loads(text)["w2"] == pytest.approx(w2, rel=RTOL_FLOAT32)


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ---- dpmpp-2m through DPMSolverMultistepScheduler -------------------------------------------


@pytest.mark.parametrize("family, steps", CASES)
def test_dpmpp_2m_step_rule_equals_diffusers_dpm_solver(family, steps):
    """k-diffusion's ``sample_dpmpp_2m`` rules are diffusers' here: first order at the first
    step (``lower_order_nums < 1``) and onto sigma = 0 (``final_sigmas_type="zero"`` makes the
    last step first order whatever S, not only below 15 steps as ``lower_order_final``
    alone would), second order between; the final first-order step returns the x0 prediction
    in both. The step rule alone: x0 prediction (no epsilon round trip) and the closed form on
    diffusers' own float32 sigmas, so only its float32 step arithmetic remains: O(1) terms
    of ``x`` cancel to the small transfers of small lambda, so the error is absolute, ~6e-8
    of ``|x|`` per step (measured: <= 6e-7 absolute, up to 9e-4 relative where H ~ 1e-4)."""
    info = exported(family, steps)
    sched = dpm_solver(info, prediction_type="sample")
    sigmas = sched.sigmas.double().numpy()
    H, out = probes(lambda: dpm_solver(info, prediction_type="sample"))
    gen = kclosed_form(LAM, sigmas, "dpmpp-2m")
    # the transfer from diffusers' VP x_T = x / sqrt(1 + sigma_0^2); k-diffusion's is from x
    H_k = gen.transfer * np.sqrt(1.0 + sigmas[0] ** 2)
    big = LAM >= 1.0
    np.testing.assert_allclose(H[big], H_k[big], rtol=RTOL_FLOAT32)
    np.testing.assert_allclose(H, H_k, rtol=0, atol=RTOL_FLOAT32 * np.max(np.abs(H)))
    np.testing.assert_allclose(out - MEAN, gen.mean_error(MEAN), rtol=0,
                               atol=RTOL_FLOAT32 * np.max(np.abs(MEAN)))


@pytest.mark.parametrize("family, steps", [c for c in CASES if c[1] >= 10])
def test_dpmpp_2m_closed_form_equals_diffusers_dpm_solver(family, steps):
    """The default epsilon prediction, the closed form on the exported (float64) levels.
    Transfer to float32 rounding (module docstring): relative in the directions with lambda
    >= 1, absolute (of the largest H) elsewhere. Not below 10 steps: there the epsilon round
    trip at sigma = 157 in float32 alone costs up to 4e-4 relative (measured, S = 1 to 3)."""
    info = exported(family, steps)
    H, out = probes(lambda: dpm_solver(info))
    sigmas = run_sigmas(info)
    gen = kclosed_form(LAM, sigmas, "dpmpp-2m")
    # the transfer from diffusers' VP x_T = x / sqrt(1 + sigma_0^2); k-diffusion's is from x
    H_k = gen.transfer * np.sqrt(1.0 + sigmas[0] ** 2)  # from diffusers' VP x_T
    big = LAM >= 1.0
    np.testing.assert_allclose(H[big], H_k[big], rtol=RTOL_FLOAT32)
    np.testing.assert_allclose(H, H_k, rtol=0, atol=RTOL_FLOAT32 * np.max(np.abs(H)))
    np.testing.assert_allclose(out - MEAN, gen.mean_error(MEAN), rtol=0,
                               atol=RTOL_FLOAT32 * np.max(np.abs(MEAN)))
