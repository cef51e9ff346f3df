"""Memory an estimate will need, checked against what the machine has, before any data is read.

Sizes (bytes; ``d`` values per sample, ``c`` samples per chunk, ``b`` bytes per value of a
chunk as read, ``l = min(rank + oversampling, d)``, ``C`` channels):

============================  ==================================  ==========================
method                        state                               one chunk
============================  ==================================  ==========================
``full``                      ``5 x 8 d^2`` (accumulated moments,  ``c d (b + 8)`` (as read,
                              the covariance that eigh overwrites  then centred in float64)
                              with the eigenvectors, its workspace
                              of two, the copy in the Spectrum)
``pca``, dense (d <= 4096)    ``3 x 8 d^2``                        ``c d (b + 8)``
``pca``, randomized           ``4 x 8 d l`` + ``8 x 8 d``          ``c d (b + 16) + 8 c l``
``fourier``                   ``3 x 16 (d / C) C^2``               ``c d (b + 56)`` (complex
                                                                   FFT, centred, conjugate)
============================  ==================================  ==========================

The check refuses a plan above :data:`MEMORY_MARGIN` of the memory available now:
``MemAvailable`` of ``/proc/meminfo`` (``os.sysconf`` where there is no ``/proc``), capped by
the cgroup (container) limit ``memory.max - memory.current`` when there is one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from specsched.errors import InputError

__all__ = ["MEMORY_MARGIN", "MemoryPlan", "available_memory", "check_memory",
           "format_bytes", "plan_memory"]

#: Fraction of the available memory an estimate may plan to use (the rest is left to the
#: interpreter, the libraries and the other processes).
MEMORY_MARGIN = 0.8
_CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((_CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or None when it cannot be told.

    Returns
    -------
    int or None
        ``min(MemAvailable, cgroup memory.max - memory.current)``, the cgroup term only
        where a limit is set.
    """
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(values) if values else None


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal and binary units, e.g. ``"79.2 TB (72.0 TiB)"``."""
    def unit(value, base, names):
        for name in names[:-1]:
            if value < base:
                return f"{value:.3g} {name}" if name != "bytes" else f"{value:.0f} bytes"
            value /= base
        return f"{value:.3g} {names[-1]}"

    dec = unit(float(n), 1000.0, ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"])
    if n < 1000:
        return dec
    return f"{dec} ({unit(float(n), 1024.0, ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'])})"


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes an estimate needs (module docstring).

    Attributes
    ----------
    method : str
        ``"full"``, ``"pca-dense"``, ``"pca-randomized"`` or ``"fourier"``.
    d : int
        Values per sample.
    state : int
        Bytes of the estimator's state and of its decomposition.
    per_sample : int
        Bytes one sample of a chunk takes while it is accumulated.
    chunk_size : int
        Samples per chunk.
    """

    method: str
    d: int
    state: int
    per_sample: int
    chunk_size: int

    @property
    def chunk(self) -> int:
        """Bytes of one chunk in flight."""
        return self.per_sample * self.chunk_size

    @property
    def total(self) -> int:
        """``state + chunk``."""
        return self.state + self.chunk


def plan_memory(method: str, d: int, chunk_size: int, itemsize: int = 8, *,
                rank: int | None = None, n_oversamples: int = 10,
                channels: int = 1) -> MemoryPlan:
    """The memory of an estimate (module docstring).

    Parameters
    ----------
    method : {"full", "pca-dense", "pca-randomized", "fourier"}
    d : int
        Values per sample.
    chunk_size : int
        Samples per chunk.
    itemsize : int
        Bytes per value of a chunk as read (:attr:`specsched.data.sources.DataSource.itemsize`).
    rank, n_oversamples : int
        PCA's eigenpairs and oversampling (randomized solver).
    channels : int
        ``C`` of the Fourier model (last axis of an ``(H, W, C)`` sample, else 1).

    Returns
    -------
    MemoryPlan
    """
    if method == "full":
        return MemoryPlan(method, d, 5 * 8 * d * d, d * (itemsize + 8), chunk_size)
    if method == "pca-dense":
        return MemoryPlan(method, d, 3 * 8 * d * d, d * (itemsize + 8), chunk_size)
    if method == "pca-randomized":
        ell = min((rank or 1) + n_oversamples, d)
        return MemoryPlan(method, d, 4 * 8 * d * ell + 8 * 8 * d,
                          d * (itemsize + 16) + 8 * ell, chunk_size)
    if method == "fourier":
        return MemoryPlan(method, d, 3 * 16 * d * channels, d * (itemsize + 56), chunk_size)
    raise InputError(f"method: expected full, pca-dense, pca-randomized or fourier, got "
                     f"{method!r}")


#: The ways out of :func:`check_memory` that change the estimator, ``(options, why)``: options
#: of ``specsched spectrum`` only (``--method full|pca|fourier``, ``--rank``); the commands that
#: estimate a spectrum by the way point to it instead (:mod:`specsched.cli.common`).
ESTIMATOR_WAYS = {
    "pca": ("--method pca --rank K",
            "the top K eigenpairs exactly, memory about 32 d (K + 10) bytes"),
    "fourier": ("--method fourier", "the shift-invariant model, memory O(d)"),
}


def check_memory(plan: MemoryPlan, name: str, *, images: bool = False,
                 available: int | None = None) -> None:
    """Refuse a plan that does not fit, with the numbers and the ways out.

    Parameters
    ----------
    plan : MemoryPlan
    name : str
        The source, quoted first in the message.
    images : bool
        The source is an image folder (``--size`` and ``--grayscale`` are ways out).
    available : int, optional
        Bytes available; default :func:`available_memory` (nothing is checked when that is
        unknown).

    Raises
    ------
    InputError
        When ``plan.total > MEMORY_MARGIN x available``.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    budget = MEMORY_MARGIN * available
    if plan.total <= budget:
        return
    d = plan.d
    have = (f"this machine has {format_bytes(available)} available (an estimate may use "
            f"{MEMORY_MARGIN:.0%} of it)")
    if plan.state > budget:
        what = {
            "full": f"--method full needs a {d:,} x {d:,} float64 covariance, "
                    f"{format_bytes(8 * d * d)}, and about {format_bytes(plan.total)} in all "
                    "with its eigen-decomposition",
            "pca-dense": f"--method pca (dense, d <= 4096) needs the {d:,} x {d:,} float64 "
                         f"covariance, about {format_bytes(plan.total)} in all",
            "pca-randomized": f"--method pca needs about {format_bytes(plan.total)} for its "
                              f"{d:,} x (rank + 10) subspace",
            "fourier": f"--method fourier needs about {format_bytes(plan.total)}",
        }[plan.method]
        ways = []
        if images:
            ways.append("--size HxW to make the images smaller (d = H x W x channels; "
                        "--grayscale keeps one channel)")
        if plan.method in ("full", "pca-dense"):
            ways.append("{} ({})".format(*ESTIMATOR_WAYS["pca"]))
        if plan.method != "fourier":
            ways.append("{} ({})".format(*ESTIMATOR_WAYS["fourier"]))
        way = "use " + ", or ".join(ways) if ways else ""
    else:  # the state fits: the chunk is the problem
        what = (f"one chunk of {plan.chunk_size:,} samples takes {format_bytes(plan.chunk)} "
                f"besides the {format_bytes(plan.state)} of the estimate")
        fits = int((budget - plan.state) // plan.per_sample)
        way = f"pass --chunk-size {fits} or less" if fits >= 1 else ""
    raise InputError(f"{name}: d = {d:,} values per sample: {what}, but {have}"
                     + (f"; {way}" if way else ""))
