"""Signals and the shell: how a command ends when it is interrupted or its output is closed.

- Ctrl-C (SIGINT) raises :class:`KeyboardInterrupt` (Python's default); SIGTERM (a scheduler,
  ``kill``) and SIGHUP (a closed terminal) raise :class:`~specsched.errors.Interrupted` while a
  command runs, so that ``finally`` blocks run and :func:`specsched.fileio.atomic_write`
  removes its temporary file (the default action of SIGTERM ends the process at once and
  would leave it). A signal that is ignored when the command starts (``nohup``, a background
  job of a non-interactive shell) stays ignored.
- The command then exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM, 129
  for SIGHUP) after one line on stderr, as shells report a process killed by that signal.
- Python runs a signal's handler between two bytecodes, so a signal that arrives during a
  long C routine waits for it to return. A watchdog thread, woken by the signal itself
  (:func:`signal.set_wakeup_fd`), ends the process with the same exit code when the clean-up
  has not finished :data:`GRACE` seconds after the signal. It can run only while the routine
  releases the GIL (NumPy's linear algebra and BLAS, file I/O, waiting); a routine that holds
  it (SciPy's LAPACK wrappers, e.g. ``scipy.linalg.eigh``) delays the exit until it returns,
  and only SIGKILL ends it sooner.
- An interruption raised where Python drops exceptions (a weakref callback, ``__del__``) is
  sent again (:func:`redeliver_lost_signals`).
- Output piped into a command that stops reading (``specsched evaluate --json | head -c1``)
  ends quietly with 141 (128 + SIGPIPE), the recipe of Python's :mod:`signal` documentation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading

from specsched.errors import Interrupted

#: Signals turned into :class:`Interrupted` while a command runs (SIGINT is already
#: :class:`KeyboardInterrupt`).
TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                    if hasattr(signal, name))
#: Exit code of a command whose standard output was closed by its reader.
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)
#: Seconds between a signal and the watchdog's exit, should the clean-up not have finished.
GRACE = 5.0
#: Seconds after which an interruption lost in a callback is sent again.
REDELIVERY_DELAY = 0.01


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def redeliver_lost_signals(previous_hook):
    """An unraisable hook that sends an interruption lost in a callback to the process again.

    Python runs a signal's handler at any bytecode, also inside a weakref callback, a
    ``__del__`` or the garbage collector, where an exception cannot propagate: it is printed
    as "Exception ignored in ..." and dropped, and the command would go on. Sending the
    signal again, from another thread a moment later (sent from here, the handler would run
    inside this hook, where its exception is dropped too), lets the handler run once more,
    in the command's own code. Applies to :class:`KeyboardInterrupt` (SIGINT) and to
    exceptions with a ``signum`` attribute (:class:`~specsched.errors.Interrupted`, a
    worker's stop); anything else goes to ``previous_hook``.
    """

    def hook(unraisable):
        exc = unraisable.exc_value
        signum = getattr(exc, "signum", None)
        if signum is None and isinstance(exc, KeyboardInterrupt):
            signum = signal.SIGINT
        if signum is None or not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return previous_hook(unraisable)
        timer = threading.Timer(REDELIVERY_DELAY, os.kill, (os.getpid(), signum))
        timer.daemon = True
        _PENDING.append(timer)
        timer.start()

    return hook


#: Redeliveries not yet sent (:func:`redeliver_lost_signals`).
_PENDING: list[threading.Timer] = []


def cancel_redelivery() -> None:
    """Cancel the redeliveries not yet sent: the command is already ending on an interruption.

    Without this a redelivered signal could land in the clean-up of the interruption it
    duplicates (or at interpreter exit), where nothing catches it.
    """
    while _PENDING:
        _PENDING.pop().cancel()


def end_interrupted_process(code: int) -> None:
    """End the process that *is* the command with ``code`` at once, after flushing its output.

    For the console script and ``python -m specsched.cli`` only, once the command has ended on
    an interruption, its clean-up done and its exit code (``128 + N``) decided. Python's own
    finalization is skipped: CPython 3.11 was seen to end such a process by the signal
    itself instead (a killed-by-SIGINT status, -2 to :mod:`subprocess`), about one run in
    eight of an optimisation interrupted by Ctrl-C (tests/test_signals.py), and a second
    Ctrl-C landing in finalization would do the same. Every file the command writes is
    already complete or removed by then (:func:`specsched.fileio.atomic_write`).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _watchdog(receiver: socket.socket, finished: threading.Event, prog: list) -> None:
    """Wait for a signal's byte on ``receiver``; exit ``GRACE`` s later unless finished."""
    while True:
        try:
            data = receiver.recv(64)
        except OSError:
            return
        if not data or finished.is_set():
            return
        signum = data[-1]
        if finished.wait(GRACE):
            return
        with contextlib.suppress(OSError):
            os.write(2, f"{prog[0]}: interrupted ({signal.Signals(signum).name}) during a long "
                     f"computation; stopped {GRACE:g} s later without clean-up\n".encode())
        os._exit(128 + signum)


@contextlib.contextmanager
def termination_raises(prog: list | None = None):
    """While the block runs, SIGTERM and SIGHUP raise :class:`Interrupted`, and a watchdog
    ends the process :data:`GRACE` seconds after any of SIGINT, SIGTERM, SIGHUP should the
    block not have ended by then (module docstring).

    An interruption raised where Python cannot propagate it (a weakref callback, ``__del__``)
    is delivered again (:func:`redeliver_lost_signals`). Only in the main thread (Python delivers
    signals there), and only for signals whose action is the default one; the previous
    handlers are restored on exit.

    Parameters
    ----------
    prog : list of one str, optional
        The command's name for the watchdog's message (read when it fires).
    """
    installed, wakeup, previous_hook = {}, None, None
    finished = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in TERMINATING:
            if signal.getsignal(sig) is signal.SIG_DFL:
                installed[sig] = signal.signal(sig, _raise_interrupted)
        previous_hook = sys.unraisablehook
        sys.unraisablehook = redeliver_lost_signals(previous_hook)
        with contextlib.suppress(OSError, ValueError):
            receiver, sender = socket.socketpair()
            sender.setblocking(False)
            old_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
            wakeup = (receiver, sender, old_fd)
            threading.Thread(target=_watchdog, args=(receiver, finished, prog or ["specsched"]),
                             daemon=True, name="specsched-signal-watchdog").start()
    try:
        yield
    finally:
        finished.set()
        if wakeup is not None:
            receiver, sender, old_fd = wakeup
            signal.set_wakeup_fd(old_fd)
            sender.close()  # the watchdog's recv returns b"" and it ends
            receiver.close()
        for sig, old in installed.items():
            signal.signal(sig, old)
        if previous_hook is not None:
            sys.unraisablehook = previous_hook


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption behind ``exc``: itself, or one in its ``__cause__``/``__context__``.

    A signal handled while a C extension calls back into Python can surface as a
    ``SystemError("... returned a result with an exception set")`` whose cause is the
    :class:`KeyboardInterrupt`; the command must still end as interrupted.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """``128 + signal number``: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    signum = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
    return 128 + int(signum)


def signal_name(interrupt: KeyboardInterrupt) -> str:
    """``SIGINT``, ``SIGTERM``, ... for a message."""
    signum = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def silence_stdout() -> None:
    """Point file descriptor 1 at the null device after its reader went away.

    Python flushes ``sys.stdout`` once more at exit; without this that flush fails again
    and prints ``Exception ignored ... BrokenPipeError``.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def say(line: str) -> None:
    """Print one line on stderr; a closed stderr is not an error worth a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)
