"""Regenerate every cheap committed result, or check the committed ones against a fresh run.

    python benchmarks/regenerate.py                  # every cheap result, rewritten in place
    python benchmarks/regenerate.py --check          # run into a temporary folder and compare
    python benchmarks/regenerate.py --check --only estimators sweep_cifar10
    python benchmarks/regenerate.py --list           # the cheap results and their commands

"Cheap" means under a minute each on the project's 2-core machine (results/README.md lists
every file in results/, cheap or not, with its command and the commit that made it). In place,
each command is run exactly as results/README.md shows it, from the repository's root, after
deleting the state it would resume from; ``--check`` runs the same command with ``--out``
pointing into a temporary folder and compares every table it writes with the committed one:

- CSV tables are read with pandas; the columns and the number of rows must be the same; numbers
  agree within the entry's relative tolerance ``rtol`` (or the absolute ``atol`` near zero);
  text is equal, except that numbers inside it (``ddpm-large=8.57155``) are compared as
  numbers; columns that hold timings, memory or machine load are left out (``ignore``).
- The provenance lines (the command, the ``# specsched <version>, commit ...`` line, a
  README's ``Code:`` line) are skipped; other comment lines are compared as text with numbers.
- JSON files are compared leaf by leaf, numbers within the tolerance; ``created`` and
  ``specsched_version`` are skipped.
- Markdown files the command writes (a folder's README.md) are compared line by line as text
  with numbers. Figures (PNG) must exist; their pixels are not compared (they depend on the
  matplotlib and FreeType versions, not on the numbers alone).

On a difference it exits with status 1 and one line per difference (at most ``--max-report``
per file) naming the file, the row, the column and both values. An entry whose dependency is
missing (an extra, Debian's Fashion-MNIST) is reported as skipped with the reason; ``--check``
exits 0 only when everything it could run agreed.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from specsched.provenance import is_provenance_line

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

#: A number as it is written in a table or in prose (sign, digits, decimals, exponent).
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Keys of a JSON file that say when and by what it was made, not what it found.
JSON_SKIP = frozenset({"created", "specsched_version"})


def _fashion_mnist() -> str | None:
    from specsched.data.sources import FASHION_MNIST_DIR

    if FASHION_MNIST_DIR.is_dir():
        return None
    return (f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; "
            "apt-get install dataset-fashion-mnist)")


def _modules(*names: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [n for n in names if importlib.util.find_spec(n) is None]
        return f"needs {', '.join(absent)} (pip install -e '.[export]')" if absent else None

    return missing


@dataclasses.dataclass(frozen=True)
class Result:
    """One cheap result: the command that makes it and how its files are compared.

    Attributes
    ----------
    name : str
        Its name for ``--only`` (the file or folder under results/, without ``.csv``).
    command : tuple of str
        The command as results/README.md shows it; ``python`` and ``specsched`` are run with
        this interpreter.
    target : str
        The file or folder under results/ that the command writes (what is compared).
    out : str
        How ``--check`` redirects it: ``"file"`` (``--out DIR/<target>``) or ``"folder"``
        (``--out DIR/<target>`` for a folder target; ``--out DIR`` for a file target written
        into the folder given).
    rtol, atol : float
        Numbers agree when ``|a - b| <= atol + rtol * |b|`` (numpy.isclose).
    ignore : tuple of str
        fnmatch patterns of CSV columns (and JSON keys) not compared: timings, memory, load.
    key : tuple of str
        CSV columns that name a row: both tables are sorted by them before comparing (for
        commands that resume, whose row order depends on where a run stopped).
    fresh : tuple of str
        Paths under results/ deleted before an in-place run (the state the command resumes
        from); ``--check`` runs in an empty folder anyway.
    keep : tuple of str
        Files of a folder target that the command does not write (a hand-written README.md):
        neither compared nor deleted.
    exit_codes : tuple of int
        Exit statuses that mean the command did its work (``specsched sweep`` exits 3 when a
        cell stops short of convergence, which its README reports).
    needs : callable, optional
        Returns why the entry cannot run here (a missing extra or data set), or None.
    seconds : float
        Its run time on the project's 2-core machine when this list was made (results/README.md).
    """

    name: str
    command: tuple[str, ...]
    target: str
    out: str = "file"
    rtol: float = 1e-6
    atol: float = 1e-12
    ignore: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    exit_codes: tuple[int, ...] = (0,)
    needs: Callable[[], str | None] | None = None
    seconds: float = 0.0

    def argv(self, out_dir: Path | None) -> list[str]:
        """The command to run; redirected into ``out_dir`` when it is given."""
        words = list(self.command)
        if words[0] == "python":
            words[0] = sys.executable
        elif words[0] == "specsched":
            words[:1] = [sys.executable, "-m", "specsched.cli"]
        if out_dir is not None:
            folder_of_file = self.out == "folder" and not (RESULTS / self.target).is_dir()
            words += ["--out", str(out_dir if folder_of_file else out_dir / self.target)]
        return words


#: Every cheap result (under a minute each; results/README.md has the whole inventory).
CHEAP = (
    Result("cifar10_global_optimum", ("python", "benchmarks/global_optimum.py"),
           "cifar10_global_optimum.csv", ignore=("*_seconds", "relative_gap"), seconds=5),
    Result("estimators", ("python", "benchmarks/estimators.py"), "estimators.csv",
           out="folder", needs=_fashion_mnist, seconds=33),
    # Monte Carlo rows (torch, seeded) move in the 6th digit between runs; z is near 0
    Result("export_recipes", ("python", "benchmarks/export_recipes.py"), "export_recipes.csv",
           out="folder", rtol=1e-4, atol=1e-4,
           needs=_modules("diffusers", "torch", "k_diffusion"), seconds=23),
    # KL optima at S >= 500 are ill-conditioned (results/sweep_cifar10/README.md): rtol 1e-4;
    # the optimiser's path (iterations, the value reached from each start) is not compared
    Result("sweep_cifar10",
           ("specsched", "sweep", "--spectrum", "cifar10", "--steps", "5", "10", "20", "50",
            "100", "200", "500", "1000", "--samplers", "ddim", "ddpm", "--schedules", "linear",
            "cosine", "scaled_linear", "karras", "logsnr", "--losses", "w2", "kl", "--starts",
            "linear", "karras", "--jobs", "2", "--out", "results/sweep_cifar10", "--force"),
           "sweep_cifar10", out="folder", rtol=1e-4, atol=1e-9,
           ignore=("nit", "nfev", "starts", "status", "message"), keep=("README.md",),
           exit_codes=(0, 3), seconds=20),
    # W2 of EqualSNR is numerically 0 (1e-8 .. 1e-14): atol 1e-6
    Result("forward_processes_natural-patches",
           ("python", "benchmarks/forward_processes.py", "--data", "natural-patches", "--steps",
            "5", "10", "20", "50", "100", "--samplers", "ddim", "ddpm", "--maps"),
           "forward_processes_natural-patches", out="folder", rtol=1e-4, atol=1e-6,
           key=("steps", "sampler", "noise", "loss", "gamma"),
           fresh=("forward_processes_natural-patches/best.csv",
                  "forward_processes_natural-patches/gamma.csv"), seconds=50),
)


# ---------------------------------------------------------------- comparison

def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def text_difference(a: str, b: str, rtol: float, atol: float) -> str | None:
    """Why two texts differ, or None: text equal, the numbers in it within the tolerance."""
    if a == b:
        return None
    pa, pb = NUMBER.split(a), NUMBER.split(b)
    na, nb = NUMBER.findall(a), NUMBER.findall(b)
    if pa != pb or len(na) != len(nb):
        return "text differs"
    for x, y in zip(na, nb, strict=True):
        if not _close(float(x), float(y), rtol, atol):
            return f"{x} against {y}"
    return None


def _is_header(i: int, line: str) -> bool:
    """A provenance line: the command (the first line) or the code-version line."""
    command = line.startswith("# python ") or line.startswith("# specsched ")
    return (i == 0 and command) or is_provenance_line(line)


def _read_table(path: Path) -> tuple[list[str], pd.DataFrame]:
    lines = path.read_text(encoding="utf-8").splitlines()
    n = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    comments = [line for i, line in enumerate(lines[:n]) if not _is_header(i, line)]
    return comments, pd.read_csv(path, skiprows=n, keep_default_na=False, na_values=[""])


def _ignored(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(str(name), p) for p in patterns)


def _row_label(frame: pd.DataFrame, i: int) -> str:
    text = [f"{c}={frame.iloc[i][c]}" for c in frame.columns[:3]
            if not pd.api.types.is_float_dtype(frame[c])]
    return f"row {i + 1}" + (f" ({', '.join(text)})" if text else "")


def compare_csv(committed: Path, fresh: Path, entry: Result) -> Iterator[str]:
    """Differences between two CSV tables, one message each (see the module docstring)."""
    ca, a = _read_table(committed)
    cb, b = _read_table(fresh)
    if len(ca) != len(cb):
        yield f"comment lines: {len(ca)} committed, {len(cb)} fresh"
    for la, lb in zip(ca, cb, strict=False):
        why = text_difference(la, lb, entry.rtol, entry.atol)
        if why:
            yield f"comment line: committed {la!r}, fresh {lb!r} ({why})"
    if list(a.columns) != list(b.columns):
        yield f"columns differ: committed {list(a.columns)}, fresh {list(b.columns)}"
        return
    if len(a) != len(b):
        yield f"{len(a)} rows committed, {len(b)} fresh"
        return
    key = [k for k in entry.key if k in a.columns]
    if key:
        a, b = (t.sort_values(key, kind="stable").reset_index(drop=True) for t in (a, b))
    for col in a.columns:
        if _ignored(col, entry.ignore):
            continue
        x, y = a[col], b[col]
        numeric = all(pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
                      for s in (x, y))
        for i in range(len(a)):
            if numeric:
                u, v = float(x.iloc[i]), float(y.iloc[i])
                why = None if _close(u, v, entry.rtol, entry.atol) else (
                    f"relative difference {abs(u - v) / max(abs(v), 1e-300):.3g}")
            else:
                u, v = ("" if pd.isna(s.iloc[i]) else str(s.iloc[i]) for s in (x, y))
                why = text_difference(u, v, entry.rtol, entry.atol)
            if why:
                yield (f"{_row_label(a, i)}, column {col}: committed {u!r}, fresh {v!r} "
                       f"({why}; rtol {entry.rtol:g})")


def _json_leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def compare_json(committed: Path, fresh: Path, entry: Result) -> Iterator[str]:
    """Differences between two JSON files, leaf by leaf (numbers within the tolerance)."""

    def leaves(p):
        out = {}
        for key, value in _json_leaves(json.loads(p.read_text(encoding="utf-8"))):
            parts = re.split(r"[.\[\]]", key)
            if not any(k in JSON_SKIP or (k and _ignored(k, entry.ignore)) for k in parts):
                out[key] = value
        return out

    a, b = leaves(committed), leaves(fresh)
    for key in sorted(a.keys() ^ b.keys()):
        yield f"{key}: only in the {'committed' if key in a else 'fresh'} file"
    for key in (k for k in a if k in b):
        u, v = a[key], b[key]
        num = (int, float)
        if isinstance(u, num) and isinstance(v, num) and not isinstance(u, bool):
            if not _close(float(u), float(v), entry.rtol, entry.atol):
                yield (f"{key}: committed {u!r}, fresh {v!r} (relative difference "
                       f"{abs(u - v) / max(abs(v), 1e-300):.3g}; rtol {entry.rtol:g})")
        elif u != v:
            yield f"{key}: committed {u!r}, fresh {v!r}"


def compare_markdown(committed: Path, fresh: Path, entry: Result) -> Iterator[str]:
    """Differences between two generated Markdown files, line by line (text with numbers)."""

    def lines(p):
        return [line for line in p.read_text(encoding="utf-8").splitlines()
                if not (line.startswith("Code: ") or line.startswith("    python ")
                        or line.startswith("    specsched "))]

    a, b = lines(committed), lines(fresh)
    if len(a) != len(b):
        yield f"{len(a)} lines committed, {len(b)} fresh"
    for i, (u, v) in enumerate(zip(a, b, strict=False)):
        why = text_difference(u, v, entry.rtol, entry.atol)
        if why:
            yield f"line {i + 1}: committed {u!r}, fresh {v!r} ({why})"


COMPARE = {".csv": compare_csv, ".json": compare_json, ".md": compare_markdown}


def compare(entry: Result, fresh_root: Path, max_report: int = 10) -> list[str]:
    """Every difference between the committed files of ``entry`` and those under
    ``fresh_root`` (same relative paths), as ``"results/<file>: <difference>"`` lines."""
    committed_root = RESULTS
    target = RESULTS / entry.target
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    made = (fresh_root / entry.target)
    made_files = (sorted(p for p in made.rglob("*") if p.is_file()) if made.is_dir()
                  else [made] if made.is_file() else [])
    problems = []
    keep = {target / k for k in entry.keep}
    files = [p for p in files if p not in keep]
    rel = {p.relative_to(committed_root) for p in files}
    for extra in sorted({p.relative_to(fresh_root) for p in made_files} - rel):
        problems.append(f"results/{extra}: written by the command but not committed")
    for path in files:
        name = path.relative_to(committed_root)
        other = fresh_root / name
        if not other.is_file():
            problems.append(f"results/{name}: committed but not written by the command")
            continue
        compare_file = COMPARE.get(path.suffix)
        if compare_file is None:
            continue
        found = list(compare_file(path, other, entry))
        problems += [f"results/{name}: {d}" for d in found[:max_report]]
        if len(found) > max_report:
            problems.append(f"results/{name}: ... {len(found) - max_report} more differences")
    return problems


# ---------------------------------------------------------------- running

def run(entry: Result, out_dir: Path | None) -> float:
    """Run ``entry``'s command from the repository's root (into ``out_dir`` if given);
    its wall time in seconds. Raises RuntimeError with the command's output if it fails."""
    if out_dir is None:
        for rel in entry.fresh:
            path = RESULTS / rel
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    argv = entry.argv(out_dir)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    if done.returncode not in entry.exit_codes:
        raise RuntimeError(f"{' '.join(entry.command)} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def check(entry: Result, max_report: int = 10) -> list[str]:
    """Run ``entry`` into a temporary folder and compare: the list of differences (empty when
    the committed files equal a fresh run within the tolerance)."""
    with tempfile.TemporaryDirectory(prefix=f"regenerate-{entry.name}-") as tmp:
        run(entry, Path(tmp))
        return compare(entry, Path(tmp), max_report)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="run into a temporary folder and compare with the committed files")
    ap.add_argument("--only", nargs="+", choices=[e.name for e in CHEAP], metavar="NAME",
                    help="only these results (default: every cheap one)")
    ap.add_argument("--list", action="store_true", help="print the cheap results and exit")
    ap.add_argument("--max-report", type=int, default=10,
                    help="differences reported per file (default 10)")
    args = ap.parse_args(argv)
    entries = [e for e in CHEAP if not args.only or e.name in args.only]
    if args.list:
        for e in entries:
            print(f"{e.name}: {' '.join(e.command)}  -> results/{e.target}  "
                  f"(rtol {e.rtol:g}; about {e.seconds:.0f} s)")
        return 0
    failed = False
    for e in entries:
        why = e.needs() if e.needs else None
        if why:
            print(f"{e.name}: skipped: {why}")
            continue
        t0 = time.perf_counter()
        if args.check:
            problems = check(e, args.max_report)
            took = time.perf_counter() - t0
            if problems:
                failed = True
                print(f"{e.name}: DIFFERS from a fresh run of `{' '.join(e.command)}` "
                      f"({took:.0f} s):")
                print("\n".join(f"  {p}" for p in problems))
            else:
                print(f"{e.name}: equal to a fresh run within rtol {e.rtol:g} ({took:.0f} s)")
        else:
            took = run(e, None)
            print(f"{e.name}: regenerated results/{e.target} ({took:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
