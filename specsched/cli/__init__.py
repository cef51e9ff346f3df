"""The ``specsched`` command line (names and flags as in docs/cli.md).

One layer: every subcommand is a module of this package defining ``add_parser(subparsers)``
(a parser whose ``set_defaults(run=...)`` names ``run(args) -> int``). Library packages hold no
argparse code and never import this package.

Exit codes: 0 success; 2 bad input (a message names the file, field or argument); 3 an
optimisation did not converge (its files are written and marked ``success: false``);
130 interrupted. Output files are written atomically and never overwritten without
``--force``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import numpy as np

from specsched import __version__
from specsched.cli.common import EXIT_INPUT, EXIT_NOT_CONVERGED
from specsched.errors import SpecschedError

__all__ = ["COMMAND_MODULES", "EXIT_INPUT", "EXIT_NOT_CONVERGED", "build_parser", "main"]

#: Subcommand modules, in the order ``specsched --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "specsched.cli.optimize",
    "specsched.cli.evaluate",
    "specsched.cli.spectrum",
    "specsched.cli.sweep",
    "specsched.cli.sample",
    "specsched.cli.export",
    "specsched.cli.analyze",
    "specsched.cli.unet",
    "specsched.cli.fid",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specsched`` command (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="specsched",
        description="Design diffusion noise schedules from the spectrum of the data.",
    )
    parser.add_argument("--version", action="version", version=f"specsched {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``specsched`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = args.run

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"specsched {args.command}: warning: {message}", file=sys.stderr)

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.showwarning = show_warning  # one plain line, no source excerpt
            return run(args)
    except SpecschedError as exc:
        print(f"specsched {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"specsched {args.command}: interrupted; finished files are kept", file=sys.stderr)
        return 130

