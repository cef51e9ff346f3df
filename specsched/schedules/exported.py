"""Reading back what ``specsched export`` wrote, as the levels a library will run.

Notation (docs/theory.md section 1): the levels come back as ``alphas_cumprod`` ``(ab_1, ...,
ab_S)``, step 1 (least noisy) first, whatever the order of the file:

- a diffusers export (``diffusers_schedule.json`` or its folder): ``levels="timesteps"`` gives
  the training ``alphas_cumprod[timesteps]`` that ``DDPMScheduler`` /
  ``DPMSolverMultistepScheduler(timesteps=...)`` run (recomputed from ``timesteps`` and the
  training grid named in the file); ``levels="sigmas"`` the ``ab = 1 / (1 + sigma^2)`` of its
  ``sigmas`` (noisiest first, final 0), what ``EulerDiscreteScheduler(sigmas=...)`` runs;
- a diffusers flow-matching export (``diffusers_flow_schedule.json`` or its folder): its
  ``sigmas`` are flow-matching times ``(t_S, ..., t_1)``, read back as ``levels="t"``
  (``ab = (1 - t)^2 / ((1 - t)^2 + t^2)``, ``ab_S = 0`` at ``t_S = 1``; docs/theory.md
  section 10), what ``FlowMatchEulerDiscreteScheduler(shift=1.0)`` runs;
- an array file (:data:`specsched.schedules.export.ARRAY_LAYOUTS`): JSON and text files say
  their kind; a bare ``.npy`` does not, so ``levels`` names it (``k-diffusion`` is inferred
  when the array is descending and ends in 0, the one layout no other kind can have); a
  ``t`` array may end at 1 (pure noise, ``ab_S = 0``);
- a specsched schedule file: its ``alphas_cumprod``.

A file in the wrong order is refused with the order it has and the kind it looks like: an
ascending ``--to sigmas`` array read as k-diffusion sigmas would sample from the least noisy
level upwards (W2 of order 1e5 on CIFAR-10, where the schedule gives ~6).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specsched.data.arrays import read_array
from specsched.errors import InputError
from specsched.schedules.conversions import (
    _as_float64,
    _fm_alphas_cumprod,
    alphas_cumprod_from_betas,
    alphas_cumprod_from_sigmas,
    validate_alphas_cumprod,
    validate_fm_times,
)
from specsched.schedules.export import (
    ARRAY_FORMAT,
    ARRAY_LAYOUTS,
    DIFFUSERS_FILE,
    DIFFUSERS_FLOW_FILE,
    DIFFUSERS_FLOW_FORMAT,
    DIFFUSERS_FORMAT,
    EXPORT_VERSION,
)
from specsched.schedules.families import TRAINING_FAMILIES, training_alphas_cumprod
from specsched.schedules.jsonfile import read_json_object
from specsched.schedules.schedule import SCHEDULE_FORMAT, Schedule

__all__ = ["LEVELS", "ExportedLevels", "read_levels"]

#: Which array of a file to read: a diffusers export's ``timesteps`` or ``sigmas``, or the
#: kind of an array file.
LEVELS = ("timesteps", "sigmas", "k-diffusion", "ab", "betas", "t")
_TXT_KIND = re.compile(r"^#\s*specsched export --to ([a-z-]+):")


@dataclass(frozen=True)
class ExportedLevels:
    """The levels a file describes, step 1 first, and where they came from.

    Attributes
    ----------
    alphas_cumprod : ndarray of shape (n_steps,), float64
        Validated: strictly decreasing in (0, 1), step 1 (least noisy) first; ``ab_S = 0``
        (pure noise) only from flow-matching times (``levels="t"``) and schedule files of
        param fm.
    levels : str
        ``"schedule"`` for a schedule file, else one of :data:`LEVELS`.
    source : str
        The file read.
    schedule : Schedule or None
        The schedule file's content (its ``sampler`` and ``eta``), when it is one.
    timesteps : ndarray of shape (n_steps,), int64, or None
        Descending training timesteps (diffusers' run order) for ``levels="timesteps"``.
    training_schedule : str or None
        The training grid of a diffusers export.
    num_train_timesteps : int or None
    """

    alphas_cumprod: np.ndarray
    levels: str
    source: str
    schedule: Schedule | None = None
    timesteps: np.ndarray | None = None
    training_schedule: str | None = None
    num_train_timesteps: int | None = None


def _order(values: np.ndarray) -> str:
    d = np.diff(values)
    if d.size and np.all(d > 0):
        return "ascending"
    if d.size and np.all(d < 0):
        return "descending"
    return "not monotone"


def _from_sigmas(sig: np.ndarray, key: str) -> np.ndarray:
    """alphas_cumprod of step-1-first sigmas (strictly ascending, > 0)."""
    bad = np.flatnonzero(~(sig > 0))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{key}[{i}]: expected a noise level > 0, got {float(sig[i])!r}")
    return validate_alphas_cumprod(alphas_cumprod_from_sigmas(sig), f"alphas_cumprod of {key}")


def _from_fm_times(t: np.ndarray, key: str) -> np.ndarray:
    """alphas_cumprod of step-1-first flow-matching times (strictly ascending, in (0, 1])."""
    return validate_alphas_cumprod(_fm_alphas_cumprod(validate_fm_times(t, key)),
                                   f"alphas_cumprod of {key}", zero_terminal=True)


def _levels_of_array(kind: str, values, key: str) -> np.ndarray:
    """alphas_cumprod (step 1 first) of an exported array of ``kind``; InputError names ``key``."""
    arr = _as_float64(values, key, one_d=True)
    if kind == "ab":
        return validate_alphas_cumprod(arr, key)
    if kind == "betas":
        return validate_alphas_cumprod(alphas_cumprod_from_betas(arr), f"alphas_cumprod of {key}")
    order = _order(arr)
    if kind == "t":
        if order != "ascending" and arr.size > 1:
            hint = (": this is the noisiest-first layout of diffusers' flow-matching sigmas "
                    "(export --to diffusers-flow); reverse it" if order == "descending" else "")
            raise InputError(f"{key}: expected ascending flow-matching times, step 1 (least "
                             f"noisy) first, as export --to t writes them; got {order} "
                             f"values{hint}")
        return _from_fm_times(arr, key)
    if kind == "sigmas":
        if order != "ascending":
            hint = (": this is the noisiest-first layout with a final 0 (k-diffusion, "
                    "diffusers' sigmas=); read it as k-diffusion levels" if arr[-1] == 0 else "")
            raise InputError(f"{key}: expected ascending sigmas, step 1 (least noisy) first, as "
                             f"export --to sigmas writes them; got {order} values{hint}")
        return _from_sigmas(arr, key)
    if arr[-1] != 0.0 or arr.size < 2:
        hint = (": ascending without a final 0 is what export --to sigmas writes; read it as "
                "sigmas" if order == "ascending" else "")
        raise InputError(f"{key}: expected k-diffusion sigmas, noisiest first, descending, "
                         f"S + 1 values ending in 0; got {arr.size} {order} value(s) ending in "
                         f"{float(arr[-1])!r}{hint}")
    if _order(arr[:-1]) != "descending" or arr[-2] <= 0:
        raise InputError(f"{key}: expected k-diffusion sigmas strictly descending before the "
                         f"final 0, got {_order(arr[:-1])} values")
    return _from_sigmas(arr[:-1][::-1], key)


def _array_levels(kind: str, values, path: Path) -> ExportedLevels:
    """ExportedLevels of an array file's values; errors start with the file."""
    try:
        ab = _levels_of_array(kind, values, ARRAY_LAYOUTS[kind][0])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return ExportedLevels(ab, kind, str(path))


def _check_kind(stated: str, levels: str | None, source) -> str:
    if levels is not None and levels != stated:
        raise InputError(f"{source}: the file holds {stated} levels; asked for {levels}")
    return stated


def _read_npy(path: Path, levels: str | None) -> ExportedLevels:
    arr = np.asarray(read_array(path))
    if levels is None and arr.ndim == 1 and arr.size >= 2 and arr[-1] == 0 \
            and _order(arr[:-1]) == "descending":
        levels = "k-diffusion"  # the one layout no other kind can have
    if levels in (None, "timesteps"):
        raise InputError(f"{path}: a .npy does not say which levels it holds; name them (one "
                         "of sigmas, k-diffusion, ab, betas, t: the command's --levels)")
    return _array_levels(levels, arr, path)


def _read_txt(path: Path, levels: str | None) -> ExportedLevels:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable text array ({exc})") from None
    match = _TXT_KIND.match(first)
    if match and match.group(1) in ARRAY_LAYOUTS:
        levels = _check_kind(match.group(1), levels, path)
    elif levels is None or levels == "timesteps":
        raise InputError(f"{path}: no 'specsched export' header says which levels the file "
                         "holds; name them (sigmas, k-diffusion, ab, betas, t; the command's "
                         "--levels)")
    return _array_levels(levels, values, path)


def _read_array_json(d: dict, path: Path, levels: str | None) -> ExportedLevels:
    kind = d.get("kind")
    if kind not in ARRAY_LAYOUTS:
        raise InputError(f"{path}: kind: expected one of {', '.join(ARRAY_LAYOUTS)}, "
                         f"got {kind!r}")
    levels = _check_kind(kind, levels, path)
    key = ARRAY_LAYOUTS[kind][0]
    if key not in d:
        raise InputError(f"{path}: {key}: required field is missing")
    return _array_levels(kind, d[key], path)


def _read_diffusers(d: dict, path: Path, levels: str) -> ExportedLevels:
    family, T = d.get("training_schedule"), d.get("num_train_timesteps")
    if family not in TRAINING_FAMILIES:
        raise InputError(f"{path}: training_schedule: expected one of "
                         f"{', '.join(TRAINING_FAMILIES)}, got {family!r}")
    if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= 10**6:
        raise InputError(f"{path}: num_train_timesteps: expected an integer in [1, 1000000], "
                         f"got {T!r}")
    if levels in ("sigmas", "k-diffusion"):
        try:
            ab = _levels_of_array("k-diffusion", d.get("sigmas"), "sigmas")
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        return ExportedLevels(ab, "sigmas", str(path), training_schedule=family,
                              num_train_timesteps=T)
    if levels != "timesteps":
        raise InputError(f"{path}: a diffusers export holds timesteps and sigmas; asked for "
                         f"{levels}")
    ts = d.get("timesteps")
    if ts is None:
        problem = d.get("timesteps_problem") or "no timesteps in the file"
        raise InputError(f"{path}: timesteps: none were written ({problem}); evaluate its "
                         "sigmas instead (--levels sigmas, e.g. with --sampler ddim-ve for "
                         "Euler)")
    if not isinstance(ts, list) or not ts or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in ts):
        raise InputError(f"{path}: timesteps: expected a non-empty array of integers, "
                         f"got {str(ts)[:60]}")
    t = np.array(ts, dtype=np.int64)
    bad = np.flatnonzero((t < 0) | (t > T - 1))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}: timesteps[{i}]: expected a training step in [0, {T - 1}], "
                         f"got {int(t[i])}")
    bad = np.flatnonzero(np.diff(t) >= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise InputError(f"{path}: timesteps[{i}]: expected strictly descending timesteps "
                         f"(noisiest first, as diffusers runs them), got {int(t[i])} after "
                         f"{int(t[i - 1])}")
    ab = training_alphas_cumprod(family, T)[t[::-1]]
    stored = d.get("alphas_cumprod_run")
    if stored is not None and not np.allclose(np.asarray(stored, dtype=float), ab, rtol=1e-9,
                                              atol=0.0):
        raise InputError(f"{path}: alphas_cumprod_run: disagrees with the {family} T={T} "
                         "training levels of 'timesteps' (a derived view; fix or delete it)")
    return ExportedLevels(ab, "timesteps", str(path), timesteps=t, training_schedule=family,
                          num_train_timesteps=T)


def _read_diffusers_flow(d: dict, path: Path, levels: str | None) -> ExportedLevels:
    if levels not in (None, "t", "sigmas"):
        raise InputError(f"{path}: a diffusers-flow export holds flow-matching sigmas (the "
                         f"times t, noisiest first); asked for {levels}")
    sig = d.get("sigmas")
    try:
        arr = _as_float64(sig, "sigmas", one_d=True)
        if arr.size > 1 and _order(arr) != "descending":
            raise InputError(f"sigmas: expected flow-matching times noisiest first, "
                             f"descending, without a final 0 (as set_timesteps(sigmas=...) "
                             f"takes them); got {_order(arr)} values")
        if arr[-1] == 0.0:
            raise InputError("sigmas: expected no final 0 (FlowMatchEulerDiscreteScheduler "
                             "appends it); got one")
        ab = _from_fm_times(arr[::-1].copy(), "sigmas")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    T = d.get("num_train_timesteps")
    if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= 10**6:
        raise InputError(f"{path}: num_train_timesteps: expected an integer in [1, 1000000], "
                         f"got {T!r}")
    return ExportedLevels(ab, "t", str(path), num_train_timesteps=T)


def read_levels(path: str | os.PathLike, levels: str | None = None,
                diffusers_default: str = "timesteps") -> ExportedLevels:
    """Read a schedule file or anything ``specsched export`` wrote, as levels step 1 first.

    Parameters
    ----------
    path : path-like
        A schedule JSON file; a diffusers export (its folder or ``diffusers_schedule.json``);
        a diffusers flow-matching export (its folder or ``diffusers_flow_schedule.json``); an
        exported array (``.json``, ``.txt`` with its header, ``.npy``).
    levels : str or None
        Which levels (:data:`LEVELS`): for a diffusers export ``"timesteps"`` (default) or
        ``"sigmas"``; for a diffusers-flow export None, ``"t"`` or ``"sigmas"`` (diffusers'
        name for the times; always read as times); for a bare ``.npy`` its kind
        (``"k-diffusion"`` is inferred from a descending array ending in 0); for files that
        state their kind, None or that kind. Not allowed with a schedule file.
    diffusers_default : {"timesteps", "sigmas"}
        What a diffusers export gives when ``levels`` is None (``"sigmas"`` for the VE
        samplers that Euler-type schedulers are).

    Returns
    -------
    ExportedLevels

    Raises
    ------
    InputError
        ``"PATH: FIELD: ..."``: missing or malformed file, a folder holding both diffusers
        exports, an unknown ``format``, a kind the file does not hold, timesteps that were not
        written, values in the wrong order (the message says the order found and the kind it
        looks like).
    """
    path = Path(path)
    if levels is not None and levels not in LEVELS:
        raise InputError(f"levels: expected one of {', '.join(LEVELS)}, got {levels!r}")
    if path.is_dir():
        found = [path / name for name in (DIFFUSERS_FILE, DIFFUSERS_FLOW_FILE)
                 if (path / name).is_file()]
        if not found:
            raise InputError(f"{path}: a folder without {DIFFUSERS_FILE} or "
                             f"{DIFFUSERS_FLOW_FILE} (export --to diffusers or --to "
                             "diffusers-flow writes one)")
        if len(found) == 2:
            # two exports of possibly different schedules: reading either would be a guess
            raise InputError(f"{path}: a folder with both {DIFFUSERS_FILE} and "
                             f"{DIFFUSERS_FLOW_FILE}; name the file to read")
        path = found[0]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, levels)
    if suffix == ".txt":
        return _read_txt(path, levels)
    if suffix != ".json":
        raise InputError(f"{path}: expected a .json schedule or export file, a diffusers export "
                         f"folder, or an exported .npy/.txt array; got suffix {path.suffix!r}")
    d = read_json_object(path, "schedule or export file")
    fmt = d.get("format")
    if fmt in (DIFFUSERS_FORMAT, DIFFUSERS_FLOW_FORMAT, ARRAY_FORMAT):
        if d.get("version") != EXPORT_VERSION:
            raise InputError(f"{path}: version: expected {EXPORT_VERSION} for {fmt}, got "
                             f"{str(d.get('version'))[:20]}")
        if fmt == DIFFUSERS_FORMAT:
            return _read_diffusers(d, path, levels or diffusers_default)
        if fmt == DIFFUSERS_FLOW_FORMAT:
            return _read_diffusers_flow(d, path, levels)
        return _read_array_json(d, path, levels)
    if levels is not None and fmt == SCHEDULE_FORMAT:
        raise InputError(f"{path}: a schedule file holds alphas_cumprod; levels ({levels}) "
                         "apply to export files")
    sched = Schedule.from_dict(d, source=str(path))  # its messages for any other format
    return ExportedLevels(sched.alphas_cumprod, "schedule", str(path), schedule=sched)
