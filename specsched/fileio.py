"""Atomic, non-clobbering output files.

Every file specsched writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination folder and renamed over the destination only once it is
complete, so an interruption never leaves a truncated file behind, and an existing file is
never replaced unless the caller passes ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from specsched.errors import InputError, OutputExistsError


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` after checking it may be written.

    Raises
    ------
    InputError
        If ``path`` is a folder (it cannot be replaced by a file, even with ``force``).
    OutputExistsError
        If ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected the path of an output file")
    if path.exists() and not force:
        raise OutputExistsError(
            f"{path}: output file exists already; pass --force (force=True) to overwrite it"
        )
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, force: bool = False, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path`` and rename it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        Destination file. Its parent folder is created if needed.
    force : bool
        Overwrite an existing ``path``; when false an existing file raises.
    mode : {"w", "wb"}
        Text or binary mode of the yielded file object.

    Yields
    ------
    file object
        Write the whole content to it; on an exception the temporary file is removed and
        ``path`` is left untouched.

    Raises
    ------
    InputError
        If ``path`` is a folder, or its folder cannot be created or written to.
    OutputExistsError
        If ``path`` exists and ``force`` is false (checked before and after writing).
    """
    path = check_writable(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # read-only, missing permission, a file in the way, ...
        raise InputError(
            f"{path}: cannot write the output file there ({exc.strerror or exc}); "
            "choose another output path"
        ) from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        check_writable(path, force)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
