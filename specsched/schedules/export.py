r"""Export a schedule for other samplers and trainers: diffusers, k-diffusion, plain arrays.

Notation (docs/theory.md section 1): ``ab = (ab_1, ..., ab_S)``, step 1 (least noisy) first,
``ab_0 = 1`` implied; ``sigma_s = sqrt((1 - ab_s) / ab_s)``; ``logsnr_s = -2 log sigma_s``.
Other libraries run the noisiest step first, so their arrays are the reverse of ours, and
every array written here says its order and its last value in the file (JSON keys, text
headers; for a bare ``.npy`` the command prints it), as :data:`ARRAY_LAYOUTS` words it:

- diffusers ``timesteps`` (``DDPMScheduler``, ``DPMSolverMultistepScheduler``, ... whose
  ``set_timesteps`` takes ``timesteps=``): descending training indices of a T = 1000 model, the
  training step nearest in logSNR to each ``ab_s``; the schedule actually run is then
  ``alphas_cumprod[timesteps]`` and the rounding error is reported in logSNR. Two steps closer
  than the grid share a training step; diffusers refuses such timesteps, so none are written
  and ``timesteps_problem`` says why;
- diffusers ``sigmas`` (``EulerDiscreteScheduler.set_timesteps(sigmas=...)`` and the other
  Karras/EDM-style schedulers): ``(sigma_S, ..., sigma_1, 0)``, the schedule's own levels.
  Always written: the form that works whatever the grid;
- a diffusers ``scheduler_config.json`` with ``trained_betas`` (only meaningful when the
  schedule is a full training grid, S == T);
- k-diffusion: ``sigmas = (sigma_S, ..., sigma_1, 0)`` for ``sample_euler`` & co.;
- ``sigmas-text``: the same S + 1 sigmas as one comma-separated line of text, for ComfyUI's
  manual-sigmas node and A1111's custom schedules (:func:`export_sigmas_text`);
- plain arrays (``ab``, ``betas``, ``sigmas``, ``t``), step 1 first, as ``.npy``, ``.txt`` or
  JSON (``t``: flow-matching times ``t_s = sigma_s / (1 + sigma_s)``, docs/theory.md section
  10);
- diffusers flow matching (``FlowMatchEulerDiscreteScheduler``, Stable Diffusion 3 and Flux):
  ``sigmas = (t_S, ..., t_1)``, the flow-matching times noisiest first WITHOUT a final 0 (the
  scheduler appends it), for ``set_timesteps(sigmas=...)`` on a scheduler built with
  ``shift=1.0`` and ``use_dynamic_shifting=False`` (else it shifts them again)
  (:func:`export_diffusers_flow`);
- a specsched schedule file (for a baseline written from the command line).

A schedule ending at pure noise (``ab_S = 0``, ``t_S = 1``: a flow-matching schedule) has
``sigma_S = inf``: the targets made of sigmas (``diffusers``, ``k-diffusion``, ``sigmas-text``,
``sigmas``) cannot hold it and refuse it with an :class:`~specsched.errors.InputError` naming
the target and pointing to ``diffusers-flow`` and ``t``; ``ab``, ``betas`` (``beta_S = 1``),
``t`` and ``diffusers-flow`` hold it.

diffusers' ``DDIMScheduler.set_timesteps`` takes no custom timesteps, and its ``step`` lands
on ``t - T // S`` rather than the next timestep (diffusers issues 11347, 12633; see
:mod:`specsched.theory.unchained`); overwriting its ``.timesteps`` with exported ones samples
another process. ``DPMSolverMultistepScheduler(solver_order=1)`` takes ``timesteps=`` and is
DDIM (its first-order DPM-Solver++ step is the DDIM step; Lu et al. 2022, section 4.1).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specsched.errors import InputError
from specsched.fileio import atomic_write, check_writable
from specsched.schedules.conversions import (
    _betas,
    _fm_times,
    _sigmas,
    as_alphas_cumprod,
    check_int,
)
from specsched.schedules.families import (
    DIFFUSERS_SCHEDULER_ARGS,
    TRAINING_FAMILIES,
    _check_choice,
    _nearest_timesteps,
    training_alphas_cumprod,
)
from specsched.schedules.schedule import Schedule

__all__ = [
    "ARRAY_FORMAT",
    "ARRAY_LAYOUTS",
    "ARRAY_TARGETS",
    "DDIM_WARNING",
    "DIFFUSERS_FILE",
    "DIFFUSERS_FLOW_FILE",
    "DIFFUSERS_FLOW_FORMAT",
    "DIFFUSERS_FORMAT",
    "EXPORT_FORMATS",
    "EXPORT_TARGETS",
    "EXPORT_VERSION",
    "FLOW_SCHEDULER_ARGS",
    "SIGMA_TARGETS",
    "ExportReport",
    "describe_array",
    "export_array",
    "export_diffusers",
    "export_diffusers_flow",
    "export_k_diffusion",
    "export_sigmas_text",
    "training_grid_warnings",
    "write_export",
]

EXPORT_TARGETS = ("diffusers", "diffusers-flow", "k-diffusion", "sigmas-text", "ab", "betas",
                  "sigmas", "t", "schedule")
ARRAY_TARGETS = ("k-diffusion", "ab", "betas", "sigmas", "t")
#: Targets made of sigmas ``sqrt((1 - ab) / ab)``: none can hold ``ab_S = 0`` (sigma = inf).
SIGMA_TARGETS = ("diffusers", "k-diffusion", "sigmas-text", "sigmas")
EXPORT_FORMATS = ("npy", "txt", "json")
#: ``format`` of an array exported as JSON, and of ``diffusers_schedule.json``.
ARRAY_FORMAT = "specsched.array"
DIFFUSERS_FORMAT = "specsched.diffusers-export"
#: ``format`` of ``diffusers_flow_schedule.json`` (:func:`export_diffusers_flow`).
DIFFUSERS_FLOW_FORMAT = "specsched.diffusers-flow-export"
EXPORT_VERSION = 1
DIFFUSERS_FILE = "diffusers_schedule.json"
DIFFUSERS_FLOW_FILE = "diffusers_flow_schedule.json"
SCHEDULER_CONFIG_FILE = "scheduler_config.json"

#: kind -> (JSON key, order): how each exported array is laid out.
ARRAY_LAYOUTS = {
    "ab": ("alphas_cumprod", "step 1 (least noisy) first, descending, one per step, no "
           "final 1 or 0 appended (a last 0 is the last step's own level, pure noise)"),
    "betas": ("betas", "step 1 (least noisy) first, one per step (beta_s = 1 - "
              "ab_s/ab_{s-1})"),
    "sigmas": ("sigmas", "step 1 (least noisy) first, ascending, one per step, no final 0: "
               "not the order diffusers' sigmas= or k-diffusion take (reverse it and append 0, "
               "or export --to k-diffusion)"),
    "k-diffusion": ("sigmas", "noisiest first, descending, one per step and a final 0: as "
                    "k-diffusion's samplers and diffusers' set_timesteps(sigmas=...) take "
                    "them"),
    "t": ("t", "step 1 (least noisy) first, ascending, one per step, no final 0 (flow-matching "
          "times t_s = sigma_s / (1 + sigma_s), the last 1 when the schedule ends at pure "
          "noise): not the order FlowMatchEulerDiscreteScheduler's sigmas= takes (reverse it, "
          "or export --to diffusers-flow)"),
}

#: ``FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER_ARGS)`` (or ``from_config(config,
#: **FLOW_SCHEDULER_ARGS)``) runs exported ``sigmas`` as they are: every option that would
#: move them (``shift``, the dynamic shift, ``shift_terminal``, Karras/exponential/beta
#: sigmas, ``invert_sigmas``) off, and deterministic Euler steps.
FLOW_SCHEDULER_ARGS = {
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "invert_sigmas": False,
    "stochastic_sampling": False,
}

DDIM_WARNING = (
    "diffusers' DDIMScheduler takes no custom timesteps (set_timesteps has only "
    "num_inference_steps) and overwriting its .timesteps samples another process (its step() "
    "lands on t - T // S, not on the next timestep; diffusers issues 11347, 12633): for DDIM "
    "use DPMSolverMultistepScheduler(solver_order=1).set_timesteps(timesteps=...), for DDPM "
    "DDPMScheduler(clip_sample=False).set_timesteps(timesteps=...)"
)
CLIP_NOTE = (
    "DDPMScheduler and DDIMScheduler default to clip_sample=True, which clamps the predicted x0 "
    "to [-1, 1]; the closed form does not model it: pass clip_sample=False (the written "
    "scheduler_config.json does)"
)
EULER_NOTE = (
    "EulerDiscreteScheduler on these sigmas is specsched's ddim-ve (start N(0, sigma_S^2)) "
    "with timestep_spacing 'linspace' or 'trailing'; with 'leading' (Stable Diffusion's "
    "configs) init_noise_sigma is sqrt(sigma_S^2 + 1) and it is specsched's ddim (VP DDIM "
    "from N(0, 1))"
)
SHIFT_NOTE = (
    "build the scheduler with shift=1.0 and use_dynamic_shifting=False "
    "(FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, **scheduler_args)): "
    "SD3's config has shift=3.0 and Flux's use_dynamic_shifting=True, and set_timesteps "
    "applies either to the sigmas passed, which would run another schedule"
)
FLOW_EULER_NOTE = (
    "FlowMatchEulerDiscreteScheduler (x' = x + (t' - t) v from x = randn at sigmas[0], which "
    "the pipelines do not scale) on these sigmas is specsched's fm-euler. Its default grid, "
    "set_timesteps(num_inference_steps=S) as SD3's pipeline calls it, is neither fm-uniform nor "
    "sd3-shift: shift(linspace(1, shift(1/1000), S)), the last level shifted twice (t_1 = "
    "0.0089 at shift 3). FlowMatchHeunDiscreteScheduler (specsched's fm-heun) takes no "
    "sigmas= in diffusers 0.42 (docs/export.md)"
)


def describe_array(kind: str, values: np.ndarray) -> str:
    """One line saying what an exported array holds: its kind, length, order and end values.

    Parameters
    ----------
    kind : {"ab", "betas", "sigmas", "t", "k-diffusion"}
    values : ndarray of shape (n,), float64

    Returns
    -------
    str
        e.g. ``"sigmas: 10 values, step 1 (least noisy) first, ascending, ...; first 0.0101,
        last 80"``.
    """
    key, order = ARRAY_LAYOUTS[kind]
    label = "k-diffusion sigmas" if kind == "k-diffusion" else key
    return (f"{label}: {values.size} values, {order}; first {values[0]:.6g}, last "
            f"{values[-1]:.6g}")


def export_array(schedule, kind: str) -> np.ndarray:
    """A plain view of a schedule, step 1 (least noisy) first.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first (validated unless it is a Schedule).
    kind : {"ab", "betas", "sigmas", "t"}
        ``alphas_cumprod``; ``beta_s = 1 - ab_s / ab_{s-1}`` (``ab_0 = 1``);
        ``sigma_s = sqrt((1 - ab_s) / ab_s)`` (docs/theory.md section 1), ascending with no
        final 0; flow-matching times ``t_s = sigma_s / (1 + sigma_s)`` (docs/theory.md
        section 10), ascending, ``t_S = 1`` at ``ab_S = 0`` (:data:`ARRAY_LAYOUTS`).

    Returns
    -------
    ndarray of shape (n_steps,), float64

    Raises
    ------
    InputError
        Unknown ``kind``, an invalid schedule, ``"sigmas"`` of a schedule ending at pure
        noise (``ab_S = 0``; an array may end with 0, as a flow-matching schedule does).
    """
    _check_choice(kind, "kind", ("ab", "betas", "sigmas", "t"))
    ab = as_alphas_cumprod(schedule, zero_terminal=True)
    _check_finite_sigmas(ab, kind)
    return _array(ab, kind)


def _array(ab: np.ndarray, kind: str) -> np.ndarray:
    if kind == "ab":
        return ab.copy()
    if kind == "betas":
        return _betas(ab)
    if kind == "sigmas":
        return _sigmas(ab)
    if kind == "t":
        return _fm_times(ab)
    return np.concatenate([_sigmas(ab)[::-1], [0.0]])  # k-diffusion


def _check_finite_sigmas(ab: np.ndarray, to: str) -> None:
    """Refuse ``ab_S = 0`` (sigma = inf) for a target made of sigmas, naming the target."""
    if to in SIGMA_TARGETS and ab[-1] == 0.0:
        raise InputError(
            f"--to {to}: the schedule ends at pure noise (alphas_cumprod[{ab.size - 1}] = 0, "
            "t_S = 1), where sigma is infinite, and these sigmas cannot hold it; export a "
            "flow-matching schedule with --to diffusers-flow (FlowMatchEulerDiscreteScheduler) "
            "or --to t")


def export_k_diffusion(schedule) -> np.ndarray:
    """k-diffusion's sigmas: ``(sigma_S, ..., sigma_1, 0)``, descending, ending in 0.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)

    Returns
    -------
    ndarray of shape (n_steps + 1,), float64
        Pass as ``sigmas`` to ``k_diffusion.sampling.sample_euler`` (= specsched's
        ``ddim-ve``) or ``sample_euler_ancestral`` (eta = 1, = ``ddpm-ve``), with a model
        wrapped as a denoiser ``D(x, sigma)`` (e.g. ``k_diffusion.external.CompVisDenoiser``);
        the start is ``x = sigmas[0] * randn``. Also what diffusers'
        ``EulerDiscreteScheduler.set_timesteps(sigmas=...)`` takes. Source: Karras et al.
        2022; k-diffusion ``get_sigmas_karras`` appends the same final 0.

    Raises
    ------
    InputError
        An invalid schedule, or one ending at pure noise (``ab_S = 0``, sigma = inf).
    """
    ab = as_alphas_cumprod(schedule, zero_terminal=True)
    _check_finite_sigmas(ab, "k-diffusion")
    return _array(ab, "k-diffusion")


def export_sigmas_text(schedule) -> str:
    """k-diffusion's sigmas as one comma-separated line: ``"sigma_S, ..., sigma_1, 0.0"``.

    The noisiest level first, descending, S + 1 values, the last one ``0.0``: the list
    ComfyUI's manual-sigmas node and A1111's custom schedules take, pasted as it is. Each value
    is Python's ``repr`` of the float64 (the shortest decimal that reads back to the same
    double), so ``[float(v) for v in text.split(",")]`` is :func:`export_k_diffusion` exactly;
    values below 1e-4 (none in the usual 0.002 to 80 range) are written with an exponent
    (``1e-05``). Values are separated by ``", "`` and the line ends with a newline.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first (validated unless it is a Schedule).

    Returns
    -------
    str
        One line, newline-terminated.

    Raises
    ------
    InputError
        An invalid schedule, or one ending at pure noise (``ab_S = 0``, sigma = inf).
    """
    ab = as_alphas_cumprod(schedule, zero_terminal=True)
    _check_finite_sigmas(ab, "sigmas-text")
    return _sigmas_text(_array(ab, "k-diffusion"))


def _sigmas_text(sigmas: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in sigmas) + "\n"


def _step_ranges(steps: np.ndarray) -> str:
    """``"steps 1-3, 7"`` for 0-based step indices (printed 1-based, step 1 least noisy)."""
    parts, start = [], None
    steps = [int(s) + 1 for s in steps]
    for i, s in enumerate(steps):
        start = s if start is None else start
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(parts)


def training_grid_warnings(schedule, training_schedule: str = "linear",
                           num_train_timesteps: int = 1000) -> list[str]:
    """Warnings for steps whose noise level lies outside a model's training grid.

    Neither library says so when it clamps: diffusers' ``_sigma_to_t`` (Euler-type
    schedulers) and k-diffusion's ``DiscreteSchedule.sigma_to_t`` clip the interpolation
    weight to [0, 1], so a sigma below the grid's smallest is given to the network as timestep
    0 (and one above its largest as T - 1), and the nearest timestep of such a step is 0 (or
    T - 1) whatever its distance. With the exact denoiser nothing is lost; a trained network is
    told a level that is not the one its input is at.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
    training_schedule : {"linear", "scaled_linear", "cosine", "sigmoid"}
    num_train_timesteps : int

    Returns
    -------
    list of str
        Empty when every ``sigma_s`` lies within ``[sigma_train[0], sigma_train[T-1]]``.
    """
    return _grid_warnings(as_alphas_cumprod(schedule), training_schedule, num_train_timesteps)


def _grid_warnings(ab: np.ndarray, training_schedule: str, num_train_timesteps: int):
    train = training_alphas_cumprod(training_schedule, num_train_timesteps)
    sig, lo, hi = _sigmas(ab), float(_sigmas(train[:1])[0]), float(_sigmas(train[-1:])[0])
    grid = f"the {training_schedule} T={num_train_timesteps} training grid"

    def where(steps):
        lo_, hi_ = sig[steps].min(), sig[steps].max()
        level = f"sigma {lo_:.4g}" if steps.size == 1 else f"sigma {lo_:.4g} to {hi_:.4g}"
        return f"{_step_ranges(steps)} ({level}) {'lies' if steps.size == 1 else 'lie'}"

    out = []
    below = np.flatnonzero(sig < lo * (1 - 1e-6))
    if below.size:
        out.append(
            f"{where(below)} below {grid} (smallest sigma {lo:.4g}, t = 0): diffusers' "
            "Euler-type schedulers and k-diffusion's DiscreteEpsDDPMDenoiser clamp the "
            "network's timestep to 0 there without a word, and the nearest timestep is 0")
    above = np.flatnonzero(sig > hi * (1 + 1e-6))
    if above.size:
        out.append(
            f"{where(above)} above {grid} (largest sigma {hi:.4g}, t = "
            f"{num_train_timesteps - 1}): the libraries clamp the network's timestep to "
            f"{num_train_timesteps - 1} there")
    return out


def export_diffusers(schedule, num_train_timesteps: int = 1000,
                     training_schedule: str = "linear") -> dict:
    """What diffusers' schedulers take, for a model trained on T steps.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first (validated unless it is a Schedule).
    num_train_timesteps : int
        T of the model (1000 by default).
    training_schedule : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Its beta schedule (diffusers' ``beta_schedule``; ``cosine`` is
        ``squaredcos_cap_v2``).

    Returns
    -------
    dict
        JSON-ready, the content of ``diffusers_schedule.json`` (docs/export.md) plus
        ``scheduler_config``:

        - ``format`` ("specsched.diffusers-export"), ``version``, ``steps`` (S),
          ``num_train_timesteps``, ``training_schedule``, ``scheduler_args`` (the diffusers
          scheduler arguments of that grid: ``DDPMScheduler(**scheduler_args)``);
        - ``timesteps``: S ints, descending (diffusers' run order), or None when two steps
          round to the same training step; ``timesteps_problem`` then says which (else None);
        - ``alphas_cumprod_run``: the training ``alphas_cumprod[timesteps]``, step 1 first
          (the schedule a ``DDPMScheduler`` actually runs), or None;
        - ``logsnr_rounding_error`` (max over steps of ``|logsnr_train[t_s] - logsnr_s|``,
          nats) and ``logsnr_rounding_errors`` (per step, step 1 first), or None;
        - ``sigmas``: S + 1 floats, descending, last 0, always (for
          ``EulerDiscreteScheduler.set_timesteps(sigmas=...)`` and k-diffusion);
        - ``layout``: for each array, its order and last value, in words;
        - ``scheduler_config``: a ``DDPMScheduler`` config with ``trained_betas`` when
          S == T, else None;
        - ``warnings`` (list of str: timesteps not written, levels outside the training grid)
          and ``notes`` (list of str: DDIMScheduler, clip_sample, Euler and spacing).

    Raises
    ------
    InputError
        Invalid schedule, unknown training family or bad T, a schedule ending at pure noise
        (``ab_S = 0``: :func:`export_diffusers_flow`).
    """
    ab = as_alphas_cumprod(schedule, zero_terminal=True)
    _check_finite_sigmas(ab, "diffusers")
    return _diffusers_info(ab, num_train_timesteps, training_schedule)


def _diffusers_info(ab: np.ndarray, num_train_timesteps: int, training_schedule: str) -> dict:
    _check_choice(training_schedule, "training_schedule", TRAINING_FAMILIES)
    T = int(num_train_timesteps)
    S = ab.size
    train = training_alphas_cumprod(training_schedule, T)
    t, errors = _nearest_timesteps(ab, training_schedule, T)
    sigmas = _array(ab, "k-diffusion")
    grid = f"the {training_schedule} T={T} training grid"
    warnings_ = []
    dup = np.flatnonzero(np.diff(t) == 0)
    problem = None
    if dup.size:
        s = int(dup[0])
        problem = (
            f"steps {s + 1} and {s + 2} (of {S}, step 1 least noisy) both round to training "
            f"step {t[s]} of {grid}, and diffusers needs strictly descending timesteps: no "
            "timesteps are written. The 'sigmas' here have no such limit "
            "(EulerDiscreteScheduler.set_timesteps(sigmas=...), or export --to k-diffusion)")
        warnings_.append(problem)
    warnings_ += _grid_warnings(ab, training_schedule, T)
    layout = {
        "sigmas": f"noisiest first, descending, {S + 1} values, the last one 0 (a final 0 as "
                  "diffusers' set_timesteps(sigmas=...) and k-diffusion take it)",
    }
    if problem is None:
        layout["timesteps"] = (f"noisiest first, descending (scheduler.timesteps order), {S} "
                               f"ints, last {int(t[0])}")
        layout["alphas_cumprod_run"] = (f"step 1 (least noisy) first, descending, {S} values, "
                                        f"last {train[t[-1]]:.6g} (no final 1)")
    config = None
    if S == T:
        config = {
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": S,
            "trained_betas": _betas(ab).tolist(),
            # ignored by diffusers when trained_betas is given; they name the grid for readers
            **DIFFUSERS_SCHEDULER_ARGS[training_schedule],
            "prediction_type": "epsilon",
            "variance_type": "fixed_small",
            "clip_sample": False,
        }
    notes = [DDIM_WARNING, CLIP_NOTE, EULER_NOTE]
    if config is None:
        notes.append(
            f"no scheduler_config: trained_betas defines the TRAINING grid of a model (T = "
            f"number of betas); this schedule has S = {S} steps, and a T = {T} model was "
            "trained on other levels, so use 'timesteps' or 'sigmas' to sample it")
    ok = problem is None
    return {
        "format": DIFFUSERS_FORMAT,
        "version": EXPORT_VERSION,
        "steps": S,
        "num_train_timesteps": T,
        "training_schedule": training_schedule,
        "scheduler_args": {"num_train_timesteps": T, **DIFFUSERS_SCHEDULER_ARGS[training_schedule]},
        "timesteps": t[::-1].tolist() if ok else None,
        "timesteps_problem": problem,
        "alphas_cumprod_run": train[t].tolist() if ok else None,
        "logsnr_rounding_error": float(errors.max()) if ok else None,
        "logsnr_rounding_errors": errors.tolist() if ok else None,
        "sigmas": sigmas.tolist(),
        "layout": layout,
        "scheduler_config": config,
        "warnings": warnings_,
        "notes": notes,
    }


def export_diffusers_flow(schedule, num_train_timesteps: int = 1000) -> dict:
    """What diffusers' ``FlowMatchEulerDiscreteScheduler`` takes (Stable Diffusion 3, Flux).

    diffusers calls the flow-matching time ``t`` "sigma" (``x_t = (1 - t) x_0 + t eps``;
    docs/theory.md section 10). ``set_timesteps(sigmas=...)`` takes ``(t_S, ..., t_1)``,
    noisiest first, and appends the final 0 itself; it first applies the scheduler's ``shift``
    (or, with ``use_dynamic_shifting``, its exponential ``time_shift(mu)``) to what it is
    given, so the scheduler must be built with ``shift=1.0`` and no dynamic shift
    (:data:`FLOW_SCHEDULER_ARGS`) to run these times as they are. It then computes in float32:
    ``timesteps = float32(sigmas) * num_train_timesteps``, the ``t`` the pipelines loop over.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first (validated unless it is a Schedule); ``ab_S = 0``
        (``t_S = 1``, pure noise) allowed. Any VP schedule has times ``t = sigma / (1 +
        sigma)``; a flow-matching model run on them is specsched's ``fm-euler``, which is the
        same law as ``ddim`` on the same levels only when ``t_S = 1``.
    num_train_timesteps : int
        The scheduler's ``num_train_timesteps`` (1000 for SD3 and Flux).

    Returns
    -------
    dict
        JSON-ready, the content of ``diffusers_flow_schedule.json`` (docs/export.md):

        - ``format`` ("specsched.diffusers-flow-export"), ``version``, ``steps`` (S),
          ``num_train_timesteps``, ``scheduler_class`` ("FlowMatchEulerDiscreteScheduler"),
          ``scheduler_args`` (:data:`FLOW_SCHEDULER_ARGS`);
        - ``sigmas``: S floats (float64), ``t_S, ..., t_1``, descending, no final 0; the first
          is 1.0 when the schedule starts from pure noise;
        - ``timesteps``: S floats, ``float32(sigmas) * num_train_timesteps`` rounded to
          float32 as diffusers computes ``scheduler.timesteps`` (the pipelines' ``t``; a
          check, not an input);
        - ``starts_from_pure_noise``: ``t_S == 1``;
        - ``layout``: for each array, its order and first and last value, in words;
        - ``warnings`` (list of str: none here; :func:`write_export` adds one for a schedule
          whose ``param`` is not ``"fm"``) and ``notes`` (shift, Euler, Heun, the start).

    Raises
    ------
    InputError
        Invalid schedule, ``num_train_timesteps`` not an integer >= 1.
    """
    return _diffusers_flow_info(as_alphas_cumprod(schedule, zero_terminal=True),
                                num_train_timesteps)


def _diffusers_flow_info(ab: np.ndarray, num_train_timesteps: int) -> dict:
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    S = ab.size
    sigmas = _fm_times(ab)[::-1]
    timesteps = (sigmas.astype(np.float32) * np.float32(T)).astype(np.float32)
    pure = bool(sigmas[0] == 1.0)
    start = "1.0 (pure noise)" if pure else f"{sigmas[0]:.6g} (< 1: not pure noise)"
    layout = {
        "sigmas": f"noisiest first, descending, {S} values (flow-matching times t_S, ..., "
                  f"t_1), first {start}, last {sigmas[-1]:.6g}, no final 0: "
                  "FlowMatchEulerDiscreteScheduler(**scheduler_args).set_timesteps("
                  "sigmas=...) appends it; scheduler_args has shift=1.0 and "
                  "use_dynamic_shifting=False, or diffusers shifts these sigmas again",
        "timesteps": f"noisiest first, descending, {S} floats, sigmas * {T} in float32 as "
                     f"diffusers computes scheduler.timesteps (the pipelines' t), first "
                     f"{float(timesteps[0]):.6g}, last {float(timesteps[-1]):.6g}; a check: "
                     "pass the sigmas",
    }
    notes = [SHIFT_NOTE, FLOW_EULER_NOTE]
    if not pure:
        notes.append(
            f"the first sigma is t_S = {sigmas[0]:.6g} < 1: the pipelines start from x = randn "
            "at sigmas[0] whatever it is, i.e. N(0, 1) at t_S, which is not the data's law "
            "there (N((1 - t) m, (1 - t)^2 C + t^2)); specsched's fm-euler evaluates exactly "
            "that start")
    return {
        "format": DIFFUSERS_FLOW_FORMAT,
        "version": EXPORT_VERSION,
        "steps": S,
        "num_train_timesteps": T,
        "scheduler_class": "FlowMatchEulerDiscreteScheduler",
        "scheduler_args": dict(FLOW_SCHEDULER_ARGS),
        "sigmas": sigmas.tolist(),
        "timesteps": [float(v) for v in timesteps],
        "starts_from_pure_noise": pure,
        "layout": layout,
        "warnings": [],
        "notes": notes,
    }


def _param_warning(schedule, to: str) -> list[str]:
    """A warning for a schedule not made for flow matching exported for a flow-matching
    sampler (``param`` other than ``"fm"``; a bare array says nothing, so no warning)."""
    param = getattr(schedule, "param", None) if isinstance(schedule, Schedule) else None
    if param in (None, "fm"):
        return []
    sampler = f", sampler {schedule.sampler!r}" if schedule.sampler else ""
    return [f"made for param {param!r}{sampler}: its levels are written as flow-matching "
            f"times t = sigma / (1 + sigma) (the same logSNR), but a flow-matching model "
            f"sampled on them (--to {to}) runs another process, specsched's fm-euler (the "
            "same law as ddim only from t_S = 1): evaluate it with --sampler fm-euler"]


@dataclass(frozen=True)
class ExportReport:
    """What :func:`write_export` wrote and what the user should know about it.

    Attributes
    ----------
    paths : list of Path
        Files written.
    lines : list of str
        What each file holds (order, length, end values), for the command's output.
    warnings : list of str
        Traps the exporter can tell: timesteps not written, levels outside the training grid.
    notes : list of str
        Advice that always applies to the target (DDIMScheduler, clip_sample, spacing).
    """

    paths: list
    lines: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = path.suffix.lower().lstrip(".") or "npy"
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}; got {fmt!r} "
                         f"(from {path})")
    return fmt


def _json_text(content: dict) -> str:
    return json.dumps(content, indent=2, allow_nan=False) + "\n"


def _write_array(values: np.ndarray, kind: str, path: Path, fmt: str, force: bool) -> None:
    key, order = ARRAY_LAYOUTS[kind]
    if fmt == "npy":
        with atomic_write(path, force=force, mode="wb") as fh:
            np.save(fh, values)
    elif fmt == "txt":
        header = (f"specsched export --to {kind}: {describe_array(kind, values)}\n"
                  "one value per line; lines starting with # are comments (numpy.loadtxt "
                  "skips them)")
        with atomic_write(path, force=force, mode="w") as fh:
            np.savetxt(fh, values, fmt="%.17g", header=header)
    else:
        content = {"format": ARRAY_FORMAT, "version": EXPORT_VERSION, "kind": kind,
                   "order": order, "length": int(values.size), "first": float(values[0]),
                   "last": float(values[-1]), "ends_with_zero": bool(values[-1] == 0.0),
                   key: values.tolist()}
        with atomic_write(path, force=force, mode="w") as fh:
            fh.write(_json_text(content))


def write_export(schedule, to: str, out: str | os.PathLike, fmt: str | None = None,
                 force: bool = False, training_schedule: str = "linear",
                 num_train_timesteps: int = 1000) -> ExportReport:
    """Write an export of a schedule to disk (atomically, never overwriting without force).

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        Validated once here unless it is a Schedule.
    to : {"diffusers", "diffusers-flow", "k-diffusion", "sigmas-text", "ab", "betas", \
"sigmas", "t", "schedule"}
        ``diffusers``: ``out`` is a folder receiving ``diffusers_schedule.json``
        (:func:`export_diffusers`, without ``scheduler_config``) and, when S == T,
        ``scheduler_config.json``; ``diffusers-flow``: ``out`` is a ``.json`` file, or a
        folder receiving ``diffusers_flow_schedule.json`` (:func:`export_diffusers_flow`);
        ``schedule``: a specsched schedule file (:meth:`Schedule.save`); ``sigmas-text``: one
        line of text, :func:`export_sigmas_text` (whatever the suffix of ``out``; ``fmt``
        must be None or "txt"); otherwise one array file (:data:`ARRAY_LAYOUTS`). A schedule
        ending at pure noise (``ab_S = 0``) is refused by ``diffusers``, ``k-diffusion``,
        ``sigmas-text`` and ``sigmas`` (sigma = inf).
    out : path-like
    fmt : {"npy", "txt", "json"} or None
        Array file format; None takes it from the suffix of ``out`` (``npy`` without one).
        Text files carry a ``#`` header saying the kind, order and end values; JSON arrays
        are ``{"format": "specsched.array", "kind", "order", "first", "last",
        "ends_with_zero", "<key>": [...]}`` with key ``alphas_cumprod``, ``betas``,
        ``sigmas`` or ``t``.
    force : bool
        Overwrite existing files.
    training_schedule, num_train_timesteps
        The model's training grid (:func:`export_diffusers`; also the grid whose range the
        k-diffusion export is checked against); ``num_train_timesteps`` is also the scale of
        the ``diffusers-flow`` timesteps.

    Returns
    -------
    ExportReport

    Raises
    ------
    InputError
        Unknown target or format, invalid schedule, ``out`` not a folder for ``diffusers``, a
        ``fmt`` other than "txt" for ``sigmas-text`` or "json" for ``diffusers-flow``, a
        schedule ending at pure noise for a target made of sigmas (message naming the
        target and ``--to diffusers-flow`` / ``--to t``).
    OutputExistsError
        A file exists and ``force`` is false (checked before anything is written).

    Notes
    -----
    A :class:`Schedule` whose ``param`` is not ``"fm"`` exported with ``diffusers-flow`` or
    ``t`` gets a warning: the times exist for any schedule, but a flow-matching model run on
    them is another sampler than the one the schedule was made for.
    """
    if to not in EXPORT_TARGETS:
        raise InputError(f"--to: expected one of {', '.join(EXPORT_TARGETS)}; got {to!r}")
    ab = as_alphas_cumprod(schedule, zero_terminal=True)
    _check_finite_sigmas(ab, to)
    out = Path(out)
    if to == "schedule":
        sched = schedule if isinstance(schedule, Schedule) else Schedule(ab)
        check_writable(out, force)
        sched.save(out, force=force)
        return ExportReport([out], [f"schedule file: {sched.steps} steps, alphas_cumprod step 1 "
                                    "(least noisy) first"])
    if to == "diffusers":
        if out.exists() and not out.is_dir():
            raise InputError(f"--out: {out} exists and is not a folder (diffusers export)")
        info = _diffusers_info(ab, num_train_timesteps, training_schedule)
        config = info.pop("scheduler_config")
        info["scheduler_config_file"] = SCHEDULER_CONFIG_FILE if config is not None else None
        files = [(out / DIFFUSERS_FILE, info)]
        if config is not None:
            files.append((out / SCHEDULER_CONFIG_FILE, config))
        for path, _ in files:
            check_writable(path, force)
        for path, content in files:
            with atomic_write(path, force=force, mode="w") as fh:
                fh.write(_json_text(content))
        lines = [f"{key}: {text}" for key, text in info["layout"].items()]
        if info["timesteps"] is not None:
            lines.insert(0, f"timesteps {info['timesteps']} (nearest {training_schedule} "
                            f"T={info['num_train_timesteps']} training steps; max logSNR "
                            f"rounding error {info['logsnr_rounding_error']:.4g} nats)")
        if config is not None:
            lines.append(f"{SCHEDULER_CONFIG_FILE}: DDPMScheduler with trained_betas "
                         f"({config['num_train_timesteps']} values, step 1 first)")
        return ExportReport([p for p, _ in files], lines, info["warnings"], info["notes"])
    if to == "diffusers-flow":
        if fmt not in (None, "json"):
            raise InputError(f"--format: --to diffusers-flow writes JSON; got {fmt!r}")
        if out.is_dir() or out.suffix.lower() != ".json":
            if out.exists() and not out.is_dir():
                raise InputError(f"--out: {out} exists and is not a folder or a .json file "
                                 "(diffusers-flow export)")
            out = out / DIFFUSERS_FLOW_FILE
        info = _diffusers_flow_info(ab, num_train_timesteps)
        info["warnings"] = _param_warning(schedule, to)
        check_writable(out, force)
        with atomic_write(out, force=force, mode="w") as fh:
            fh.write(_json_text(info))
        lines = [f"{key}: {text}" for key, text in info["layout"].items()]
        return ExportReport([out], lines, info["warnings"], info["notes"])
    if to == "sigmas-text":
        if fmt not in (None, "txt"):
            raise InputError(f"--format: --to sigmas-text writes one line of text; got {fmt!r}")
        sigmas = _array(ab, "k-diffusion")
        check_writable(out, force)
        with atomic_write(out, force=force, mode="w") as fh:
            fh.write(_sigmas_text(sigmas))
        return ExportReport(
            [out], [f"sigmas-text: {describe_array('k-diffusion', sigmas)}; one line, "
                    "comma-separated, each value the shortest decimal of its float64"],
            _grid_warnings(ab, training_schedule, num_train_timesteps),
            ["paste the line into ComfyUI's manual-sigmas node or an A1111 custom "
             "schedule; it is what --to k-diffusion writes, as text"])
    fmt = _format_of(out, fmt)
    values = _array(ab, to)
    check_writable(out, force)
    _write_array(values, to, out, fmt, force)
    warnings_ = []
    notes = []
    if to in ("k-diffusion", "sigmas"):
        warnings_ = _grid_warnings(ab, training_schedule, num_train_timesteps)
    if to == "sigmas":
        notes.append("these sigmas are step 1 first with no final 0; diffusers' "
                     "set_timesteps(sigmas=...) and k-diffusion's samplers take "
                     "(sigma_S, ..., sigma_1, 0): use --to k-diffusion for them")
    if to == "t":
        warnings_ = _param_warning(schedule, to)
        notes.append("these times are step 1 first; FlowMatchEulerDiscreteScheduler's "
                     "set_timesteps(sigmas=...) takes (t_S, ..., t_1), noisiest first, without "
                     "the final 0, on a scheduler built with shift=1.0: use --to "
                     "diffusers-flow for it")
    return ExportReport([out], [describe_array(to, values)], warnings_, notes)
