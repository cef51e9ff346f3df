"""The ``specsched`` command line (names and flags as in docs/cli.md).

One layer: every subcommand is a module of this package defining ``add_parser(subparsers)``
(a parser whose ``set_defaults(run=...)`` names ``run(args) -> int``). Library packages hold no
argparse code and never import this package.

Exit codes (docs/reliability.md): 0 success; 2 bad input (one line naming the file, field or
argument, argparse refusals included); 3 an optimisation did not converge (its files are
written and marked ``success: false``); 4 the machine failed the command (disk full, a file
size limit, an I/O error, out of memory); ``128 + N`` ended by signal N: 130 Ctrl-C, 143
SIGTERM, 129 SIGHUP (:mod:`specsched.cli.signals`); 141 the reader of standard output went
away (``| head``), quietly. Output files are written atomically and never overwritten without
``--force``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import numpy as np

from specsched import __version__
from specsched.caches import matplotlib_config_ready
from specsched.cli.common import (
    EXIT_INPUT,
    EXIT_NOT_CONVERGED,
    EXIT_RESOURCES,
    error_message,
    one_line,
)
from specsched.cli.signals import (
    EXIT_BROKEN_PIPE,
    cancel_redelivery,
    end_interrupted_process,
    exit_code,
    interruption,
    say,
    signal_name,
    silence_stdout,
    termination_raises,
)
from specsched.errors import ResourceError, SpecschedError
from specsched.fileio import STORAGE_ERRNOS, storage_advice

__all__ = ["COMMAND_MODULES", "EXIT_INPUT", "EXIT_NOT_CONVERGED", "EXIT_RESOURCES",
           "build_parser", "main"]

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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line, like every other refusal."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {one_line(message)} "
                  f"(`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specsched`` command (also used to document the CLI)."""
    parser = _Parser(
        prog="specsched",
        description="Design diffusion noise schedules from the spectrum of the data.",
    )
    parser.add_argument("--version", action="version", version=f"specsched {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def _run(args) -> int:
    """Run a parsed command; turn the errors meant for the user into one line and a code."""
    prog = f"specsched {args.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None):
        say(f"{prog}: warning: {one_line(str(message))}")

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.showwarning = show_warning  # one plain line, no source excerpt
            matplotlib_config_ready()
            code = args.run(args)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return code
    except BrokenPipeError:
        raise
    except SpecschedError as exc:
        say(f"{prog}: error: {error_message(exc)}")
        return EXIT_RESOURCES if isinstance(exc, ResourceError) else EXIT_INPUT
    except OSError as exc:  # the file system refused (unreadable input, full disk, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        text = where + (exc.strerror or str(exc))
        if exc.errno in STORAGE_ERRNOS:
            say(f"{prog}: error: {one_line(text)}; {storage_advice(exc.errno)}")
            return EXIT_RESOURCES
        say(f"{prog}: error: {one_line(text)}")
        return EXIT_INPUT
    except MemoryError as exc:
        say(f"{prog}: error: out of memory{f' ({exc})' if str(exc) else ''}; "
            f"{_memory_advice(args)}")
        return EXIT_RESOURCES


#: The options that bound a command's memory, by argparse ``dest``: each named in the advice
#: of an out-of-memory refusal only where the command has it.
MEMORY_FLAGS = {"chunk_size": ("--chunk-size", "smaller chunks"),
                "batch_size": ("--batch-size", "smaller batches")}


def _memory_advice(args) -> str:
    """What an out-of-memory refusal advises: the memory options this command takes."""
    have = [flag for dest, flag in MEMORY_FLAGS.items() if hasattr(args, dest)]
    if not have:
        return "use a smaller input"
    return (f"use {' or '.join(words for _, words in have)} "
            f"({', '.join(flag for flag, _ in have)}) or a smaller input")


def main(argv=None) -> int:
    """Entry point of the ``specsched`` console script; returns the exit code.

    ``argv`` None (the console script, ``python -m specsched.cli``) means this process is the
    command: once it ends on an interruption it exits at once with ``128 + N``
    (:func:`~specsched.cli.signals.end_interrupted_process`). A list of arguments (an
    in-process caller) always gets the code back.
    """
    prog = ["specsched"]
    try:
        code = _main(argv, prog)
    except KeyboardInterrupt as exc:  # a second interruption while the first was ending it
        cancel_redelivery()
        say(f"{prog[0]}: interrupted ({signal_name(exc)}); finished files are kept")
        code = exit_code(exc)
    if argv is None and code > 128 and code != EXIT_BROKEN_PIPE:
        end_interrupted_process(code)
    return code


def _main(argv, prog: list) -> int:
    """:func:`main` inside :func:`~specsched.cli.signals.termination_raises`."""
    stdout_reconfigure = getattr(sys.stdout, "reconfigure", None)
    if stdout_reconfigure is not None and getattr(sys.stdout, "errors", "") == "strict":
        stdout_reconfigure(errors="surrogateescape")  # print undecodable file names as given
    with termination_raises(prog):
        try:
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                sys.stdout.flush()  # `specsched --help | head -1`
                raise
            prog[0] = f"specsched {args.command}"
            return _run(args)
        except BrokenPipeError:
            silence_stdout()
            return EXIT_BROKEN_PIPE
        except (SystemExit, Exception) as exc:
            if isinstance(exc, SystemExit) or interruption(exc) is None:
                raise
            interrupt = interruption(exc)
        except KeyboardInterrupt as exc:  # Ctrl-C; Interrupted for SIGTERM and SIGHUP
            interrupt = exc
        cancel_redelivery()
    say(f"{prog[0]}: interrupted ({signal_name(interrupt)}); finished files are kept")
    return exit_code(interrupt)
