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
     "sampler": "ddim", "eta": 0.0, "param": "vp", "noise_spectrum": "white",
     "loss": "w2", "loss_value": 1.23, "baselines": {"linear/linspace": {"w2": 5.59}},
     "spectrum": {...}, "optimizer": {...},
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
    _betas,
    _fm_times,
    _logsnr,
    _sigmas,
    validate_alphas_cumprod,
)
from specsched.schedules.families import _nearest_timesteps
from specsched.schedules.jsonfile import describe_schema_error, read_json_object

__all__ = [
    "SCHEDULE_FORMAT",
    "SCHEDULE_VERSION",
    "Schedule",
    "schedule_schema",
    "validate_alphas_cumprod",
]

SCHEDULE_FORMAT = "specsched.schedule"
#: Parametrisations a schedule may be made for (docs/theory.md sections 1 and 10).
PARAMS = ("vp", "ve", "fm")
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
    noise_spectrum : str
        The forward noise the schedule was designed under (docs/theory.md section 9):
        ``"white"`` (also what a file without the field means), ``"equal-snr"``,
        ``"power:GAMMA"``, ``"fans:GAMMA"`` or ``"file:sha256:HEX"``
        (:attr:`specsched.theory.noise.NoiseSpectrum.label`); :meth:`check_noise_spectrum`
        refuses another.
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
    Construction is the boundary: ``alphas_cumprod`` is validated there once, and the derived
    views, :meth:`to_dict` and every function taking a Schedule
    (:func:`~specsched.schedules.as_alphas_cumprod`) trust it afterwards.
    """

    #: Read by :func:`~specsched.schedules.as_alphas_cumprod`: no second validation.
    VALIDATED_ON_CONSTRUCTION = True

    alphas_cumprod: np.ndarray
    name: str = "custom"
    sampler: str | None = None
    eta: float | None = None
    param: str = "vp"
    noise_spectrum: str = "white"
    loss: str | None = None
    loss_value: float | None = None
    baselines: dict = field(default_factory=dict)
    spectrum: dict | None = None
    optimizer: dict | None = None
    created: str | None = None

    def __post_init__(self):
        if self.param not in PARAMS:
            raise InputError(f"param: expected one of {', '.join(PARAMS)}, got {self.param!r}")
        ab = validate_alphas_cumprod(self.alphas_cumprod, "alphas_cumprod",
                                     zero_terminal=self.param == "fm")
        ab.setflags(write=False)
        set_ = functools.partial(object.__setattr__, self)
        set_("alphas_cumprod", ab)
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.noise_spectrum, str) or not self.noise_spectrum:
            raise InputError(f"noise_spectrum: expected a non-empty string, got "
                             f"{self.noise_spectrum!r}")
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
        return _betas(self.alphas_cumprod)

    @property
    def sigmas(self) -> np.ndarray:
        """(S,) float64: ``sigma_s = sqrt((1 - ab_s) / ab_s)``, increasing (``inf`` at
        ``ab_S = 0``)."""
        with np.errstate(divide="ignore"):
            return _sigmas(self.alphas_cumprod)

    @property
    def logsnr(self) -> np.ndarray:
        """(S,) float64: ``log(ab_s / (1 - ab_s))``, decreasing (``-inf`` at ``ab_S = 0``)."""
        with np.errstate(divide="ignore"):
            return _logsnr(self.alphas_cumprod)

    @property
    def fm_times(self) -> np.ndarray:
        """(S,) float64: flow-matching times ``t_s = sigma_s / (1 + sigma_s)``, increasing
        (``t_S = 1`` at ``ab_S = 0``; docs/theory.md section 10)."""
        return _fm_times(self.alphas_cumprod)

    @property
    def timesteps(self) -> np.ndarray:
        """(S,) int64: nearest (in logSNR) steps of the linear T = 1000 training grid."""
        return _nearest_timesteps(
            self.alphas_cumprod, TIMESTEPS_TRAINING_SCHEDULE, TIMESTEPS_NUM_TRAIN
        )[0]

    def check_noise_spectrum(self, label: str, source: str = "schedule") -> None:
        """Refuse to use the schedule under a forward noise other than its own.

        Parameters
        ----------
        label : str
            :attr:`specsched.theory.noise.NoiseSpectrum.label` of the noise asked for
            (``"white"`` by default on the command line).
        source : str
            Name of the schedule in the message (its path).

        Raises
        ------
        InputError
            ``"SOURCE: noise_spectrum: ..."`` naming both spectra, when they differ: a schedule
            optimised for one forward process says nothing about another.
        """
        if label != self.noise_spectrum:
            raise InputError(
                f"{source}: noise_spectrum: the schedule was made for the forward noise "
                f"{self.noise_spectrum!r}, not {label!r}; use it with --noise-spectrum "
                f"matching {self.noise_spectrum!r} (a file's sha256 must match too), or "
                "optimise one for this noise", param="noise_spectrum")

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
            "noise_spectrum": self.noise_spectrum,
            "loss": self.loss,
            "loss_value": self.loss_value,
            "baselines": _jsonable(self.baselines, "baselines"),
            "spectrum": _jsonable(self.spectrum, "spectrum"),
            "optimizer": _jsonable(self.optimizer, "optimizer"),
            "created": self.created,
            "specsched_version": specsched.__version__,
            "sigmas": _finite_or_null(self.sigmas),
            "logsnr": _finite_or_null(self.logsnr),
            "betas": self.betas.tolist(),
            **({"t": self.fm_times.tolist()} if self.param == "fm" else {}),
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
        """Build a Schedule from a parsed schedule file, validating it once.

        Checks, in order: the JSON Schema (``schedule.schema.json``, draft 2020-12); ``version``
        in SUPPORTED_VERSIONS; the fields (Schedule construction, where
        :func:`validate_alphas_cumprod` runs, the one check of the array); ``steps`` equal to S
        if present; derived views (``sigmas``, ``logsnr``, ``betas``, ``timesteps``), if
        present, equal to the values recomputed from ``alphas_cumprod`` (relative tolerance
        1e-9, absolute 1e-12; timesteps exactly). Derived views are then dropped;
        ``specsched_version`` and unknown keys are ignored.

        Parameters
        ----------
        d : dict
            Parsed JSON.
        source : str
            Name used in error messages (the file path for :meth:`load`).

        Raises
        ------
        InputError
            ``"SOURCE: FIELD: expected ..., got ..."``, the field as it is written in the file
            (``alphas_cumprod[3]``, ``spectrum.sha256``, ``top level``).
        """
        if not isinstance(d, dict):
            raise InputError(f"{source}: top level: expected a JSON object (a schedule file), "
                             f"got {type(d).__name__}")
        fmt = d.get("format")
        if isinstance(fmt, str) and fmt.startswith("specsched.") and fmt != SCHEDULE_FORMAT:
            raise InputError(
                f"{source}: format: expected {json.dumps(SCHEDULE_FORMAT)}, got "
                f"{json.dumps(fmt)[:60]}: another specsched file (an export's output is read "
                "by specsched evaluate; this needs the schedule file it was exported from)")
        _check_schema(d, source)
        version = d["version"]
        if version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise InputError(
                f"{source}: version: schedule file version {version} is not supported "
                f"by specsched (supported: {supported})"
            )
        try:
            kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            if kwargs.get("baselines") is None:
                kwargs.pop("baselines", None)
            sched = cls(**kwargs)
            if "steps" in d and d["steps"] != sched.steps:
                raise InputError(
                    f"steps: {d['steps']} does not match the {sched.steps} values of "
                    "alphas_cumprod"
                )
            _check_derived(d, sched)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        return sched

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
            One line starting with the path: a missing or unreadable file, invalid or
            pathological JSON (:func:`specsched.schedules.jsonfile.read_json_object`: line and
            column, NaN/Infinity literals, numbers beyond float64, nesting too deep, a top
            level that is not an object), or any check of :meth:`from_dict`.
        """
        return cls.from_dict(read_json_object(path, "schedule file"), source=str(path))


def _check_schema(d, source: str) -> None:
    """Raise InputError "SOURCE: FIELD: expected ..., got ..." for the best schema violation."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(d))
    if error is not None:
        raise InputError(f"{source}: {describe_schema_error(error)}")


def _finite_or_null(values: np.ndarray) -> list:
    """A derived view as a JSON list: the infinite values (sigma and logSNR of pure noise,
    ``ab_S = 0``) as null, since JSON has no infinity."""
    return [float(v) if np.isfinite(v) else None for v in values]


def _check_derived(d: dict, sched: Schedule) -> None:
    """Raise InputError if a derived view stored in ``d`` disagrees with ``sched`` (a null
    stands for an infinite value, which JSON cannot hold)."""
    for key, attr in (("sigmas", "sigmas"), ("logsnr", "logsnr"), ("betas", "betas"),
                      ("t", "fm_times")):
        if key not in d:
            continue
        expected = getattr(sched, attr)
        stored = np.array([np.nan if v is None else v for v in d[key]], dtype=np.float64)
        if stored.shape != expected.shape:
            raise InputError(f"{key}: {stored.size} values, but alphas_cumprod has {expected.size}")
        with np.errstate(invalid="ignore"):
            close = (stored == expected) | (
                np.abs(stored - expected) <= DERIVED_RTOL * np.abs(expected) + DERIVED_ATOL)
        bad = np.flatnonzero(~np.where(np.isnan(stored), np.isinf(expected), close))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{key}[{i}]: {d[key][i]!r} disagrees with alphas_cumprod, which gives "
                f"{float(expected[i])!r} (derived views are recomputed; fix or delete them)"
            )
    if "timesteps" in d:
        ts = d["timesteps"]
        family = ts.get("training_schedule", TIMESTEPS_TRAINING_SCHEDULE)
        T = ts.get("num_train_timesteps", TIMESTEPS_NUM_TRAIN)  # schema: family in enum
        expected = _nearest_timesteps(sched.alphas_cumprod, family, T)[0]
        if list(ts["values"]) != expected.tolist():
            raise InputError(
                f"timesteps.values: {ts['values']!r} disagree with alphas_cumprod, which "
                f"gives the nearest {family} T={T} training steps {expected.tolist()!r}"
            )
