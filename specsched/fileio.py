"""Atomic, non-clobbering output files.

Every file specsched writes goes through :func:`atomic_write`: the content is written to a
temporary file ``.NAME.XXXXXXXX.tmp`` in the destination folder and renamed over the
destination only once it is complete, so an interruption never leaves a truncated file
behind, and an existing file is never replaced unless the caller passes ``force=True``.

The rules (docs/reliability.md, "Outputs"):

- only regular files are written or replaced: an existing folder, symbolic link (even one
  pointing at a regular file, even a dangling one), device, named pipe or socket at the
  destination is refused, with or without ``force`` (as root, replacing ``/dev/null`` by a
  regular file would break the system);
- new files get the permissions ``0o666`` less the process umask, as ``open()`` gives;
- a full disk, a quota or file-size limit or an I/O error while writing raises
  :class:`~specsched.errors.OutputError` naming the file and the cause; the temporary file is
  removed and the destination left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from specsched.errors import InputError, OutputError, OutputExistsError, SpecschedError

#: errno values that mean the storage, not the path, failed: disk full, quota, file-size limit
#: (RLIMIT_FSIZE), I/O error.
STORAGE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO") if hasattr(errno, name)
)
#: What to do about each storage failure.
_ADVICE = {getattr(errno, "EFBIG", None): "its size is above the file-size limit (ulimit -f)",
           errno.EIO: "the storage reported an I/O error"}


def storage_advice(err: int | None) -> str:
    """What to do when writing failed with ``errno`` ``err`` (one of :data:`STORAGE_ERRNOS`)."""
    return _ADVICE.get(err, "free some space or choose another output path")


#: Longest destination name (bytes) kept in a temporary file's name: NAME_MAX is 255 on
#: common file systems and the temporary name adds 14 characters.
_TEMP_NAME_BYTES = 200
#: Temporary files of :func:`atomic_write` (and of :func:`tempfile.mkstemp`, used before).
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "special file"


def _cannot_write_there(path: Path, exc: OSError) -> SpecschedError:
    """The error for a destination that cannot be created (path problem or full disk)."""
    reason = exc.strerror or str(exc)
    if exc.errno in STORAGE_ERRNOS:
        return OutputError(f"{path}: cannot create the output file ({reason}); nothing was "
                           f"written: {storage_advice(exc.errno)}")
    return InputError(f"{path}: cannot write the output file there ({reason}); "
                      "choose another output path")



def _nearest_folder(path: Path) -> Path:
    """``path`` if it is a folder, else its nearest existing ancestor."""
    folder = path
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_can_create_in(path: Path, folder: Path) -> None:
    """InputError unless files can be created in ``folder`` (read-only file system, no
    permission), before any work is done for ``path``. Root may write anywhere a read-only
    mount does not forbid; :func:`os.access` answers for the effective user."""
    kw = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if os.access(folder, os.W_OK | os.X_OK, **kw):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable by this user"
    raise InputError(f"{path}: cannot write there: {folder} {why}; choose another output path")


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` after checking it may be written.

    Parameters
    ----------
    path : path-like
        The destination file.
    force : bool
        Allow replacing an existing regular file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        If ``path`` exists and is not a regular file (a folder, a symbolic link, a device, a
        named pipe, a socket; even with ``force``), cannot be looked up (a file stands
        where a folder of the path should be, a name too long, no permission), or its
        folder (or nearest existing ancestor) is read-only or not writable.
    OutputExistsError
        If ``path`` is an existing regular file and ``force`` is false.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        _check_can_create_in(path, _nearest_folder(path.parent))
        return path
    except OSError as exc:  # ENOTDIR, ENAMETOOLONG, ELOOP, EACCES
        raise _cannot_write_there(path, exc) from None
    kind = _kind(st.st_mode)
    if kind == "folder":
        raise InputError(f"{path}: is a folder; expected the path of an output file")
    if kind is not None:
        raise InputError(
            f"{path}: is a {kind}; specsched writes only regular files and never replaces "
            "anything else, even with --force (force=True): choose another output path"
        )
    if not force:
        raise OutputExistsError(
            f"{path}: output file exists already; pass --force (force=True) to overwrite it"
        )
    _check_can_create_in(path, path.parent)  # the new content goes to a temporary file there
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking it is a folder or does not exist yet.

    Raises
    ------
    InputError
        If ``path`` exists and is not a folder (a symbolic link to a folder is a folder),
        cannot be looked up (name too long, a file in the way, no permission), or files
        cannot be created in it (or in its nearest existing ancestor): read-only, no
        permission.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _check_can_create_in(path, _nearest_folder(path.parent))
        return path
    except OSError as exc:
        raise InputError(f"{path}: cannot use this output folder ({exc.strerror or exc}); "
                         "choose another one") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: exists and is not a folder; expected an output folder")
    _check_can_create_in(path, path)
    return path


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create ``.NAME.XXXXXXXX.tmp`` beside ``path`` (mode 0o666 less the umask); fd, path."""
    name = path.name
    while len(os.fsencode(name)) > _TEMP_NAME_BYTES:
        name = name[:-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, force: bool = False, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path`` and rename it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        Destination file. Its parent folder is created if needed.
    force : bool
        Overwrite an existing regular file; when false an existing file raises.
    mode : {"w", "wb"}
        Text or binary mode of the yielded file object.

    Yields
    ------
    file object
        Write the whole content to it; on an exception (or a signal turned into one) the
        temporary file is removed and ``path`` is left untouched.

    Raises
    ------
    InputError
        If ``path`` is not a regular file (see :func:`check_writable`), or its folder cannot
        be created or written to (read-only file system, permission, a file in the way).
    OutputExistsError
        If ``path`` exists and ``force`` is false (checked before and after writing).
    OutputError
        If writing fails for lack of space, a quota or file-size limit, or an I/O error.
    """
    path = check_writable(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
    except OSError as exc:
        raise _cannot_write_there(path, exc) from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        check_writable(path, force)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            raise OutputError(
                f"{path}: cannot write the output file ({exc.strerror or exc}); it was not "
                f"written (an existing one is unchanged): {storage_advice(exc.errno)}"
            ) from None
        raise


def temporary_files(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Temporary files that :func:`atomic_write` left in ``folder`` (a process killed mid-write).

    Parameters
    ----------
    folder : path-like
    pattern : str
        :mod:`fnmatch` pattern of the destination names, e.g. ``"S*.json"``: only
        temporaries of such destinations are listed, never other hidden files.

    Returns
    -------
    list of pathlib.Path
        Regular files named ``.NAME.XXXXXXXX.tmp`` with NAME matching ``pattern``.
    """
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            m = _TEMP_RE.match(entry.name)
            if m and fnmatch.fnmatchcase(m["name"], pattern) and \
                    entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found)


def atomic_torch_save(obj, path: str | os.PathLike, force: bool = False) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write` (never a truncated file).

    Parameters
    ----------
    obj : object
        What :func:`torch.save` accepts (a plain dict of tensors and numbers, typically).
    path : path-like
        Destination file; its folder is created if needed.
    force : bool
        Replace an existing ``path`` (a checkpoint rewritten by the run that owns it).

    Raises
    ------
    InputError, OutputExistsError
        As :func:`atomic_write`.
    ModuleNotFoundError
        Without torch (the callers check for it first, with the install hint).
    """
    import torch  # optional heavy dependency (extra 'unet')

    with atomic_write(path, force=force, mode="wb") as fh:
        torch.save(obj, fh)
