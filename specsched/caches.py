"""Cache folders that can be written: numba's compiled kernels, matplotlib's configuration.

Both libraries keep files in the user's home (``~/.cache/numba``, ``~/.config/matplotlib``)
or, for numba, beside the package; a read-only install, a read-only or missing HOME (many
containers and batch jobs) must not end a command in a traceback or a page of warnings.

numba caches a function compiled with ``cache=True`` in ``__pycache__`` beside its source, or
else in the user's cache folder (``~/.cache/numba``); when neither can be written (a
read-only install, a read-only or missing HOME, as in many containers and batch jobs) the
decorator raises ``RuntimeError: cannot cache function ...: no locator available`` when the
module is imported. :func:`numba_cache_enabled` checks first, with numba's own locators, and
falls back to

1. the folder named by ``NUMBA_CACHE_DIR`` if the user set one (numba's own rule);
2. else a private folder of this user in the temporary directory
   (``$TMPDIR/specsched-numba-<uid>``, :func:`private_temp_folder`: numba's cache files are
   pickles, so no one else may write there);
3. else no caching: the kernels compile in every run (a few seconds), with one warning
   saying how to keep them (``NUMBA_CACHE_DIR``).

matplotlib, when its configuration or cache folder cannot be written, makes a temporary one
itself and logs two warnings per run; :func:`matplotlib_config_ready` (called by the command
line before any plot) points ``MPLCONFIGDIR`` at a private temporary folder instead.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path


def _stand_in(source_file: str):
    """A Python function that numba's locators take for one defined in ``source_file``."""
    namespace = {"__name__": "specsched.numba_cache_probe"}
    exec(compile("def probe():\n    pass\n", source_file, "exec"), namespace)
    return namespace["probe"]


def _can_cache(py_func) -> bool:
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(py_func)  # locates (and creates) the cache folder; writes nothing else
    except RuntimeError:  # "no locator available": no folder numba can write
        return False
    return True


def private_temp_folder(kind: str) -> Path | None:
    """``$TMPDIR/specsched-<kind>-<uid>``, created with mode 0700; None if it is not safe.

    Safe: a real folder (not a link), owned by this user, writable by no one else (another
    user could otherwise plant files in it, e.g. a numba cache entry, which is a pickle).
    """
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    folder = Path(tempfile.gettempdir()) / f"specsched-{kind}-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022 or (
            uid is not None and st.st_uid != uid):
        return None
    return folder


def numba_cache_enabled(source_file: str) -> bool:
    """Whether the kernels of ``source_file`` can be cached; picks a cache folder if needed.

    Call before decorating with ``numba.njit(cache=...)``; pass the result as ``cache``.

    Parameters
    ----------
    source_file : str
        The module defining the kernels (``__file__``).

    Returns
    -------
    bool
        True when numba can write a cache for them: in its usual places, or in the folder
        this function chose (then ``numba.config.CACHE_DIR`` and ``NUMBA_CACHE_DIR`` name it,
        so that worker processes use it too). False (caching off) with a
        :class:`RuntimeWarning` when no folder can be written.
    """
    import numba

    probe = _stand_in(source_file)
    if _can_cache(probe):
        return True
    if not numba.config.CACHE_DIR:  # the user chose no folder: try a private one
        folder = private_temp_folder("numba")
        if folder is not None:
            numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"] = str(folder)
            if _can_cache(probe):
                return True
            numba.config.CACHE_DIR = ""
            del os.environ["NUMBA_CACHE_DIR"]
    warnings.warn(
        f"numba cannot cache the compiled kernels: neither {Path(source_file).parent} nor "
        "the user's cache folder nor "
        f"{numba.config.CACHE_DIR or 'a private folder in ' + tempfile.gettempdir()} can be "
        "written; they are compiled in every run (a few seconds). Set NUMBA_CACHE_DIR to a "
        "writable folder to keep them", RuntimeWarning, stacklevel=2)
    return False


def _writable_folder(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK)


def matplotlib_config_ready() -> None:
    """Set ``MPLCONFIGDIR`` to a private temporary folder if matplotlib's own folders (its
    configuration and cache folders, as :func:`matplotlib.get_configdir` finds them) cannot
    be written. Does nothing when ``MPLCONFIGDIR`` is set or matplotlib is imported already.
    """
    if os.environ.get("MPLCONFIGDIR") or "matplotlib" in sys.modules:
        return
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            folders = {Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"),
                       Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")}
            folders = {f / "matplotlib" for f in folders}
        else:
            folders = {Path.home() / ".matplotlib"}
        usable = all(_writable_folder(f) for f in folders)
    except RuntimeError:  # no home folder at all
        usable = False
    if not usable:
        folder = private_temp_folder("matplotlib")
        if folder is not None:
            os.environ["MPLCONFIGDIR"] = str(folder)
