"""Worker processes that end with the command, and how many of them to start.

A :class:`~concurrent.futures.ProcessPoolExecutor` made by :func:`worker_pool` has workers that

- ignore Ctrl-C and SIGHUP, which reach the whole process group: the parent decides, and
  stops them (:func:`stop_workers`) when it is interrupted;
- end on SIGTERM after the ``finally`` blocks of the running task (temporary files removed,
  :func:`specsched.fileio.atomic_write`), with exit code 143;
- get SIGTERM when the parent dies, even by SIGKILL: ``prctl(PR_SET_PDEATHSIG)`` on Linux,
  elsewhere a thread that watches the parent's pid;
- share the cores: each runs ``cores // workers`` numba threads (unless ``NUMBA_NUM_THREADS``
  is set), so that ``--jobs`` processes never oversubscribe the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from specsched.cli.signals import redeliver_lost_signals

#: ``PR_SET_PDEATHSIG`` of <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
#: Seconds a stopped worker has to finish its clean-up before it is killed (less than the
#: parent's own grace period, specsched.cli.signals.GRACE).
STOP_TIMEOUT = 3.0


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a ``taskset`` or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_count(jobs: int | None, tasks: int) -> tuple[int, int]:
    """Processes to start for ``tasks`` independent tasks.

    Parameters
    ----------
    jobs : int or None
        What the user asked for (``--jobs``); None: as many as there are cores.
    tasks : int
        Independent tasks (a sweep's chains).

    Returns
    -------
    processes : int
        ``jobs`` capped at ``tasks`` and at :func:`available_cores`, at least 1.
    cores : int
        :func:`available_cores`, for the log line.
    """
    cores = available_cores()
    wanted = cores if jobs is None else jobs
    return max(1, min(wanted, tasks, cores)), cores


class _Stop(SystemExit):
    """SIGTERM in a worker: unwinds the running task (its clean-up runs), then the worker
    exits with 128 + signum (:func:`run_in_worker`, or the executor's loop when idle)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _exit_on_sigterm(signum, frame):
    raise _Stop(signum)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent_pid: int) -> None:
    """Have this process receive SIGTERM when the process ``parent_pid`` (its parent) ends."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl
                    os.kill(os.getpid(), signal.SIGTERM)
                return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="specsched-watch-parent").start()


def _worker_init(parent_pid: int | None, numba_threads: int) -> None:
    # A forked worker shares the parent's signal wake-up socket: detach it, or a signal to
    # the worker would wake the parent's watchdog (specsched.cli.signals).
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.unraisablehook = redeliver_lost_signals(sys.unraisablehook)
    if "NUMBA_NUM_THREADS" not in os.environ:
        if "numba" in sys.modules:
            sys.modules["numba"].set_num_threads(numba_threads)
        else:
            os.environ["NUMBA_NUM_THREADS"] = str(numba_threads)
    die_with_parent(os.getppid() if parent_pid is None else parent_pid)


def run_in_worker(fn, *args):
    """``fn(*args)`` in a worker; a SIGTERM ends the process once ``fn``'s clean-up ran.

    (The executor catches every exception of a task, SystemExit included, and would keep
    the worker waiting for more work.)
    """
    try:
        return fn(*args)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)


def worker_pool(processes: int, cores: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` workers set up as the module docstring says.

    Parameters
    ----------
    processes : int
        Worker processes (:func:`worker_count`).
    cores : int
        Cores to share among them: each worker runs ``max(1, cores // processes)`` numba
        threads.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
        Submit tasks as ``pool.submit(run_in_worker, fn, *args)``; on any exception in the
        parent call :func:`stop_workers`, else ``pool.shutdown()``.
    """
    ctx = multiprocessing.get_context()
    # the workers' parent: this process, except under forkserver (the server forks them)
    parent = os.getpid() if ctx.get_start_method() != "forkserver" else None
    return ProcessPoolExecutor(max_workers=processes, mp_context=ctx,
                               initializer=_worker_init,
                               initargs=(parent, max(1, cores // processes)))


def stop_workers(pool: ProcessPoolExecutor, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a pool now: cancel what has not started and end every worker.

    Parameters
    ----------
    pool : concurrent.futures.ProcessPoolExecutor
        Made by :func:`worker_pool`.
    timeout : float
        Seconds the workers have, after SIGTERM, to finish the clean-up of their task; those
        still running then get SIGKILL. No process of the pool is left behind.
    """
    # ProcessPoolExecutor has no public way to reach its workers before Python 3.14
    # (terminate_workers); _processes (pid -> Process) exists in every version since 3.2.
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    pending = {p.sentinel: p for p in procs}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for sentinel in multiprocessing.connection.wait(list(pending), timeout=0.5):
            pending.pop(sentinel, None)
    for p in pending.values():
        with contextlib.suppress(Exception):
            p.kill()
