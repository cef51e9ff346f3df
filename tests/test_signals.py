"""Signals from a user or a scheduler, against real processes (docs/reliability.md).

Each test starts ``python -m specsched.cli ...`` in a session of its own (so that the whole
process group can be signalled, as a terminal does on Ctrl-C, and its members found in
/proc), waits until the command is working (a line on stdout, an open input, a temporary
output file), sends the signal and checks: the exit code is 128 + signal number, stderr is
one line without a traceback, no temporary file is left and no process of the command's group
survives it.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specsched.schedules import Schedule

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="finds the command's processes in /proc")

#: Seconds any wait of these tests gives up after (never reached when things work).
PATIENCE = 240


def _default_sigint():
    # A test run started in the background of a non-interactive shell ignores SIGINT, and
    # children inherit that; a user's command starts with Python's own handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv, tmp_path):
    """Start ``specsched ARGV`` in its own session; stdout and stderr go to files."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    out, err = open(tmp_path / "stdout", "w"), open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "specsched.cli", *map(str, argv)],
                            stdout=out, stderr=err, env=env, cwd=tmp_path,
                            start_new_session=True, preexec_fn=_default_sigint)
    out.close()
    err.close()
    return proc


def wait_for(condition, proc, what):
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def stdout_says(tmp_path, text):
    return lambda: text in (tmp_path / "stdout").read_text()


def group_members(pgid):
    """Live (non-zombie) processes of the process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            found.append(int(entry.name))
    return found


def children(pid):
    return [p for p in group_members(pid) if p != pid]


def finish(proc, tmp_path):
    """Wait for the command and for every process of its group; (exit code, stderr)."""
    code = proc.wait(timeout=PATIENCE)
    deadline = time.monotonic() + PATIENCE
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(proc.pid) == [], "processes of the command outlived it"
    return code, (tmp_path / "stderr").read_text()


def assert_one_line(err, *needles):
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def no_temporaries(folder):
    return [p for p in Path(folder).rglob("*.tmp")] == []


def open_fifo_writer(fifo, proc):
    """Wait until the command opened ``fifo`` for reading; return our (silent) write end."""
    fd = []

    def opened():
        try:
            fd.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no reader yet
                raise
        return bool(fd)

    wait_for(opened, proc, f"the command to open {fifo.name}")
    return fd[0]


# ---- numba: the root of the SystemError -----------------------------------------------------

KERNEL_LOOP = """
import numpy as np
from specsched.theory import loss_and_grad
lam, ab = np.logspace(0, -6, 20000), np.linspace(0.999, 0.01, 300)
loss_and_grad(lam, None, ab, backend="numba")
print("ready", flush=True)
try:
    while True:
        loss_and_grad(lam, None, ab, backend="numba")
except BaseException as exc:
    print(type(exc).__name__, flush=True)
"""


def test_sigint_inside_the_compiled_kernel_is_a_keyboard_interrupt(tmp_path):
    # The kernel's result used to be boxed by a call into Python (numba's _numba_unpickle),
    # where the pending SIGINT raised inside C code: SystemError "returned a result with an
    # exception set". The gradient is now an output argument and the kernel returns a float.
    proc = subprocess.Popen([sys.executable, "-c", KERNEL_LOOP], stdout=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.5)  # well inside the loop of kernel calls (each a few ms)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=PATIENCE)
    assert out.strip() == "KeyboardInterrupt"


# ---- every command ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_optimize_interrupted_mid_work(tmp_path, sig):
    proc = start(["optimize", "--spectrum", "cifar10", "--steps", "150", "200", "300",
                  "--out", tmp_path / "o"], tmp_path)
    wait_for(stdout_says(tmp_path, "spectrum: cifar10"), proc, "the optimisation to start")
    time.sleep(0.5)
    os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C
    code, err = finish(proc, tmp_path)
    assert code == 128 + sig, err
    assert_one_line(err, f"interrupted ({signal.Signals(sig).name}); finished files are kept")
    assert no_temporaries(tmp_path)
    for path in (tmp_path / "o").glob("*.json") if (tmp_path / "o").exists() else []:
        Schedule.load(path)  # whatever was kept is complete


def _write_schedule(path):
    Schedule(alphas_cumprod=np.array([0.99, 0.5, 0.01]), sampler="ddim").save(path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sample_interrupted_while_writing_leaves_no_temporary(tmp_path, sig):
    _write_schedule(tmp_path / "s.json")
    np.save(tmp_path / "eigs.npy", np.array([2.0, 1.0, 0.5, 0.25]))
    proc = start(["sample", "--schedule", tmp_path / "s.json", "--spectrum",
                  tmp_path / "eigs.npy", "--n", "10000000", "--batch-size", "16",
                  "--out", tmp_path / "x.npy"], tmp_path)
    wait_for(lambda: list(tmp_path.glob(".x.npy.*.tmp")), proc, "the temporary output")
    os.killpg(proc.pid, sig)
    code, err = finish(proc, tmp_path)
    assert code == 128 + sig, err
    assert_one_line(err, "interrupted")
    assert no_temporaries(tmp_path) and not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_commands_interrupted_while_reading_input(tmp_path, command, sig):
    # The input is a named pipe the test holds open without writing: the command is
    # blocked reading it (fully started, inside its run function) when the signal comes.
    # (Samples are read at their offsets, so a pipe given as data is refused instead:
    # tests/test_streaming.py::test_a_named_pipe_as_data_is_refused.)
    fifo = tmp_path / "in.json"
    os.mkfifo(fifo)
    argv = {"evaluate": ["evaluate", "--spectrum", "cifar10", "--schedule", fifo],
            "export": ["export", fifo, "--to", "ab", "--out", tmp_path / "ab.npy"]}[command]
    proc = start(argv, tmp_path)
    writer = open_fifo_writer(fifo, proc)
    try:
        time.sleep(0.2)
        os.killpg(proc.pid, sig)
        code, err = finish(proc, tmp_path)
    finally:
        os.close(writer)
    assert code == 128 + sig, err
    assert_one_line(err, f"specsched {command}: interrupted ({signal.Signals(sig).name})")


def _reads(pid, name):
    """Whether process ``pid`` has ``name`` open or mapped."""
    try:
        fds = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        return name in Path(f"/proc/{pid}/maps").read_text() or any(name in f for f in fds)
    except OSError:
        return False


def test_spectrum_interrupted_mid_estimate(tmp_path):
    # 30000 x 2048 samples: a covariance of ~1e11 flops, long enough to be interrupted
    x = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                  shape=(30_000, 2048))
    x[:] = np.random.default_rng(0).standard_normal((30_000, 2048), dtype=np.float32)
    x.flush()
    del x
    proc = start(["spectrum", tmp_path / "big.npy", "--out", tmp_path / "s.npz"], tmp_path)
    wait_for(lambda: _reads(proc.pid, "big.npy"), proc, "the samples to be read")
    os.killpg(proc.pid, signal.SIGTERM)
    code, err = finish(proc, tmp_path)
    assert code == 143
    assert_one_line(err, "specsched spectrum: interrupted (SIGTERM)")
    assert not (tmp_path / "s.npz").exists() and no_temporaries(tmp_path)


def test_signal_during_a_long_c_call_ends_after_the_grace_period(tmp_path):
    # The main thread blocks SIGTERM and sleeps in C: the signal is delivered to another
    # thread, so Python's handler cannot run before the sleep ends (as in a long C routine
    # that releases the GIL); the watchdog woken by the signal ends the process.
    code = ("import signal, time\n"
            "from specsched.cli.signals import termination_raises\n"
            "with termination_raises(['specsched test']):\n"
            "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(120)\n"
            "print('slept to the end', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    main_thread = Path(f"/proc/{proc.pid}/task/{proc.pid}/stat")
    # after "ready" the main thread runs bytecode until it sleeps (state S) in time.sleep
    wait_for(lambda: main_thread.read_text().rsplit(")", 1)[1].split()[0] == "S", proc,
             "the main thread to sleep")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 143 and out == ""
    assert_one_line(err, "specsched test: interrupted (SIGTERM) during a long computation")


LOST_IN_DEL = """
import os, signal
from specsched.cli.signals import termination_raises


class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs here, where Python drops its exception
            pass


with termination_raises():
    try:
        del_me = Finalised()
        del del_me
        for _ in range(10_000_000):  # redelivered: raised again in the program's own code
            pass
        print("not interrupted")
    except KeyboardInterrupt as exc:
        print("caught", type(exc).__name__)
"""


def test_an_interruption_lost_in_a_finaliser_is_delivered_again():
    # Python runs a signal handler at any bytecode, also inside __del__ or a weakref callback,
    # where its exception is printed as "Exception ignored" and dropped: the command went on.
    proc = subprocess.run([sys.executable, "-c", LOST_IN_DEL], capture_output=True, text=True,
                          timeout=PATIENCE)
    assert proc.stdout == "caught Interrupted\n" and proc.stderr == "", proc.stderr


# ---- the sweep and its worker processes -----------------------------------------------------

def _sweep(tmp_path):
    np.save(tmp_path / "eigs.npy", np.sort(np.random.default_rng(1).pareto(1.5, 20_000))[::-1])
    return ["sweep", "--spectrum", tmp_path / "eigs.npy", "--steps", "2", "3", "300", "400",
            "--samplers", "ddim", "ddpm", "--losses", "w2", "--jobs", "2",
            "--out", tmp_path / "sw"]


def _start_sweep(tmp_path):
    proc = start(_sweep(tmp_path), tmp_path)
    wait_for(lambda: len(children(proc.pid)) == 2 and
             len(list((tmp_path / "sw" / "cells").glob("S*.json"))) >= 1,
             proc, "two workers and a finished cell")
    return proc


@pytest.mark.parametrize("sig, whom", [(signal.SIGINT, "group"), (signal.SIGINT, "parent"),
                                       (signal.SIGTERM, "parent")])
def test_sweep_interrupted_stops_its_workers(tmp_path, sig, whom):
    proc = _start_sweep(tmp_path)
    workers = children(proc.pid)
    (os.killpg if whom == "group" else os.kill)(proc.pid, sig)
    code, err = finish(proc, tmp_path)
    assert code == 128 + sig, err
    assert_one_line(err, "specsched sweep: interrupted")
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and w in
                group_members(proc.pid)]
    assert no_temporaries(tmp_path / "sw")
    for cell in (tmp_path / "sw" / "cells").glob("S*.json"):
        json.loads(cell.read_text())  # finished cells are complete


def test_sweep_killed_with_sigkill_takes_its_workers_along(tmp_path):
    # SIGKILL runs no handler in the parent: the workers learn of its death from the kernel
    # (prctl PR_SET_PDEATHSIG) and end, removing their temporary files.
    proc = _start_sweep(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    code, _ = finish(proc, tmp_path)  # asserts that no worker survives
    assert code == -signal.SIGKILL
    assert no_temporaries(tmp_path / "sw")


def test_a_worker_killed_alone_ends_the_sweep_in_one_line(tmp_path):
    # as the out-of-memory killer does: SIGKILL to one worker; the pool breaks, the parent
    # stops the other worker and says what happened; the finished cells stay for a rerun
    proc = _start_sweep(tmp_path)
    os.kill(children(proc.pid)[0], signal.SIGKILL)
    code, err = finish(proc, tmp_path)
    assert code == 4
    assert_one_line(err, "specsched sweep: error: a worker process ended abruptly",
                    "run the same sweep again to resume")
    assert no_temporaries(tmp_path / "sw")


def test_a_second_interruption_while_the_first_ends_the_command(monkeypatch, capsys):
    # The first Ctrl-C interrupts the work; a second one (or a redelivered first) lands
    # while the command prints its last line: still exit 130, one line, no traceback.
    import specsched.cli as cli

    def work(args):
        raise KeyboardInterrupt

    calls = []
    real_say = cli.say

    def say_interrupted_once(line):
        calls.append(line)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_say(line)

    monkeypatch.setattr(cli, "_run", work)
    monkeypatch.setattr(cli, "say", say_interrupted_once)
    assert cli.main(["evaluate", "--spectrum", "cifar10", "--schedule", "linear",
                     "--steps", "3"]) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted (SIGINT)") == 1 and "Traceback" not in err


def test_redelivery_is_cancelled_once_the_command_ends(monkeypatch):
    # an interruption swallowed in a callback is sent again a moment later, unless the
    # command is already ending on an interruption (then it would land in its clean-up)
    from types import SimpleNamespace

    from specsched.cli import signals

    monkeypatch.setattr(signals, "REDELIVERY_DELAY", 0.3)
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        hook = signals.redeliver_lost_signals(lambda unraisable: None)
        hook(SimpleNamespace(exc_value=KeyboardInterrupt()))
        signals.cancel_redelivery()
        time.sleep(0.6)
        assert received == []
        hook(SimpleNamespace(exc_value=KeyboardInterrupt()))  # not cancelled: delivered
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
