"""The repository stands alone: every citation of docs/theory.md resolves to one of its
numbered sections, and no shipped file cites a document the repository does not have."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
#: Where citations are looked for, and the files read there.
CITING = ("specsched", "tests", "benchmarks", "docs")
SUFFIXES = {".py", ".md", ".json", ".toml", ".txt", ".cfg", ".rst"}

#: "docs/theory.md section 3", "sections 1-3", "sections 3 and 4", "sections 1, 2 and 5";
#: whitespace (a line break inside a docstring) may separate the words.
CITATION = re.compile(
    r"docs/theory\.md\s+sections?\s+(\d+(?:\s*(?:-|–|,|and|to)\s*\d+)*)", re.IGNORECASE)
HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
#: Documents that live outside the repository (the team's notes, the shared data folder).
FOREIGN = re.compile(r"THEORY\.md|DESIGN\.md|STYLE\.md|\.\./shared\b|/work/shared\b")


def _files(folders):
    """The text files under ``folders`` (or the files themselves), this test file excepted."""
    for folder in folders:
        top = ROOT / folder
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if (path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
                    and path != Path(__file__).resolve()):
                yield path


def cited_sections(text: str) -> list[tuple[int, str]]:
    """``(section, citation text)`` for every section a text cites (ranges expanded)."""
    out = []
    for match in CITATION.finditer(text):
        spec = match.group(1)
        for lo, hi in re.findall(r"(\d+)(?:\s*(?:-|–|to)\s*(\d+))?", spec):
            first, last = int(lo), int(hi or lo)
            out += [(n, " ".join(match.group(0).split())) for n in range(first, last + 1)]
    return out


def numbered_sections(text: str) -> set[int]:
    """Section numbers of the ``## N. Title`` headings of a markdown page."""
    return {int(n) for n in HEADING.findall(text)}


def test_citation_parser():
    text = ("see docs/theory.md section 3; docs/theory.md sections 1-3 and\n"
            "    docs/theory.md\n    sections 2 and 5, docs/theory.md sections 4, 6 and 7.")
    assert sorted({n for n, _ in cited_sections(text)}) == [1, 2, 3, 4, 5, 6, 7]
    assert numbered_sections("# T\n## 1. A\ntext\n## 2. B\n### 2.1 not a section\n") == {1, 2}


def test_theory_sections_are_numbered_in_order():
    numbers = [int(n) for n in HEADING.findall(THEORY.read_text(encoding="utf-8"))]
    assert numbers and numbers == list(range(1, len(numbers) + 1)), numbers


def test_every_theory_citation_resolves():
    sections = numbered_sections(THEORY.read_text(encoding="utf-8"))
    missing, n_citations = [], 0
    for path in _files(CITING):
        for n, cite in cited_sections(path.read_text(encoding="utf-8", errors="replace")):
            n_citations += 1
            if n not in sections:
                missing.append(f"{path.relative_to(ROOT)}: {cite!r} (no '## {n}.' heading)")
    assert not missing, "citations of sections docs/theory.md lacks:\n" + "\n".join(missing)
    assert n_citations > 50  # the code does cite it: the pattern has not gone stale


@pytest.mark.parametrize("folder", ["specsched", "docs", "README.md", "pyproject.toml"])
def test_no_file_cites_a_document_outside_the_repository(folder):
    offenders = []
    for path in _files([folder]):
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            if FOREIGN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


#: Pages whose examples run in the test suite (conftest.py); docs/cli.md is generated from --help.
EXAMPLE_PAGES = [ROOT / "README.md"] + sorted(
    p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")
#: The first word of a shell example.
COMMAND = re.compile(r"^(\$ |specsched |python3? |pip |dask |bash |ruff )")


def shell_lines_outside_console_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every indented or fenced non-console code line that reads
    as a shell command: an example the test suite would not run."""
    found, fence = [], None
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if fence in ("console", "python"):
            continue
        code = line[4:] if fence is None and line.startswith("    ") else (
            line if fence is not None else None)
        if code is not None and COMMAND.match(code.lstrip()):
            found.append((i, line))
    return found


def test_shell_line_finder():
    text = ("para\n\n    specsched optimize\n\n```console\n$ specsched x\n```\n"
            "```text\npython y.py\n```\n- a list item\n    continued\n")
    assert [n for n, _ in shell_lines_outside_console_blocks(text)] == [3, 9]


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: p.name)
def test_every_shell_example_is_a_console_block(page):
    """A shell example outside a ``console`` block would never run: write it as one
    (docs/contributing.md). The README's first two lines, the fresh-machine commands, are run
    by CI itself (.ci/run: the core install, then the test command)."""
    lines = shell_lines_outside_console_blocks(page.read_text(encoding="utf-8"))
    if page.name == "README.md":
        lines = [(n, line) for n, line in lines if n > 4]
    assert not lines, "\n".join(f"{page.name}:{n}: {line}" for n, line in lines)
