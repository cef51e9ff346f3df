"""Provenance of a committed result: the command that made it and the code version it ran.

Every table the benchmarks and ``specsched sweep`` write into ``results/`` opens with two
comment lines (results/README.md lists them and how they are checked)::

    # python benchmarks/estimators.py --out results
    # specsched 0.1.0, commit 4bdcde3, uncommitted changes, 2026-12-08T01:52Z

The second line names the package version, the short commit of the checkout the code was
imported from (``uncommitted changes`` when ``specsched/``, ``benchmarks/`` or
``pyproject.toml`` differ from it; results files are not counted) and the UTC time. Where the
code is not a git checkout (an installed wheel, a tarball, no ``git`` on PATH) it says
``not a git checkout`` instead of failing. Figures carry the same lines in their PNG metadata
(:func:`png_metadata`), folders in their README.md.

Readers skip the lines with ``pandas.read_csv(path, comment="#")``.
"""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import specsched

#: The checkout that holds this package, if it is one (specsched/ sits at its top).
ROOT = Path(__file__).resolve().parents[1]
#: Paths whose uncommitted changes make a result's code differ from its commit.
CODE_PATHS = ("specsched", "benchmarks", "pyproject.toml")
#: How every provenance line starts (after ``# ``): the mark readers and checks look for.
PREFIX = "specsched "


def _git(*args: str) -> str | None:
    """stdout of ``git -C ROOT args``, stripped; None when git or the checkout is missing."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> str:
    """The package version and the commit of the checkout it runs from.

    Returns
    -------
    str
        ``"specsched 0.1.0, commit 4bdcde3"``, with ``", uncommitted changes"`` appended when
        any of :data:`CODE_PATHS` differs from that commit (staged or not; untracked files
        under them count too); ``"specsched 0.1.0, not a git checkout"`` when the package does
        not sit at the top of a git work tree or ``git`` cannot be run. Never raises.
    """
    version = f"{PREFIX}{specsched.__version__}"
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != ROOT:
        return f"{version}, not a git checkout"
    sha = _git("rev-parse", "--short", "HEAD")
    if sha is None:
        return f"{version}, git checkout without a commit"
    dirty = _git("status", "--porcelain", "--", *CODE_PATHS)
    return f"{version}, commit {sha}" + (", uncommitted changes" if dirty else "")


def command_line(program: str, argv: Sequence[str] | None = None) -> str:
    """The command as a user would type it again: ``program`` and the arguments, shell-quoted.

    Parameters
    ----------
    program : str
        What runs, e.g. ``"python benchmarks/estimators.py"`` or ``"specsched sweep"``.
    argv : sequence of str, optional
        The arguments after it; default ``sys.argv[1:]`` (a script's own arguments).

    Returns
    -------
    str
        ``program`` followed by the arguments joined with :func:`shlex.join` (no trailing space
        when there are none).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return f"{program} {shlex.join(args)}".rstrip()


def header_lines(command: str, now: datetime.datetime | None = None) -> list[str]:
    """The two comment lines that open a results file: the command and the code version.

    Parameters
    ----------
    command : str
        The command as run (see :func:`command_line`); a newline in it is replaced by a space.
    now : datetime.datetime, optional
        The time to state; default the current UTC time. Written as ``YYYY-MM-DDTHH:MMZ``.

    Returns
    -------
    list of str
        ``["# <command>", "# specsched <version>, commit <sha>[, uncommitted changes], <date>"]``,
        without line ends.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return ["# " + " ".join(command.split("\n")), f"# {code_version()}, {stamp}"]


def header(command: str) -> str:
    """:func:`header_lines` joined, each line ended by ``\\n``: what a CSV writer writes first."""
    return "".join(line + "\n" for line in header_lines(command))


def png_metadata(command: str) -> dict[str, str]:
    """PNG text chunks for ``Figure.savefig(..., metadata=...)`` with the same provenance.

    Returns
    -------
    dict
        ``{"Software": <code version and date>, "Description": <command>}``: the two lines of
        :func:`header_lines` without their ``# `` (PIL: ``Image.open(p).text``).
    """
    command_text, version = (line[2:] for line in header_lines(command))
    return {"Software": version, "Description": command_text}


def is_provenance_line(line: str) -> bool:
    """Whether a line is a code-version line written by :func:`header_lines`.

    True for ``# specsched <version>, commit ...`` / ``, not a git checkout ...`` lines; the
    command line above it is recognised by its position (the first line), not by this test.
    """
    if not line.startswith("# " + PREFIX):
        return False
    rest = line[2 + len(PREFIX):]
    return ", commit " in rest or ", not a git checkout" in rest or ", git checkout" in rest
