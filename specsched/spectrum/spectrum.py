"""The :class:`Spectrum` record: the second-order statistics of a dataset in its eigenbasis.

Notation (docs/theory.md section 2)
-----------------------------------
Data ``x_0 ~ N(mu, Sigma)`` of dimension ``d``, ``Sigma = U diag(lam) U^T``:

- ``lam`` (``eigenvalues``), shape ``(d,)``: variances along the eigenvectors, ``lam_k >= 0``,
  sorted in DESCENDING order (``lam_0`` is the largest);
- ``U`` (``eigenvectors``), shape ``(d, d)``: column ``k`` is the unit eigenvector of ``lam_k``;
- ``m = U^T mu`` (``mean``), shape ``(d,)``: the data mean in the eigenbasis.

The eigenvalues alone are a sufficient statistic for the losses of a zero-mean Gaussian
model; ``mean`` and ``eigenvectors`` are kept when known (from samples) for the mean term and
for sampling in pixel space.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specsched.errors import InputError
from specsched.fileio import atomic_write

__all__ = ["Spectrum", "SPECTRUM_FORMAT", "SPECTRUM_VERSION"]

#: Value of the ``format`` key of a spectrum ``.npz`` file.
SPECTRUM_FORMAT = "specsched.spectrum"
#: Version of the spectrum ``.npz`` layout written by :meth:`Spectrum.save`.
SPECTRUM_VERSION = 1

_DEFAULT_NEGATIVE_TOL = 1e-6


def _real_float_vector(x, name: str) -> np.ndarray:
    """Check that ``x`` is a finite real 1-D array; return a float64 copy."""
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    arr = np.array(arr, dtype=np.float64)  # copy: never alias the caller's array
    n_bad = int(arr.size - np.isfinite(arr).sum())
    if n_bad:
        first = int(np.argmax(~np.isfinite(arr)))
        raise InputError(f"{name}: {n_bad} non-finite values (NaN or Inf), first at index {first}")
    return arr


def _clean_eigenvalues(eigenvalues, negative_tol: float, name: str) -> np.ndarray:
    """Validate eigenvalues and clip round-off negatives; order is left unchanged.

    Values with ``-negative_tol * max(lam) <= lam < 0`` are set to 0 with a warning giving
    their count; ``-0.0`` becomes ``+0.0`` silently (so :meth:`Spectrum.sha256` is stable).
    """
    lam = _real_float_vector(eigenvalues, name)
    if lam.size == 0:
        raise InputError(f"{name}: expected at least one eigenvalue, got an empty array")
    top = float(lam.max())
    negative = lam < 0
    if negative.any():
        tiny = negative & (lam >= -negative_tol * top) if top > 0 else np.zeros_like(negative)
        if not np.array_equal(tiny, negative):
            worst = float(lam.min())
            raise InputError(
                f"{name}: {int(negative.sum())} negative eigenvalues, down to {worst:.6g} "
                f"(largest {top:.6g}); variances must be >= 0 (values above "
                f"-{negative_tol:g} x largest are taken as round-off and set to 0)"
            )
        warnings.warn(
            f"{name}: {int(tiny.sum())} slightly negative eigenvalues (round-off, >= "
            f"-{negative_tol:g} x largest) set to 0",
            stacklevel=3,
        )
        lam[tiny] = 0.0
    if top <= 0:
        raise InputError(f"{name}: all {lam.size} eigenvalues are zero; the data has no variance")
    return lam + 0.0  # -0.0 -> +0.0


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigen-decomposition of a data covariance: the input of every later stage.

    Attributes
    ----------
    eigenvalues : ndarray of shape (d,), float64
        Variances of the data along its eigenvectors, ``>= 0``, stored DESCENDING (sorted on
        construction). Units: squared data units (e.g. pixel values in ``[-1, 1]``).
    mean : ndarray of shape (d,), float64, optional
        Data mean in the eigenbasis, ``m = U^T mu``, aligned with ``eigenvalues``; zeros when
        unknown (the default).
    eigenvectors : ndarray of shape (d, d), float64, optional
        Column ``k`` is the eigenvector of ``eigenvalues[k]``; ``None`` when unknown.
    n_samples : int, optional
        Number of samples the covariance was estimated from; ``None`` when unknown.
    source : str
        Where the data came from: a built-in name or a path.
    method : str
        How the spectrum was obtained: ``"full"`` (covariance + eigh), ``"pca"`` (top
        ``rank`` eigenpairs, the other ``d - rank`` eigenvalues all equal to the tail's mean
        variance), ``"fourier"`` (shift-invariant model: per-frequency power) or
        ``"eigenvalues"`` (given directly).
    sample_shape : tuple of int, optional
        Shape of one sample, with ``prod(sample_shape) == d``; ``None`` when unknown.
    rank : int, optional
        Number of exactly estimated eigenpairs for ``method="pca"``; ``None`` otherwise.

    Construction validates everything, once, at the boundary: ``eigenvalues`` must be 1-D,
    real, finite and not all zero; they are sorted descending (``mean`` and the columns of
    ``eigenvectors`` permuted alike, stable for ties); negatives within ``1e-6 x max`` are
    round-off, set to 0 with a warning (use :meth:`from_eigenvalues` to choose the
    tolerance). Arrays are copied to float64 and made read-only, so a Spectrum is immutable
    and can be shared. Equality is identity (``eq=False``: arrays have no single truth value).

    Raises
    ------
    InputError
        On an empty, non-1-D, complex, non-finite, negative (beyond round-off) or all-zero
        ``eigenvalues``; a ``mean`` or ``eigenvectors`` of the wrong shape or non-finite; a
        ``n_samples`` that is not a positive integer; a ``sample_shape`` whose product is
        not ``d``.
    """

    eigenvalues: np.ndarray
    mean: np.ndarray | None = None
    eigenvectors: np.ndarray | None = None
    n_samples: int | None = None
    source: str = "eigenvalues"
    method: str = "eigenvalues"
    sample_shape: tuple[int, ...] | None = None
    rank: int | None = None

    def __post_init__(self) -> None:
        lam = _clean_eigenvalues(self.eigenvalues, _DEFAULT_NEGATIVE_TOL, "eigenvalues")
        d = lam.size
        if self.mean is None:
            mean = np.zeros(d)
        else:
            mean = _real_float_vector(self.mean, "mean")
            if mean.shape != (d,):
                raise InputError(f"mean: expected shape ({d},) like eigenvalues, got {mean.shape}")
        vecs = None
        if self.eigenvectors is not None:
            vecs = np.asarray(self.eigenvectors)
            if not np.issubdtype(vecs.dtype, np.floating) and not np.issubdtype(
                vecs.dtype, np.integer
            ):
                raise InputError(f"eigenvectors: expected real numbers, got dtype {vecs.dtype}")
            if vecs.shape != (d, d):
                raise InputError(f"eigenvectors: expected shape ({d}, {d}), got {vecs.shape}")
            vecs = np.array(vecs, dtype=np.float64)
            if not np.isfinite(vecs).all():
                raise InputError("eigenvectors: non-finite values (NaN or Inf)")
        if np.any(np.diff(lam) > 0):  # not descending yet
            order = np.argsort(-lam, kind="stable")
            lam, mean = lam[order], mean[order]
            if vecs is not None:
                vecs = np.ascontiguousarray(vecs[:, order])
        n_samples = self.n_samples
        if n_samples is not None:
            if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
                raise InputError(
                    f"n_samples: expected a positive integer or None, got {n_samples!r}"
                )
            if n_samples < 1:
                raise InputError(f"n_samples: expected a positive integer or None, got {n_samples}")
            n_samples = int(n_samples)
        if not isinstance(self.source, str) or not isinstance(self.method, str):
            raise InputError(
                f"source, method: expected strings, got {self.source!r}, {self.method!r}"
            )
        shape = self.sample_shape
        if shape is not None:
            try:
                shape = tuple(int(s) for s in shape)
            except (TypeError, ValueError) as exc:
                raise InputError(f"sample_shape: expected a tuple of ints, got {shape!r}") from exc
            if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.int64)) != d:
                raise InputError(
                    f"sample_shape: {shape} does not hold d = {d} values (product must be d)"
                )
        rank = self.rank
        if rank is not None:
            if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not (
                1 <= rank <= d
            ):
                raise InputError(f"rank: expected an integer in [1, {d}] or None, got {rank!r}")
            rank = int(rank)
        set_ = object.__setattr__  # frozen dataclass: set the validated values once
        set_(self, "eigenvalues", _readonly(lam))
        set_(self, "mean", _readonly(mean))
        set_(self, "eigenvectors", None if vecs is None else _readonly(vecs))
        set_(self, "n_samples", n_samples)
        set_(self, "sample_shape", shape)
        set_(self, "rank", rank)

    @property
    def dimension(self) -> int:
        """Data dimension ``d`` (number of eigenvalues)."""
        return int(self.eigenvalues.size)

    def sha256(self) -> str:
        """Hex SHA-256 of the eigenvalues as little-endian float64 bytes.

        Returns
        -------
        str
            ``hashlib.sha256(eigenvalues.astype('<f8').tobytes()).hexdigest()``: identifies
            the spectrum in schedule files (descending order, ``-0.0`` normalised to ``+0.0``).
        """
        data = np.ascontiguousarray(self.eigenvalues, dtype="<f8").tobytes()
        return hashlib.sha256(data).hexdigest()

    def provenance(self) -> dict:
        """Where the spectrum came from, for the ``spectrum`` field of schedule files.

        Returns
        -------
        dict
            ``{"source": str, "method": str, "n_samples": int or None, "dimension": int,
            "sha256": str}``, JSON-serialisable, plus ``"rank": int`` for a PCA spectrum.
        """
        record = {
            "source": self.source,
            "method": self.method,
            "n_samples": self.n_samples,
            "dimension": self.dimension,
            "sha256": self.sha256(),
        }
        if self.rank is not None:
            record["rank"] = self.rank
        return record

    def save(self, path: str | os.PathLike, force: bool = False) -> None:
        """Write the spectrum to a ``.npz`` file, atomically.

        Parameters
        ----------
        path : path-like
            Destination, written as given (no suffix is added).
        force : bool
            Overwrite an existing file.

        Notes
        -----
        Keys: ``format`` (``"specsched.spectrum"``), ``version`` (1), ``eigenvalues`` (d,)
        float64 descending, ``mean`` (d,) float64, ``eigenvectors`` (d, d) float64 (only
        when known), ``n_samples`` (int64, ``-1`` when unknown), ``source``, ``method``
        (strings), ``sample_shape`` (int64 array, ``[-1]`` when unknown), ``rank`` (int64,
        only for PCA spectra). No pickles.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``force`` is false.
        """
        arrays = {
            "format": np.array(SPECTRUM_FORMAT),
            "version": np.array(SPECTRUM_VERSION, dtype=np.int64),
            "eigenvalues": self.eigenvalues,
            "mean": self.mean,
            "n_samples": np.array(-1 if self.n_samples is None else self.n_samples, np.int64),
            "source": np.array(self.source),
            "method": np.array(self.method),
            "sample_shape": np.array(
                [-1] if self.sample_shape is None else self.sample_shape, dtype=np.int64
            ),
        }
        if self.eigenvectors is not None:
            arrays["eigenvectors"] = self.eigenvectors
        if self.rank is not None:
            arrays["rank"] = np.array(self.rank, dtype=np.int64)
        with atomic_write(path, force, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Spectrum:
        """Read a spectrum written by :meth:`save`.

        Parameters
        ----------
        path : path-like
            A ``.npz`` file with ``format == "specsched.spectrum"`` and ``version == 1``.

        Returns
        -------
        Spectrum
            Bit-identical to the one saved.

        Raises
        ------
        InputError
            Naming the file (and the field) if it is missing, not a readable ``.npz``
            (truncated, garbage), not a spectrum file, of another version, lacks a key, or
            holds a field of the wrong shape, type or value.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        required = (
            "format",
            "version",
            "eigenvalues",
            "mean",
            "n_samples",
            "source",
            "method",
            "sample_shape",
        )
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not hasattr(npz, "files"):
                    raise InputError(f"{path}: expected a spectrum .npz file, got a .npy array")
                missing = [k for k in required if k not in npz.files]
                if "format" in missing or str(npz["format"]) != SPECTRUM_FORMAT:
                    raise InputError(
                        f"{path}: not a spectrum file (no format={SPECTRUM_FORMAT!r} key; "
                        "write one with Spectrum.save or `specsched spectrum`)"
                    )
                if missing:
                    raise InputError(f"{path}: spectrum file lacks the fields {', '.join(missing)}")
                fields = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc

        def scalar(key: str, kind: str):
            value = fields[key]
            if value.shape != () or value.dtype.kind not in kind:
                raise InputError(
                    f"{path}: field {key}: expected a scalar of kind {kind!r}, got dtype "
                    f"{value.dtype}, shape {value.shape}"
                )
            return value.item()

        version = scalar("version", "iu")
        if version != SPECTRUM_VERSION:
            raise InputError(
                f"{path}: field version: spectrum file version {version}, this specsched reads "
                f"version {SPECTRUM_VERSION}"
            )
        n_samples = scalar("n_samples", "iu")
        shape = fields["sample_shape"]
        if shape.ndim != 1 or shape.dtype.kind not in "iu":
            raise InputError(f"{path}: field sample_shape: expected a 1-D integer array")
        sample_shape = None if shape.tolist() == [-1] else tuple(shape.tolist())
        try:
            return cls(
                eigenvalues=fields["eigenvalues"],
                mean=fields["mean"],
                eigenvectors=fields.get("eigenvectors"),
                n_samples=None if n_samples == -1 else n_samples,
                source=scalar("source", "U"),
                method=scalar("method", "U"),
                sample_shape=sample_shape,
                rank=scalar("rank", "iu") if "rank" in fields else None,
            )
        except InputError as exc:
            raise InputError(f"{path}: field {exc}") from exc

    @classmethod
    def from_eigenvalues(
        cls,
        eigenvalues,
        *,
        mean=None,
        source: str = "eigenvalues",
        negative_tol: float = _DEFAULT_NEGATIVE_TOL,
    ) -> Spectrum:
        """Build a spectrum from given eigenvalues (e.g. a published spectrum).

        Parameters
        ----------
        eigenvalues : array_like of shape (d,)
            Variances along the eigen-directions, any order (sorted descending here).
        mean : array_like of shape (d,), optional
            Mean in the eigenbasis, aligned with ``eigenvalues`` as given (permuted with
            them); zeros by default.
        source : str
            Provenance label.
        negative_tol : float
            Negatives with ``|lam| <= negative_tol * max(lam)`` are round-off: set to 0 and
            reported with :func:`warnings.warn` (giving their count).

        Returns
        -------
        Spectrum
            ``method="eigenvalues"``, no eigenvectors, ``n_samples=None``.

        Raises
        ------
        InputError
            If ``eigenvalues`` is empty, not 1-D, not real, not finite, all zero or has
            larger negatives; if ``mean`` has another shape; if ``negative_tol < 0``.
        """
        if not (isinstance(negative_tol, numbers.Real) and negative_tol >= 0):
            raise InputError(f"negative_tol: expected a number >= 0, got {negative_tol!r}")
        lam = _clean_eigenvalues(eigenvalues, float(negative_tol), "eigenvalues")
        return cls(eigenvalues=lam, mean=mean, source=source, method="eigenvalues")
