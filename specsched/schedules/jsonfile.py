"""Reading the JSON files users hand to specsched (schedule files, export files), safely.

A file from elsewhere may be anything: truncated, not UTF-8, nested a hundred thousand levels
deep (Python's parser then raises RecursionError), holding ``NaN`` / ``Infinity`` literals
(Python accepts them; JSON does not), numbers beyond float64 (``1e999`` parses to ``inf``),
integers of thousands of digits (``ValueError`` from the int conversion limit), duplicate keys
(Python silently keeps the last) or a top level that is not an object. :func:`read_json_object`
turns each into one :class:`~specsched.errors.InputError` whose message starts with the file,
and :func:`describe_schema_error` words a JSON Schema violation as ``FIELD: expected ..., got
...`` with the field written as a reader of the file sees it (``alphas_cumprod[3]``,
``spectrum.sha256``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from specsched.errors import InputError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_INT_DIGITS", "describe_schema_error", "field_path",
           "read_json_object"]

#: Largest file read (a 1000-step schedule file is ~100 KiB).
MAX_BYTES = 64 * 2**20
#: Deepest nesting accepted (schedule files are 3 levels deep; the margin is for ``optimizer``).
MAX_DEPTH = 32
#: Most digits of an integer literal (int64 has 19).
MAX_INT_DIGITS = 20


def _clip(text: str, n: int = 24) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _json_type(value) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def _depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((v, level + 1) for v in item)
    return deepest


def read_json_object(path: str | os.PathLike, what: str = "schedule file") -> dict:
    """Parse a JSON file whose top level must be an object.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What the file should be, for messages (``"schedule file"``).

    Returns
    -------
    dict
        The parsed object: finite floats, ints of at most MAX_INT_DIGITS digits, nesting at
        most MAX_DEPTH levels, no duplicate keys. A UTF-8 byte-order mark is accepted.

    Raises
    ------
    InputError
        ``"PATH: ..."``, one line: missing, a folder, unreadable or larger than MAX_BYTES; not
        UTF-8; invalid JSON (with line and column); ``NaN``/``Infinity`` literals; a number
        beyond float64; an integer too long; a duplicate key; nesting too deep; a top level
        that is not an object.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not a {what}")
        if size > MAX_BYTES:
            raise InputError(f"{path}: {size} bytes is too large for a {what} (at most "
                             f"{MAX_BYTES // 2**20} MiB)")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read {what}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None

    def constant(name):
        raise InputError(f"{path}: invalid JSON: {name} is not a finite number (JSON has no "
                         "NaN or Infinity; write the value or null)")

    def number(literal):
        value = float(literal)
        if not math.isfinite(value):
            raise InputError(f"{path}: invalid JSON: the number {_clip(literal)} is beyond "
                             "the float64 range (magnitude below 1.8e308)")
        return value

    def integer(literal):
        digits = len(literal.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            raise InputError(f"{path}: invalid JSON: the integer {_clip(literal)} has {digits} "
                             f"digits; a {what} holds none with more than {MAX_INT_DIGITS}")
        return int(literal)

    def unique_keys(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"{path}: invalid JSON: the key {_clip(key, 40)!r} appears "
                                 "twice in one object")
            out[key] = value
        return out

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number,
                           parse_int=integer, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"(truncated or not a {what}?)"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON: nested too deeply to read (a {what} is at "
                         f"most {MAX_DEPTH} levels deep)") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object (a {what}), got {_json_type(value)}")
    depth = _depth(value)
    if depth > MAX_DEPTH:
        raise InputError(f"{path}: JSON nested {depth} levels deep; a {what} is at most "
                         f"{MAX_DEPTH}")
    return value


def field_path(parts) -> str:
    """``alphas_cumprod[3]``, ``timesteps.values[0]``: a JSON location as a reader writes it.

    ``parts`` is a sequence of keys (str) and indices (int), e.g. jsonschema's
    ``error.absolute_path``; the empty path is ``"top level"``.
    """
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "top level"


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "array": "an array",
               "object": "an object", "string": "a string", "null": "null",
               "boolean": "true or false"}


def _expected_range(schema: dict) -> str:
    noun = "an integer" if schema.get("type") == "integer" else "a number"
    lo, hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if lo is not None and hi is not None:
        return f"{noun} in the open interval ({lo:g}, {hi:g})"
    parts = []
    if schema.get("minimum") is not None:
        parts.append(f">= {schema['minimum']:g}")
    if lo is not None:
        parts.append(f"> {lo:g}")
    if schema.get("maximum") is not None:
        parts.append(f"<= {schema['maximum']:g}")
    if hi is not None:
        parts.append(f"< {hi:g}")
    return f"{noun} {' and '.join(parts)}"


def describe_schema_error(error) -> str:
    """``"FIELD: expected ..., got ..."`` for a :class:`jsonschema.ValidationError`.

    Handles the keywords of ``schedule.schema.json`` (type, ranges, const, enum, minItems,
    required, pattern); any other keyword keeps jsonschema's own wording after the field.
    """
    parts = list(error.absolute_path)
    got = _clip(json.dumps(error.instance), 60)
    kind, schema = error.validator, error.schema if isinstance(error.schema, dict) else {}
    if kind == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{field_path(parts + missing[:1])}: required field is missing"
    if kind == "type":
        types = error.validator_value
        types = [types] if isinstance(types, str) else list(types)
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        message = f"expected {expected}, got {_json_type(error.instance)} {got}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        message = f"expected {_expected_range(schema)}, got {got}"
    elif kind == "const":
        message = f"expected {json.dumps(error.validator_value)}, got {got}"
    elif kind == "enum":
        choices = ", ".join(json.dumps(c) for c in error.validator_value)
        message = f"expected one of {choices}; got {got}"
    elif kind == "minItems":
        message = (f"expected at least {error.validator_value} value(s), got "
                   f"{len(error.instance)}")
    elif kind == "pattern":
        message = f"expected a string matching {error.validator_value}, got {got}"
    else:
        message = error.message
    return f"{field_path(parts)}: {message}"
