"""The committed results record how they were made, and the cheap ones equal a fresh run.

``benchmarks/regenerate.py --check`` per cheap result (results/README.md lists every file of
results/, which are cheap, their commands and tolerances): the command runs into a temporary
folder and every table it writes is compared with the committed one. Beside it, the comparison
itself on a committed file with one number changed (it must fail, naming file, row, column and
both values), and :mod:`specsched.provenance` (the header lines; no git checkout).
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

from specsched import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _load_regenerate():
    """benchmarks/regenerate.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("regenerate",
                                                  ROOT / "benchmarks" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["regenerate"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CHEAP = [e.name for e in _load_regenerate().CHEAP]


@pytest.fixture
def regenerate():
    return sys.modules["regenerate"]


@pytest.mark.parametrize("name", CHEAP)
def test_committed_cheap_result_equals_a_fresh_run(regenerate, name):
    entry = next(e for e in regenerate.CHEAP if e.name == name)
    why = entry.needs() if entry.needs else None
    if why:
        pytest.skip(why)
    problems = regenerate.check(entry)
    assert not problems, (f"results/{entry.target} no longer equals a fresh run of "
                          f"`{' '.join(entry.command)}`; regenerate it "
                          f"(python benchmarks/regenerate.py --only {name}):\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("name", CHEAP)
def test_cheap_result_opens_with_its_command_and_code_version(regenerate, name):
    entry = next(e for e in regenerate.CHEAP if e.name == name)
    target = RESULTS / entry.target
    tables = sorted(target.rglob("*.csv")) if target.is_dir() else [target]
    made_here = [t for t in tables if t.read_text().startswith("# python ")
                 or t.read_text().startswith("# specsched ")]
    assert made_here, f"no table of results/{entry.target} opens with its command"
    for table in made_here:
        first, second = table.read_text().splitlines()[:2]
        assert first == "# " + " ".join(entry.command), table
        assert provenance.is_provenance_line(second), (table, second)


def test_every_file_in_results_is_in_the_inventory():
    """results/README.md names every file or folder of results/ (by name, a glob, or another
    file of the same stem: ``optimiser_speed.csv``, ``.png``)."""
    inventory = (RESULTS / "README.md").read_text(encoding="utf-8")
    named = {n.rstrip("/") for n in re.findall(r"`([^`\s]+)`", inventory)}
    stems = {n.split(".")[0] for n in named}
    for path in sorted(RESULTS.iterdir()):
        if path.name == "README.md":
            continue
        listed = (path.name in named or path.name.split(".")[0] in stems
                  or any("*" in n and fnmatch.fnmatchcase(path.name, n) for n in named))
        assert listed, f"results/{path.name} is not in the inventory results/README.md"


def _one_row_changed(path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of results/<path> as the 'fresh' run and a copy with one number scaled by 1.01
    as the 'committed' file, under tmp_path/fresh and tmp_path/committed."""
    fresh, committed = tmp_path / "fresh", tmp_path / "committed"
    for folder in (fresh, committed):
        folder.mkdir()
        shutil.copy(path, folder / path.name)
    lines = (committed / path.name).read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 2  # 2nd row
    cells = lines[i].split(",")
    j = next(j for j, c in enumerate(cells) if re.fullmatch(r"\d+\.\d+", c))
    cells[j] = f"{float(cells[j]) * 1.01:.10g}"
    lines[i] = ",".join(cells)
    (committed / path.name).write_text("\n".join(lines) + "\n")
    return committed, fresh


def test_a_changed_committed_number_fails_the_check(regenerate, tmp_path, monkeypatch):
    entry = next(e for e in regenerate.CHEAP if e.name == "cifar10_global_optimum")
    committed, fresh = _one_row_changed(RESULTS / entry.target, tmp_path)
    monkeypatch.setattr(regenerate, "RESULTS", committed)
    problems = regenerate.compare(entry, fresh)
    assert len(problems) == 1, problems
    message = problems[0]
    assert message.startswith("results/cifar10_global_optimum.csv: row 2 (steps=10")
    assert "column slsqp-logsnr_w2: committed 4.553965641, fresh 4.508876872" in message
    assert regenerate.compare(entry, committed) == []  # equal files: no difference


def test_timings_and_provenance_lines_are_not_compared(regenerate, tmp_path, monkeypatch):
    committed, fresh = tmp_path / "committed", tmp_path / "fresh"
    committed.mkdir()
    fresh.mkdir()
    table = "# python benchmarks/x.py\n# {}\n# d = 3072\nsteps,w2,note,w2_seconds\n{}\n"
    (committed / "x.csv").write_text(table.format(
        "specsched 0.1.0, commit 1234567, 2026-01-01T00:00Z", "5,7.705207768,a=1.5,0.8"))
    (fresh / "x.csv").write_text(table.format(
        "specsched 0.1.0, not a git checkout, 2027-01-01T00:00Z", "5,7.705207769,a=1.5000001,3.1"))
    monkeypatch.setattr(regenerate, "RESULTS", committed)
    entry = regenerate.Result("x", ("python", "benchmarks/x.py"), "x.csv",
                              ignore=("*_seconds",))
    assert regenerate.compare(entry, fresh) == []
    (fresh / "x.csv").write_text(table.format("specsched 0.2, commit 89abcde, 2027-01-01T00:00Z",
                                              "5,7.705207769,b=1.5,3.1")
                                 .replace("d = 3072", "d = 3073"))
    problems = regenerate.compare(entry, fresh)
    assert any("comment line" in p and "3072 against 3073" in p for p in problems), problems
    assert any("column note: committed 'a=1.5', fresh 'b=1.5'" in p for p in problems), problems


def test_header_lines_name_the_command_version_and_commit():
    when = datetime.datetime(2026, 12, 8, 1, 2, tzinfo=datetime.timezone.utc)
    command = provenance.command_line("python benchmarks/x.py", ["--out", "a b"])
    assert command == "python benchmarks/x.py --out 'a b'"
    first, second = provenance.header_lines(command, now=when)
    assert first == "# python benchmarks/x.py --out 'a b'"
    assert re.fullmatch(r"# specsched \S+, (commit [0-9a-f]{4,}(, uncommitted changes)?|"
                        r"not a git checkout), 2026-12-08T01:02Z", second), second
    assert provenance.is_provenance_line(second)
    assert not provenance.is_provenance_line("# specsched sweep --steps 5")
    meta = provenance.png_metadata(command)
    assert meta["Description"] == command and meta["Software"].startswith("specsched ")


def test_without_a_git_checkout_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    assert provenance.code_version().endswith(", not a git checkout")
    monkeypatch.setattr(provenance, "ROOT", ROOT)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert provenance.code_version().endswith(", not a git checkout")
