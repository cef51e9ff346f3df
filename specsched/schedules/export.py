r"""Export a schedule for other samplers and trainers: diffusers, k-diffusion, plain arrays.

Notation (docs/theory.md section 1): ``ab = (ab_1, ..., ab_S)``, step 1 (least noisy) first,
``ab_0 = 1`` implied; ``sigma_s = sqrt((1 - ab_s) / ab_s)``; ``logsnr_s = -2 log sigma_s``.
Other libraries run the noisiest step first, so their arrays are the reverse of ours:

- diffusers ``timesteps`` (``DDPMScheduler.set_timesteps(timesteps=...)``,
  ``DPMSolverMultistepScheduler``, ...): descending training indices of a T = 1000 model, the
  training step nearest in logSNR to each ``ab_s`` (the schedule actually run is then
  ``alphas_cumprod[timesteps]``, and the rounding error is reported in logSNR);
- diffusers ``sigmas`` (``EulerDiscreteScheduler.set_timesteps(sigmas=...)`` and other
  Karras/EDM-style schedulers): ``(sigma_S, ..., sigma_1, 0)``, the schedule's own levels
  (diffusers interpolates a fractional timestep for the model);
- diffusers ``scheduler_config.json`` with ``trained_betas`` (only meaningful when the
  schedule is a full training grid, S == T);
- k-diffusion: ``sigmas = (sigma_S, ..., sigma_1, 0)`` for ``sample_euler`` & co.;
- plain arrays (``ab``, ``betas``, ``sigmas``), step 1 first, as ``.npy``, ``.txt`` or JSON.

diffusers' ``DDIMScheduler.set_timesteps`` takes no custom timesteps, and its ``step`` lands
on ``t - T // S`` rather than the next timestep (diffusers issues 11347, 12633; see
:mod:`specsched.theory.unchained`): use ``DDPMScheduler`` (or DDIM-like solvers that accept
timesteps) with the exported timesteps instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from specsched.errors import InputError
from specsched.fileio import atomic_write, check_writable
from specsched.schedules.conversions import (
    as_alphas_cumprod,
    betas_from_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    sigmas_from_alphas_cumprod,
)
from specsched.schedules.families import (
    nearest_training_timesteps_with_error,
    training_alphas_cumprod,
)

__all__ = [
    "DDIM_WARNING",
    "EXPORT_FORMATS",
    "EXPORT_TARGETS",
    "export_array",
    "export_diffusers",
    "export_k_diffusion",
    "write_export",
]

EXPORT_TARGETS = ("diffusers", "k-diffusion", "ab", "betas", "sigmas")
EXPORT_FORMATS = ("npy", "txt", "json")

DDIM_WARNING = (
    "warning: diffusers' DDIMScheduler ignores custom timesteps (set_timesteps takes only "
    "num_inference_steps) and its step() lands on t - T // S instead of the next timestep "
    "(diffusers issues 11347, 12633); use DDPMScheduler(timesteps=...) or a scheduler that "
    "accepts timesteps or sigmas"
)


def export_array(schedule, kind: str) -> np.ndarray:
    """A plain view of a schedule, step 1 (least noisy) first.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first.
    kind : {"ab", "betas", "sigmas"}
        ``alphas_cumprod``; ``beta_s = 1 - ab_s / ab_{s-1}`` (``ab_0 = 1``);
        ``sigma_s = sqrt((1 - ab_s) / ab_s)`` (docs/theory.md section 1).

    Returns
    -------
    ndarray of shape (n_steps,), float64

    Raises
    ------
    InputError
        Unknown ``kind`` or an invalid schedule.
    """
    ab = as_alphas_cumprod(schedule)
    if kind == "ab":
        return ab
    if kind == "betas":
        return betas_from_alphas_cumprod(ab)
    if kind == "sigmas":
        return sigmas_from_alphas_cumprod(ab)
    raise InputError(f"kind: expected one of ab, betas, sigmas; got {kind!r}")


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
        the start is ``x = sigmas[0] * randn``. Source: Karras et al. 2022; k-diffusion
        ``get_sigmas_karras`` appends the same final 0.
    """
    return np.concatenate([sigmas_from_alphas_cumprod(as_alphas_cumprod(schedule))[::-1], [0.0]])


def export_diffusers(schedule, num_train_timesteps: int = 1000,
                     training_schedule: str = "linear") -> dict:
    """What diffusers' schedulers take, for a model trained on T steps.

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
        alphas_cumprod, step 1 first.
    num_train_timesteps : int
        T of the model (1000 by default).
    training_schedule : {"linear", "scaled_linear", "cosine", "sigmoid"}
        Its beta schedule (diffusers' ``beta_schedule``).

    Returns
    -------
    dict
        JSON-ready: ``timesteps`` (S ints, descending: diffusers' order), ``alphas_cumprod_run``
        (the training ``alphas_cumprod[timesteps]``, step 1 first: the schedule a
        ``DDPMScheduler`` actually runs), ``logsnr_rounding_error`` (max over steps of
        ``|logsnr_train[t_s] - logsnr_s|``, nats) and ``logsnr_rounding_errors`` (per step,
        step 1 first), ``sigmas`` (S + 1 floats, descending, last 0: for
        ``EulerDiscreteScheduler.set_timesteps(sigmas=...)``), ``scheduler_config`` (a
        ``DDPMScheduler`` config with ``trained_betas`` when S == T, else None),
        ``num_train_timesteps``, ``training_schedule`` and ``notes`` (list of str).

    Raises
    ------
    InputError
        Invalid schedule, or two steps rounding to the same training step (diffusers needs
        strictly descending timesteps; the message names the steps).
    """
    ab = as_alphas_cumprod(schedule)
    S = ab.size
    t, err = nearest_training_timesteps_with_error(ab, training_schedule, num_train_timesteps)
    dup = np.flatnonzero(np.diff(t) == 0)
    if dup.size:
        s = int(dup[0])
        raise InputError(
            f"alphas_cumprod: steps {s + 1} and {s + 2} both round to training step {t[s]} of "
            f"the {training_schedule} T={num_train_timesteps} grid; diffusers needs distinct "
            "timesteps (use the sigmas export, or fewer steps)")
    train = training_alphas_cumprod(training_schedule, num_train_timesteps)
    errors = np.abs(logsnr_from_alphas_cumprod(train[t]) - logsnr_from_alphas_cumprod(ab))
    notes = [DDIM_WARNING]
    config = None
    if S == num_train_timesteps:
        config = {
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": S,
            "trained_betas": betas_from_alphas_cumprod(ab).tolist(),
            "beta_schedule": "linear",  # ignored by diffusers when trained_betas is given
            "prediction_type": "epsilon",
            "clip_sample": False,
        }
    else:
        notes.append(
            f"no scheduler_config: trained_betas defines the TRAINING grid of a model (T = "
            f"number of betas); this schedule has S = {S} steps, and a T = "
            f"{num_train_timesteps} model was trained on other levels, so use 'timesteps' "
            "or 'sigmas' to sample it")
    return {
        "timesteps": t[::-1].tolist(),
        "alphas_cumprod_run": train[t].tolist(),
        "logsnr_rounding_error": float(err),
        "logsnr_rounding_errors": errors.tolist(),
        "sigmas": export_k_diffusion(ab).tolist(),
        "scheduler_config": config,
        "num_train_timesteps": int(num_train_timesteps),
        "training_schedule": training_schedule,
        "notes": notes,
    }


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = path.suffix.lower().lstrip(".") or "npy"
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}; got {fmt!r} "
                         f"(from {path})")
    return fmt


def _write_array(values: np.ndarray, path: Path, fmt: str, force: bool, key: str) -> None:
    if fmt == "npy":
        with atomic_write(path, force=force, mode="wb") as fh:
            np.save(fh, values)
    elif fmt == "txt":
        with atomic_write(path, force=force, mode="w") as fh:
            np.savetxt(fh, values, fmt="%.17g")
    else:
        with atomic_write(path, force=force, mode="w") as fh:
            fh.write(json.dumps({key: values.tolist()}, indent=2) + "\n")


def write_export(schedule, to: str, out: str | os.PathLike, fmt: str | None = None,
                 force: bool = False) -> list[Path]:
    """Write an export of a schedule to disk (atomically, never overwriting without force).

    Parameters
    ----------
    schedule : Schedule or array-like of shape (n_steps,)
    to : {"diffusers", "k-diffusion", "ab", "betas", "sigmas"}
        ``diffusers``: ``out`` is a folder receiving ``diffusers_schedule.json``
        (:func:`export_diffusers`) and, when S == 1000, ``scheduler_config.json``;
        otherwise one array file (:func:`export_k_diffusion` or :func:`export_array`).
    out : path-like
    fmt : {"npy", "txt", "json"} or None
        Array file format; None takes it from the suffix of ``out`` (``npy`` without one).
        JSON arrays are stored as ``{"<kind>": [...]}``.
    force : bool
        Overwrite existing files.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    InputError
        Unknown target or format, invalid schedule.
    OutputExistsError
        A file exists and ``force`` is false (checked before anything is written).
    """
    if to not in EXPORT_TARGETS:
        raise InputError(f"--to: expected one of {', '.join(EXPORT_TARGETS)}; got {to!r}")
    out = Path(out)
    if to == "diffusers":
        if out.exists() and not out.is_dir():
            raise InputError(f"--out: {out} exists and is not a folder (diffusers export)")
        info = export_diffusers(schedule)
        files = [(out / "diffusers_schedule.json", {k: v for k, v in info.items()
                                                   if k != "scheduler_config"})]
        if info["scheduler_config"] is not None:
            files.append((out / "scheduler_config.json", info["scheduler_config"]))
        for path, _ in files:
            check_writable(path, force)
        for path, content in files:
            with atomic_write(path, force=force, mode="w") as fh:
                fh.write(json.dumps(content, indent=2) + "\n")
        return [p for p, _ in files]
    fmt = _format_of(out, fmt)
    values = export_k_diffusion(schedule) if to == "k-diffusion" else export_array(schedule, to)
    key = {"k-diffusion": "sigmas", "ab": "alphas_cumprod"}.get(to, to)
    check_writable(out, force)
    _write_array(values, out, fmt, force, key)
    return [out]
