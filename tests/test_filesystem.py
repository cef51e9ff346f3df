"""The file system as it fails: a full disk, a file-size limit, read-only folders, unwritable
cache folders, links and special files in the way, the umask, long and odd names.

How each fault is produced, honestly (the tests run as root here, and root ignores
permission bits, so ``chmod`` proves nothing for root):

- a full disk: a 32 KiB tmpfs mounted in a private mount namespace (``unshare -m``; root
  only, skipped otherwise), so the kernel itself answers ENOSPC;
- a file-size limit: RLIMIT_FSIZE in the child process (any user): the kernel answers EFBIG;
- read-only folders: a read-only bind mount in a private namespace for root (EROFS), mode
  0o555 for other users (EACCES);
- special files: a named pipe, a UNIX socket and (root) a character device made in tmp_path;
- errno values that cannot be produced here (EDQUOT, EIO) are raised inside
  :func:`specsched.fileio.atomic_write` by the test itself: that exercises the translation,
  not the kernel.
"""

import errno
import json
import os
import resource
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specsched.cli import main
from specsched.errors import OutputError
from specsched.fileio import atomic_write
from specsched.schedules import Schedule

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
GOOD = {"format": "specsched.schedule", "version": 1, "alphas_cumprod": [0.9, 0.5, 0.1]}


def _namespaces_work() -> bool:
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


NAMESPACES = _namespaces_work()
needs_namespaces = pytest.mark.skipif(not NAMESPACES,
                                      reason="needs root and mount namespaces (unshare -m)")


def cli(argv, *, setup="", after="", env=None, preexec_fn=None, cwd="/"):
    """Run ``specsched ARGV`` in a child; ``setup`` (shell, e.g. a mount) runs first in a
    private mount namespace and ``after`` (shell) inside it once the command ended. (The
    child runs in ``cwd``, by default /: ``python -m`` puts its working folder first on
    sys.path, which must not be a checkout of specsched.)"""
    env = {k: v for k, v in {**os.environ, "MPLBACKEND": "Agg", **(env or {})}.items()
           if v is not None}  # None: unset
    command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "specsched.cli",
                                                      *argv])
    if setup or after:
        script = f"{setup} && {{ {command}; echo \"rc=$?\"; {after or ':'}; }}"
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                              text=True, env=env, cwd=cwd)
        lines = proc.stdout.splitlines()
        rc = next(int(x[3:]) for x in lines if x.startswith("rc="))
        return rc, proc.stdout, proc.stderr
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True, env=env,
                          preexec_fn=preexec_fn, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def one_line(err, *needles):
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def in_process(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, *capsys.readouterr()


#: Checks run inside the namespace after the command: files left, and whether each loads.
LIST_OUTPUTS = (
    "python -c \"import json, sys, pathlib; from specsched.schedules import Schedule; "
    "o = pathlib.Path(sys.argv[1]); "
    "print('FILES', json.dumps(sorted(p.name for p in o.iterdir()) if o.exists() else [])); "
    "[Schedule.load(p) for p in o.glob('*.json')]; print('LOADED')\" "
)


# ---- a full disk, a file-size limit -----------------------------------------------------

@needs_namespaces
def test_full_disk_ends_in_one_line_and_keeps_complete_files(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    code, out, err = cli(["optimize", "--spectrum", "cifar10", "--steps", "50", "--out",
                          disk / "o"],
                         setup=f"mount -t tmpfs -o size=32k tmpfs {shlex.quote(str(disk))}",
                         after=LIST_OUTPUTS + shlex.quote(str(disk / "o")),
                         env={"PYTHONPATH": str(ROOT)})
    assert code == 4, err
    one_line(err, "cannot write the output file (No space left on device)",
             "free some space")
    files = json.loads(next(x for x in out.splitlines() if x.startswith("FILES"))[6:])
    assert not [f for f in files if f.endswith(".tmp")]
    assert "schedules.png" not in files  # the file that did not fit is not there, half-written
    assert "LOADED" in out  # and every file that is there is complete


@needs_namespaces
def test_full_disk_under_sweep_workers_ends_in_one_line(tmp_path):
    # a worker's OutputError reaches the parent, which stops the other worker and reports it
    disk = tmp_path / "disk"
    disk.mkdir()
    q = shlex.quote(str(disk))
    code, out, err = cli(["sweep", "--spectrum", "cifar10", "--steps", "3", "60", "--samplers",
                          "ddim", "ddpm", "--losses", "w2", "--jobs", "2", "--out", disk / "sw"],
                         setup=f"mount -t tmpfs -o size=48k tmpfs {q}",
                         after=f"echo TMP; find {q} -name '*.tmp'",
                         env={"PYTHONPATH": str(ROOT)})
    assert code == 4, err
    one_line(err, "specsched sweep: error:", "No space left on device")
    assert out.split("TMP", 1)[1].strip() == ""  # no temporary file anywhere


def test_file_size_limit_ends_in_one_line(tmp_path):
    def limit():  # 20 kB: the schedule file and the table fit, the figure does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    code, _, err = cli(["optimize", "--spectrum", "cifar10", "--steps", "50", "--out",
                        tmp_path / "o"], preexec_fn=limit)
    assert code == 4, err
    one_line(err, "schedules.png: cannot write the output file (File too large)",
             "file-size limit (ulimit -f)")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "schedule_ddim_w2_S50.json", "summary.csv"]
    Schedule.load(tmp_path / "o" / "schedule_ddim_w2_S50.json")


@pytest.mark.parametrize("err_no", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG])
def test_atomic_write_reports_storage_failures(tmp_path, err_no):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(OutputError, match=f"out.txt: cannot write the output file "
                                          f"\\({os.strerror(err_no)}\\)"):
        with atomic_write(target, force=True) as fh:
            fh.write("new")
            raise OSError(err_no, os.strerror(err_no))
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_atomic_write_passes_other_errors_on(tmp_path):
    with pytest.raises(FileNotFoundError):  # not a storage failure: not disguised as one
        with atomic_write(tmp_path / "out.txt") as fh:
            fh.write("x")
            open(tmp_path / "missing-input")
    assert list(tmp_path.iterdir()) == []


# ---- read-only folders ------------------------------------------------------------------

def _read_only(folder: Path) -> str:
    """Shell setup making ``folder`` read-only (root: bind mount), or chmod for others."""
    if IS_ROOT:
        q = shlex.quote(str(folder))
        return f"mount --bind {q} {q} && mount -o remount,bind,ro {q}"
    folder.chmod(0o555)
    return ""


@pytest.mark.skipif(IS_ROOT and not NAMESPACES, reason="root needs mount namespaces here")
@pytest.mark.parametrize("command", ["spectrum", "optimize", "sweep", "export", "analyze"])
def test_read_only_folder_is_refused_before_any_work(tmp_path, command):
    ro = tmp_path / "ro"
    (ro / "sub").mkdir(parents=True)
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    argv = {"spectrum": ["spectrum", "digits", "--out", ro / "s.npz"],
            "optimize": ["optimize", "--spectrum", "cifar10", "--out", ro / "sub" / "o"],
            "sweep": ["sweep", "--spectrum", "cifar10", "--steps", "3", "--out", ro / "sw"],
            "export": ["export", tmp_path / "s.json", "--to", "ab", "--out", ro / "ab.npy"],
            "analyze": ["analyze", "cifar10", "--out", ro / "a"]}[command]
    setup = _read_only(ro)
    code, out, err = cli(argv, setup=setup, after=f"ls -A {shlex.quote(str(ro))}",
                         env={"PYTHONPATH": str(ROOT)}) if setup else cli(argv)
    assert code == 2, err
    one_line(err, "cannot write there",
             "read-only file system" if IS_ROOT else "not writable by this user")
    assert out.strip().splitlines()[-1] in ("sub", "rc=2")  # nothing was created in it


# ---- cache folders numba and matplotlib cannot write ------------------------------------

def _read_only_install(tmp_path):
    """A copy of the package and a HOME, both made read-only; the setup for cli()."""
    install, home = tmp_path / "install", tmp_path / "home"
    shutil.copytree(ROOT / "specsched", install / "specsched",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    if IS_ROOT:
        return " && ".join(_read_only(p) for p in (install, home))
    for p in [install, *install.rglob("*"), home]:
        if p.is_dir():
            p.chmod(0o555)
    return ""


@pytest.mark.skipif(IS_ROOT and not NAMESPACES, reason="root needs mount namespaces here")
def test_read_only_install_and_home_cache_in_a_private_folder(tmp_path):
    setup = _read_only_install(tmp_path)
    (tmp_path / "tmp").mkdir()
    env = {"PYTHONPATH": str(tmp_path / "install"), "HOME": str(tmp_path / "home"),
           "TMPDIR": str(tmp_path / "tmp"), "PYTHONDONTWRITEBYTECODE": "1",
           "NUMBA_CACHE_DIR": None, "MPLCONFIGDIR": None, "XDG_CONFIG_HOME": None,
           "XDG_CACHE_HOME": None}
    # S x d = 100 x 3072: the compiled kernels run (and are cached); the figure needs
    # matplotlib's config and cache folders
    argv = ["optimize", "--spectrum", "cifar10", "--steps", "100", "--out", tmp_path / "o"]
    code, _, err = cli(argv, setup=setup or "true", env=env)
    assert code == 0 and err == "", err  # no RuntimeError from numba, no matplotlib warnings
    uid = os.geteuid()
    numba_cache = tmp_path / "tmp" / f"specsched-numba-{uid}"
    assert any(numba_cache.rglob("*.nbi")), "the kernels were cached in the private folder"
    assert stat.S_IMODE(numba_cache.stat().st_mode) == 0o700
    assert (tmp_path / "tmp" / f"specsched-matplotlib-{uid}").is_dir()


PROBE_CACHE = """
import sys, warnings
from specsched.caches import numba_cache_enabled
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    enabled = numba_cache_enabled(sys.argv[1])
print("ENABLED", enabled)
for w in caught:
    print("WARNING", w.category.__name__, w.message)
"""


@pytest.mark.skipif(IS_ROOT and not NAMESPACES, reason="root needs mount namespaces here")
def test_no_safe_cache_folder_turns_caching_off_with_one_warning(tmp_path):
    # Someone planted a link where the private folder goes: it is not used (numba's cache
    # files are pickles); caching is off, with one warning saying how to turn it on.
    setup = _read_only_install(tmp_path)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "tmp" / f"specsched-numba-{os.geteuid()}").symlink_to(tmp_path / "elsewhere")
    kernels = tmp_path / "install" / "specsched" / "theory" / "kernels.py"
    env = {"PYTHONPATH": str(tmp_path / "install"), "HOME": str(tmp_path / "home"),
           "TMPDIR": str(tmp_path / "tmp"), "PYTHONDONTWRITEBYTECODE": "1",
           "NUMBA_CACHE_DIR": None, "XDG_CACHE_HOME": None}
    script = " ".join(shlex.quote(a) for a in [sys.executable, "-c", PROBE_CACHE, str(kernels)])
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f"{setup} && {script}"] if setup
                          else [sys.executable, "-c", PROBE_CACHE, str(kernels)],
                          capture_output=True, text=True, cwd="/",
                          env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ENABLED False" and len(lines) == 2, proc.stdout
    assert lines[1].startswith("WARNING RuntimeWarning numba cannot cache the compiled kernels")
    assert "NUMBA_CACHE_DIR" in lines[1]
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ---- links and special files are never replaced -----------------------------------------

def _special(kind, path, tmp_path):
    if kind == "link to a file":
        (tmp_path / "target").write_text("keep me")
        path.symlink_to(tmp_path / "target")
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "link to a folder":
        (tmp_path / "dir").mkdir()
        path.symlink_to(tmp_path / "dir")
    elif kind == "named pipe":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "character device":
        if not IS_ROOT:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    return stat.S_IFMT(os.lstat(path).st_mode)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("kind, word", [
    ("link to a file", "symbolic link"), ("dangling link", "symbolic link"),
    ("link to a folder", "symbolic link"), ("named pipe", "named pipe (FIFO)"),
    ("socket", "socket"), ("character device", "character device")])
def test_force_never_replaces_a_link_or_a_special_file(tmp_path, capsys, kind, word, force):
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    out = tmp_path / "out.npy"
    fmt = _special(kind, out, tmp_path)
    code, _, err = in_process(["export", tmp_path / "s.json", "--to", "ab", "--out", out,
                               *(["--force"] if force else [])], capsys)
    assert code == 2
    one_line(err, f"out.npy: is a {word}; specsched writes only regular files")
    assert stat.S_IFMT(os.lstat(out).st_mode) == fmt  # still what it was
    if kind == "link to a file":
        assert (tmp_path / "target").read_text() == "keep me"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_link_among_the_outputs_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "summary.csv").symlink_to(tmp_path / "elsewhere.csv")
    code, out, err = in_process(["optimize", "--spectrum", "cifar10", "--steps", "3",
                                 "--out", tmp_path / "o", "--force"], capsys)
    assert code == 2 and out == ""  # refused before the spectrum was even loaded
    one_line(err, "summary.csv: is a symbolic link")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["summary.csv"]


# ---- permissions follow the umask -------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "new.txt") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == mode


def test_command_outputs_follow_the_umask(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    code, _, err = cli(["export", tmp_path / "s.json", "--to", "ab", "--out",
                        tmp_path / "ab.npy"], preexec_fn=lambda: os.umask(0o027))
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "ab.npy").stat().st_mode) == 0o640


# ---- long and odd names -----------------------------------------------------------------

def test_long_names(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    longest = "a" * 251 + ".npy"  # 255 bytes: the temporary file's name is shortened
    code, _, err = in_process(["export", tmp_path / "s.json", "--to", "ab", "--out",
                               tmp_path / longest], capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / longest), GOOD["alphas_cumprod"])
    code, _, err = in_process(["export", tmp_path / "s.json", "--to", "ab", "--out",
                               tmp_path / ("b" * 300 + ".npy")], capsys)
    assert code == 2
    one_line(err, "cannot write the output file there (File name too long)")
    code, _, err = in_process(["optimize", "--spectrum", "cifar10", "--out",
                               tmp_path / ("c" * 300) / "o"], capsys)
    assert code == 2
    one_line(err, "cannot use this output folder (File name too long)")


def test_odd_names_stay_one_line_and_print_as_given(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    (tmp_path / "new\nline").write_text("a file where a folder should be")
    code, _, err = in_process(["export", tmp_path / "s.json", "--to", "ab", "--out",
                               tmp_path / "new\nline" / "ab.npy"], capsys)
    assert code == 2
    one_line(err, "new\\nline/ab.npy: cannot write the output file there")
    # a name that is not UTF-8: written under that name, and printed back byte for byte
    name = os.fsdecode(b"caf\xe9.npy")
    proc = subprocess.run([sys.executable, "-m", "specsched.cli", "export",
                           str(tmp_path / "s.json"), "--to", "ab", "--out", name],
                          capture_output=True, cwd=tmp_path,
                          env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert b"caf\xe9.npy" in proc.stdout and os.path.exists(os.fsencode(tmp_path) + b"/caf\xe9.npy")
