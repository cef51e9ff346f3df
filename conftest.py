"""Executable documentation: every example of README.md and docs/*.md runs in the test suite.

sybil finds the examples in the markdown; prysk runs the command transcripts. How a page writes
them (docs/contributing.md says the same for authors):

- A fenced ``console`` block is a transcript: a line ``$ command`` (``> `` continues it) runs in
  bash, and the lines after it are its output (stdout and stderr together), compared line by line
  and exactly, so every digit shown is checked. A line ending in `` (re)`` is a regular
  expression and one ending in `` (glob)`` a glob (``*``, ``?``): the documented way to mark what
  may vary (timings, a machine's core count). A non-zero exit status is shown as ``[N]`` after the
  output; an error example shows ``[2]``.
- A fenced ``python`` block runs as it stands; ``>>>`` lines are doctests.
- ``<!-- invisible-code-block: python -->`` / ``console`` comments hold set-up the reader need
  not see (a stand-in model, a file an earlier page made).
- ``<!-- skip: next if(not TORCH, reason="needs the unet extra") -->`` marks an example that needs
  an extra, a GPU or a long run: the conditions below are true where that is available, and
  pytest reports every skip with its reason (``-ra``); nothing is skipped silently.
  ``DASK_SCHEDULER`` is the address in ``SPECSCHED_DOCS_DASK_SCHEDULER`` (empty: false), of a
  running dask scheduler whose workers see the page's folder at the same path (workers on this
  machine, or ``TMPDIR`` on a shared file system): the multi-machine examples run against it,
  their commands reading it as ``$SCHEDULER``.

Each document runs in a fresh empty folder (its examples in order, sharing the files they write),
with ``REPO`` naming the checkout (``$REPO/benchmarks/...``), matplotlib off-screen and bash's
``pipefail`` on (a pipeline fails with the command that failed in it).
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import prysk.diff
import prysk.test
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _have_gpu() -> bool:
    if not _have("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: the GPU examples cannot run here
        return False


MATCHERS = [prysk.diff.esc, prysk.diff.glob, prysk.diff.regex]


def _merged(shown: list[bytes], actual: list[bytes]) -> str:
    """``actual``, keeping each shown line that matches it (a ``(re)`` or ``(glob)`` line)."""
    matcher = prysk.diff._SequenceMatcher(None, list(shown), list(actual), matchers=MATCHERS)
    out = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        out += shown[i1:i2] if tag == "equal" else actual[j1:j2]
    return b"".join(out).decode()


def _run_transcript(example) -> str | None:
    """Run a ``console`` block with prysk; the unified diff of shown and actual output, if any.

    With ``SPECSCHED_DOCS_UPDATE=1`` a differing block is rewritten in its page with the actual
    output when the page's examples have run (review the change with ``git diff``)."""
    shown = [line.encode() for line in example.parsed.splitlines(keepends=True)]
    _, actual, diff = prysk.test.test(shown, shell=["/bin/bash"], indent=0,
                                      env=dict(example.namespace["ENV"]), cleanenv=True)
    diff = b"".join(diff).decode(errors="replace")
    if not diff:
        return None
    if os.environ.get("SPECSCHED_DOCS_UPDATE") == "1":
        example.namespace["PATCHES"].append(
            (example.path, example.start, example.end, example.parsed, _merged(shown, actual)))
    return f"the shown output (-) differs from the command's (+):\n{diff}"


def _setup(namespace: dict) -> None:
    folder = Path(tempfile.mkdtemp(prefix="specsched-docs-"))
    namespace.update(
        FOLDER=folder, START=os.getcwd(), PATCHES=[],
        # pipefail: `specsched ... | tail -1` shows the command's exit status, not tail's
        ENV={**os.environ, "REPO": str(ROOT), "MPLBACKEND": "Agg", "SHELLOPTS": "pipefail",
             "SCHEDULER": os.environ.get("SPECSCHED_DOCS_DASK_SCHEDULER", "")},
        # conditions for `skip: next if(...)`: true where the example can run
        TORCH=_have("torch"), DIFFUSERS=_have("diffusers"), KDIFFUSION=_have("k_diffusion"),
        DASK=_have("distributed"), GPU=_have_gpu(),
        DASK_SCHEDULER=os.environ.get("SPECSCHED_DOCS_DASK_SCHEDULER", ""),
        LONG=os.environ.get("SPECSCHED_DOCS_LONG") == "1",
    )
    os.chdir(folder)


def _teardown(namespace: dict) -> None:
    os.chdir(namespace["START"])
    for path, start, end, shown, actual in sorted(namespace["PATCHES"], reverse=True):
        text = Path(path).read_text(encoding="utf-8")
        block = text[start:end]
        Path(path).write_text(text[:start] + block.replace(shown, actual, 1) + text[end:],
                              encoding="utf-8")
    shutil.rmtree(namespace["FOLDER"], ignore_errors=True)


pytest_collect_file = Sybil(
    parsers=[SkipParser(), PythonCodeBlockParser(),
             CodeBlockParser(language="console", evaluator=_run_transcript)],
    patterns=["README.md", "docs/*.md"],
    setup=_setup, teardown=_teardown,
).pytest()
