"""The :class:`Schedule` value and its versioned JSON file (docs/formats.md, "Schedule JSON").

Notation (docs/theory.md section 1): a schedule with S steps is ``ab = (ab_1, ..., ab_S)``
(alphas_cumprod), step 1 (least noisy) first, ``1 > ab_1 > ... > ab_S > 0``, variance
preserving, ``ab_0 = 1`` implicit. Its derived views (``betas``, ``sigmas``, ``logsnr`` and the
nearest ``timesteps`` of the linear T = 1000 training grid) are computed, never stored as
state: a file may carry them for readers, and loading recomputes them and rejects a file whose
copies disagree with ``alphas_cumprod``.

File layout (``format`` "specsched.schedule", ``version`` 1), validated against
``schedule.schema.json`` (JSON Schema draft 2020-12, shipped with the package)::

    {"format": "specsched.schedule", "version": 1, "name": "optimized-w2", "steps": S,
     "alphas_cumprod": [...S floats, step 1 first...],
     "sampler": "ddim", "eta": 0.0, "param": "vp", "loss": "w2", "loss_value": 1.23,
     "baselines": {"linear/linspace": {"w2": 5.59}}, "spectrum": {...}, "optimizer": {...},
     "created": "2025-01-01T00:00:00+00:00", "specsched_version": "0.1.0",
     "sigmas": [...], "logsnr": [...], "betas": [...],
     "timesteps": {"training_schedule": "linear", "num_train_timesteps": 1000,
                   "values": [...S ints...]}}

Floats are written with ``repr`` precision (Python's shortest round-trip form), so
``alphas_cumprod`` survives save and load bit for bit.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np

from specsched.errors import InputError
from specsched.fileio import atomic_write
from specsched.schedules.conversions import (
    betas_from_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    sigmas_from_alphas_cumprod,
    validate_alphas_cumprod,
)
from specsched.schedules.families import nearest_training_timesteps

__all__ = [
    "SCHEDULE_FORMAT",
    "SCHEDULE_VERSION",
    "Schedule",
    "schedule_schema",
    "validate_alphas_cumprod",
]

SCHEDULE_FORMAT = "specsched.schedule"
SCHEDULE_VERSION = 1
SUPPORTED_VERSIONS = (SCHEDULE_VERSION,)

#: Training grid of the ``timesteps`` view.
TIMESTEPS_TRAINING_SCHEDULE = "linear"
TIMESTEPS_NUM_TRAIN = 1000
#: Relative tolerance for derived views found in a file (absolute 1e-12 near zero).
DERIVED_RTOL = 1e-9
DERIVED_ATOL = 1e-12


@functools.lru_cache(maxsize=1)
def schedule_schema() -> dict:
    """The JSON Schema (draft 2020-12) of schedule files, ``schedule.schema.json``."""
    text = (
        resources.files("specsched.schedules")
        .joinpath("schedule.schema.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema  # deferred: only file I/O needs it

    schema = schedule_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _jsonable(value, name: str):
    """Copy ``value`` into plain JSON types (dict with str keys, list, str, int, finite float,
    bool, None), converting numpy scalars and arrays; raise InputError naming ``name``."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise InputError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{name}: expected string keys, got {k!r}")
            out[k] = _jsonable(v, f"{name}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise InputError(f"{name}: cannot be stored in JSON: {type(value).__name__} {value!r}")


def _optional_number(value, name: str, minimum: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name}: expected a number or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise InputError(f"{name}: expected a finite number{bound}, got {value!r}")
    return value


def _optional_str(value, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{name}: expected a string or None, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Schedule:
    """A sampling schedule with its provenance (docs/formats.md, "Schedule JSON").

    Attributes
    ----------
    alphas_cumprod : ndarray of shape (n_steps,), float64, read-only
        ``ab_1, ..., ab_S``, step 1 (least noisy) first, strictly decreasing in (0, 1), VP
        (docs/theory.md section 1). Any array-like is accepted and copied.
    name : str
        Label, e.g. ``"optimized-w2"`` or ``"linear/linspace"``.
    sampler : str or None
        Sampler the schedule was designed for (``"ddim"``, ``"ddpm"``, ...).
    eta : float or None
        DDIM stochasticity (docs/theory.md section 3), >= 0.
    param : str
        Forward process, ``"vp"``.
    loss : str or None
        Loss the schedule minimises (``"w2"``, ``"kl"``; docs/theory.md section 4).
    loss_value : float or None
        Its value for this schedule.
    baselines : dict
        ``{"family/spacing": {"w2": float, "kl": float}, ...}``: the same loss for baselines.
    spectrum : dict or None
        Provenance of the spectrum: ``source``, ``method``, ``n_samples``, ``dimension``,
        ``sha256`` (of the eigenvalues).
    optimizer : dict or None
        Optimiser report: ``method``, ``success``, ``message``, ``nit``, ...
    created : str or None
        UTC time, ISO 8601; :meth:`save` fills it in when None.

    Raises
    ------
    InputError
        On construction, if ``alphas_cumprod`` fails :func:`validate_alphas_cumprod` or a
        field has the wrong type (non-finite numbers included).

    Notes
    -----
    Frozen: equal schedules compare equal field by field (``alphas_cumprod`` exactly).
    ``baselines``, ``spectrum`` and ``optimizer`` are copied into plain JSON types.
    """

    alphas_cumprod: np.ndarray
    name: str = "custom"
    sampler: str | None = None
    eta: float | None = None
    param: str = "vp"
    loss: str | None = None
    loss_value: float | None = None
    baselines: dict = field(default_factory=dict)
    spectrum: dict | None = None
    optimizer: dict | None = None
    created: str | None = None

    def __post_init__(self):
        ab = validate_alphas_cumprod(self.alphas_cumprod, "alphas_cumprod")
        ab.setflags(write=False)
        set_ = functools.partial(object.__setattr__, self)
        set_("alphas_cumprod", ab)
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.param, str):
            raise InputError(f"param: expected a string, got {self.param!r}")
        for f in ("sampler", "loss", "created"):
            _optional_str(getattr(self, f), f)
        set_("eta", _optional_number(self.eta, "eta", minimum=0.0))
        set_("loss_value", _optional_number(self.loss_value, "loss_value"))
        if not isinstance(self.baselines, dict):
            raise InputError(f"baselines: expected a dict, got {type(self.baselines).__name__}")
        baselines = {}
        for key, losses in self.baselines.items():
            if not isinstance(key, str) or not isinstance(losses, dict):
                raise InputError(
                    f"baselines: expected {{name: {{loss: value}}}}, got {key!r}: {losses!r}"
                )
            baselines[key] = {
                k: _optional_number(v, f"baselines.{key}.{k}") for k, v in losses.items()
            }
        set_("baselines", _jsonable(baselines, "baselines"))
        for f in ("spectrum", "optimizer"):
            value = getattr(self, f)
            if value is not None and not isinstance(value, dict):
                raise InputError(f"{f}: expected a dict or None, got {type(value).__name__}")
            set_(f, _jsonable(value, f))

    def __eq__(self, other):
        if not isinstance(other, Schedule):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            if f.name == "alphas_cumprod"
            else getattr(self, f.name) == getattr(other, f.name)
            for f in fields(self)
        )

    __hash__ = None

    # ---- derived views (docs/theory.md section 1), step 1 first --------------------------------

    @property
    def steps(self) -> int:
        """S, the number of sampling steps."""
        return int(self.alphas_cumprod.size)

    @property
    def betas(self) -> np.ndarray:
        """(S,) float64: ``beta_s = 1 - ab_s / ab_{s-1}``, ``ab_0 = 1``."""
        return betas_from_alphas_cumprod(self.alphas_cumprod)

    @property
    def sigmas(self) -> np.ndarray:
        """(S,) float64: ``sigma_s = sqrt((1 - ab_s) / ab_s)``, increasing."""
        return sigmas_from_alphas_cumprod(self.alphas_cumprod)

    @property
    def logsnr(self) -> np.ndarray:
        """(S,) float64: ``log(ab_s / (1 - ab_s))``, decreasing."""
        return logsnr_from_alphas_cumprod(self.alphas_cumprod)

    @property
    def timesteps(self) -> np.ndarray:
        """(S,) int64: nearest (in logSNR) steps of the linear T = 1000 training grid."""
        return nearest_training_timesteps(
            self.alphas_cumprod, TIMESTEPS_TRAINING_SCHEDULE, TIMESTEPS_NUM_TRAIN
        )

    # ---- file format ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The schedule as a JSON-ready dict (the file layout of the module docstring).

        Returns
        -------
        dict
            Plain Python types only; ``created`` stays None if unset (:meth:`save` fills it).
        """
        import specsched

        return {
            "format": SCHEDULE_FORMAT,
            "version": SCHEDULE_VERSION,
            "name": self.name,
            "steps": self.steps,
            "alphas_cumprod": self.alphas_cumprod.tolist(),
            "sampler": self.sampler,
            "eta": self.eta,
            "param": self.param,
            "loss": self.loss,
            "loss_value": self.loss_value,
            "baselines": _jsonable(self.baselines, "baselines"),
            "spectrum": _jsonable(self.spectrum, "spectrum"),
            "optimizer": _jsonable(self.optimizer, "optimizer"),
            "created": self.created,
            "specsched_version": specsched.__version__,
            "sigmas": self.sigmas.tolist(),
            "logsnr": self.logsnr.tolist(),
            "betas": self.betas.tolist(),
            "timesteps": {
                "training_schedule": TIMESTEPS_TRAINING_SCHEDULE,
                "num_train_timesteps": TIMESTEPS_NUM_TRAIN,
                "values": self.timesteps.tolist(),
            },
        }

    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the schedule as JSON through :func:`specsched.fileio.atomic_write`.

        ``created`` is set to the current UTC time when it is None (in the file only; this
        frozen object is unchanged).

        Parameters
        ----------
        path : path-like
            Destination, conventionally ``*.json``.
        force : bool
            Overwrite an existing file.

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``force`` is false.
        """
        d = self.to_dict()
        if d["created"] is None:
            d["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            )
        text = json.dumps(d, indent=2, allow_nan=False) + "\n"
        with atomic_write(path, force=force, mode="w") as fh:
            fh.write(text)
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> Schedule:
        """Build a Schedule from a parsed schedule file, validating it.

        Checks, in order: the JSON Schema (``schedule.schema.json``, draft 2020-12); ``version``
        in SUPPORTED_VERSIONS; :func:`validate_alphas_cumprod`; ``steps`` equal to S if present;
        derived views (``sigmas``, ``logsnr``, ``betas``, ``timesteps``), if present, equal to
        the values recomputed from ``alphas_cumprod`` (relative tolerance 1e-9, absolute
        1e-12; timesteps exactly). Derived views are then dropped; ``specsched_version`` and
        unknown keys are ignored.

        Parameters
        ----------
        d : dict
            Parsed JSON.
        source : str
            Name used in error messages (the file path for :meth:`load`).

        Raises
        ------
        InputError
            ``"SOURCE: field 'JSON.PATH': MESSAGE"`` on a schema violation; otherwise a
            message starting with ``SOURCE:`` and naming the field.
        """
        _check_schema(d, source)
        version = d["version"]
        if version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise InputError(
                f"{source}: field 'version': schedule file version {version} is not supported "
                f"by specsched (supported: {supported})"
            )
        try:
            ab = validate_alphas_cumprod(d["alphas_cumprod"], "alphas_cumprod")
            if "steps" in d and d["steps"] != ab.size:
                raise InputError(
                    f"steps: {d['steps']} does not match the {ab.size} values of alphas_cumprod"
                )
            _check_derived(d, ab)
            kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            kwargs["alphas_cumprod"] = ab
            if kwargs.get("baselines") is None:
                kwargs.pop("baselines", None)
            return cls(**kwargs)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Schedule:
        """Read and validate a schedule file written by :meth:`save` (or by hand).

        Parameters
        ----------
        path : path-like
            A JSON schedule file.

        Returns
        -------
        Schedule

        Raises
        ------
        InputError
            Missing or unreadable file, invalid JSON (with line and column), NaN or Infinity
            literals, or any check of :meth:`from_dict`; the message starts with the path.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: schedule file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read schedule file: {exc}") from None

        def reject_constant(name):
            raise InputError(f"{path}: invalid JSON: {name} is not a finite number")

        try:
            d = json.loads(text, parse_constant=reject_constant)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
                "(truncated or not a schedule file?)"
            ) from None
        return cls.from_dict(d, source=str(path))


def _check_schema(d, source: str) -> None:
    """Raise InputError "SOURCE: field 'PATH': MESSAGE" for the best schema violation."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(d))
    if error is None:
        return
    path, message = error.json_path, error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            path, message = f"{path}.{missing[0]}", "required field is missing"
    raise InputError(f"{source}: field '{path}': {message}")


def _check_derived(d: dict, ab: np.ndarray) -> None:
    """Raise InputError if a derived view stored in ``d`` disagrees with ``ab``."""
    views = {
        "sigmas": sigmas_from_alphas_cumprod,
        "logsnr": logsnr_from_alphas_cumprod,
        "betas": betas_from_alphas_cumprod,
    }
    for key, fn in views.items():
        if key not in d:
            continue
        stored = np.asarray(d[key], dtype=np.float64)
        expected = fn(ab)
        if stored.shape != expected.shape:
            raise InputError(f"{key}: {stored.size} values, but alphas_cumprod has {expected.size}")
        bad = np.flatnonzero(
            ~(np.abs(stored - expected) <= DERIVED_RTOL * np.abs(expected) + DERIVED_ATOL)
        )
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{key}[{i}]: {float(stored[i])!r} disagrees with alphas_cumprod, which gives "
                f"{float(expected[i])!r} (derived views are recomputed; fix or delete them)"
            )
    if "timesteps" in d:
        ts = d["timesteps"]
        family = ts.get("training_schedule", TIMESTEPS_TRAINING_SCHEDULE)
        T = ts.get("num_train_timesteps", TIMESTEPS_NUM_TRAIN)  # schema: family in enum
        expected = nearest_training_timesteps(ab, family, T)
        if list(ts["values"]) != expected.tolist():
            raise InputError(
                f"timesteps.values: {ts['values']!r} disagree with alphas_cumprod, which "
                f"gives the nearest {family} T={T} training steps {expected.tolist()!r}"
            )
