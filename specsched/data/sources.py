"""Data sources read chunk by chunk: any dataset size with bounded memory.

A :class:`DataSource` is a list of picklable *parts* (a range of rows of a ``.npy`` file or of
a ``.npz`` member, a group of image or audio files, one CIFAR-10 batch, one IDX file, an
in-memory array). A part yields floating-point chunks of at most ``chunk_size`` samples, each
of shape ``(n, *sample_shape)``, read by the dtype rule of :mod:`specsched.data.scaling`
(pixels in ``[-1, 1]``; stored floats as they are, in their dtype, so a float32 file gives
float32 chunks and the estimators convert one chunk at a time), so an estimator's memory is
``O(chunk_size x d)`` plus its own state, whatever ``N`` is. Parts are the unit of
distribution (one dask task per part); chunks are the unit of memory. Opening a source reads
headers only (the first image of an image folder), so shapes and sizes are known, and
checked, before any sample is read.

Sample layouts (how the Fourier model reads a sample)
-----------------------------------------------------
- ``(L,)``: a 1-D signal (audio frame), one channel;
- ``(H, W)``: a grayscale image;
- ``(H, W, C)``: an image with ``C`` channels last.

Every problem raises :class:`specsched.errors.InputError` naming the file at fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specsched.data.arrays import (
    ArrayHeader,
    RowRange,
    array_header,
    check_samples,
    decode_samples,
    iter_rows,
)
from specsched.data.audio import AUDIO_SUFFIXES, audio_frame_count, read_audio_frames
from specsched.data.builtin import BUILTIN_DATASETS, digits, natural_patches
from specsched.data.cifar import cifar10_batch_files, read_cifar10_batch
from specsched.data.idx import check_idx_images, iter_idx_rows, read_idx_header
from specsched.data.images import IMAGE_SUFFIXES, read_image
from specsched.data.scaling import pixel_max, to_unit_interval, warn_scaling
from specsched.data.zarrs import ZarrPart, is_zarr, zarr_header
from specsched.errors import InputError

__all__ = [
    "DataSource",
    "ArrayPart",
    "CifarPart",
    "IdxPart",
    "NpyPart",
    "ImageFilesPart",
    "AudioFilesPart",
    "ZarrPart",
    "check_stored",
    "checked_chunks",
    "fashion_mnist_source",
    "open_source",
    "source_from_array",
    "unknown_source_error",
    "SYSTEM_DATASETS",
    "FASHION_MNIST_DIR",
    "SONIC_PI_DIR",
]

#: Folder of Debian's ``dataset-fashion-mnist`` package.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Folder of Debian's ``sonic-pi-samples`` package (FLAC instrument samples).
SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
#: Datasets read from Debian packages when installed: name -> (package, folder).
SYSTEM_DATASETS = {
    "fashion-mnist": ("dataset-fashion-mnist", FASHION_MNIST_DIR),
    "sonic-pi-samples": ("sonic-pi-samples", SONIC_PI_DIR),
}
#: Default samples per part of a large ``.npy`` file (the unit of a dask task).
PART_SIZE = 65536


def _ranges(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


@dataclass(frozen=True)
class ArrayPart:
    """An in-memory samples array (values used as given, see :mod:`specsched.data.scaling`).

    The one part without a file (``path`` is None): a dask run must send its values to the
    workers (:class:`specsched.spectrum.cluster.Executor` scatters them once).
    """

    array: np.ndarray = field(repr=False)
    label: str = "array"
    path = None

    @property
    def n(self) -> int:
        return int(self.array.shape[0])

    def blocks(self, n_blocks: int) -> tuple[ArrayPart, ...]:
        """The rows cut into at most ``n_blocks`` consecutive parts of near-equal size (views,
        no copy), labelled ``LABEL rows A:B``."""
        size = -(-self.n // max(1, min(n_blocks, self.n)))
        return tuple(ArrayPart(self.array[a:b], f"{self.label} rows {a}:{b}")
                     for a, b in _ranges(self.n, size))

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for a, b in _ranges(self.n, chunk_size):
            yield check_samples(self.array[a:b], self.label)


@dataclass(frozen=True)
class NpyPart(RowRange):
    """Rows ``start:stop`` of a ``.npy`` file or ``.npz`` member (``header`` an
    :class:`~specsched.data.arrays.ArrayHeader`), read chunk by chunk.

    Each chunk's rows are read at their offset (:func:`specsched.data.arrays.iter_rows`; no
    mapping of the whole file, which would count touched pages in the resident set), so
    resident memory stays ``O(chunk_size x d)`` even for files larger than RAM.
    """

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for raw in iter_rows(self.header, self.start, self.stop, chunk_size):
            yield decode_samples(raw, self.label)


@dataclass(frozen=True)
class ImageFilesPart:
    """A group of image files, read ``chunk_size`` at a time (see :func:`read_image`)."""

    paths: tuple[str, ...]
    grayscale: bool = False
    crop: int | None = None
    size: tuple[int, int] | None = None
    sample_shape: tuple[int, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.paths)

    @property
    def label(self) -> str:
        return self.paths[0] if self.paths else "images"

    @property
    def path(self) -> str | None:
        """The first file (the one a worker is checked to see)."""
        return self.paths[0] if self.paths else None

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for a, b in _ranges(self.n, chunk_size):
            out = None
            for i, p in enumerate(self.paths[a:b]):
                x = read_image(p, grayscale=self.grayscale, crop=self.crop, size=self.size)
                if self.sample_shape is not None and x.shape != self.sample_shape:
                    raise InputError(
                        f"{p}: image of shape {x.shape} (H, W, C), the first image of the "
                        f"dataset is {self.sample_shape}; pass size=(H, W) (--size) to resize "
                        "all images, or grayscale to mix gray and RGB"
                    )
                if out is None:
                    out = np.empty((b - a,) + x.shape)
                out[i] = x
            yield out


@dataclass(frozen=True)
class AudioFilesPart:
    """A group of audio files cut into mono frames (see :func:`read_audio_frames`)."""

    paths: tuple[str, ...]
    sample_rate: int = 16000
    frame_length: int = 16384
    n_frames: int = 0

    @property
    def n(self) -> int:
        return self.n_frames

    @property
    def label(self) -> str:
        return self.paths[0] if self.paths else "audio"

    @property
    def path(self) -> str | None:
        """The first file (the one a worker is checked to see)."""
        return self.paths[0] if self.paths else None

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        buf, count = [], 0
        for p in self.paths:
            frames = read_audio_frames(p, self.sample_rate, self.frame_length)
            for a, b in _ranges(frames.shape[0], chunk_size):
                buf.append(frames[a:b])
                count += b - a
                if count >= chunk_size:
                    yield np.concatenate(buf)
                    buf, count = [], 0
        if count:
            yield np.concatenate(buf)


@dataclass(frozen=True)
class IdxPart:
    """An IDX image file (plain or ``.gz``): uint8 rows read and scaled chunk by chunk."""

    path: str
    n_images: int

    @property
    def n(self) -> int:
        return self.n_images

    @property
    def label(self) -> str:
        return self.path

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for raw in iter_idx_rows(self.path, chunk_size):
            yield to_unit_interval(raw, self.path)


@dataclass(frozen=True)
class CifarPart:
    """One CIFAR-10 python batch (10000 images of 32 x 32 x 3; a pickle, decoded whole)."""

    path: str
    n_images: int = 10000

    @property
    def n(self) -> int:
        return self.n_images

    @property
    def label(self) -> str:
        return self.path

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        raw = read_cifar10_batch(self.path)
        for a, b in _ranges(raw.shape[0], chunk_size):
            yield to_unit_interval(raw[a:b], self.path)


@dataclass(frozen=True)
class DataSource:
    """A dataset read part by part and chunk by chunk.

    Attributes
    ----------
    name : str
        Provenance label (built-in name or path as given).
    sample_shape : tuple of int
        Shape of one sample: ``(L,)`` signal, ``(H, W)`` gray or ``(H, W, C)`` image.
    n_samples : int
        Number of samples ``N`` (from headers; the estimators count what they really read).
    parts : tuple
        Picklable parts, each with ``n``, ``label``, ``path`` (a file it reads; None for an
        in-memory :class:`ArrayPart`) and ``iter_chunks(chunk_size)``. A part holds paths
        and row ranges, never samples (except :class:`ArrayPart`), so a dask worker that
        sees the same paths reads its own part.
    kind : str
        ``"array"``, ``"npy"`` (``.npy``/``.npz`` files), ``"zarr"``, ``"images"``,
        ``"audio"``, ``"idx"`` or ``"cifar10"``.
    sample_rate : float or None
        Samples per second for audio (frequencies in cycles per sample times this are Hz).
    itemsize : int
        Bytes per value of a chunk as read, before the estimators' float64 copy (4 for a
        float32 file, 8 for scaled pixels); sizes the memory a chunk takes.
    """

    name: str
    sample_shape: tuple[int, ...]
    n_samples: int
    parts: tuple
    kind: str = "array"
    sample_rate: float | None = None
    itemsize: int = 8

    @property
    def dimension(self) -> int:
        """``d = prod(sample_shape)``."""
        return int(np.prod(self.sample_shape, dtype=np.int64))

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[np.ndarray]:
        """Yield chunks ``(n <= chunk_size, *sample_shape)`` over all parts in order.

        Chunks are real floating point: float64 for pixels and in-memory integers, the
        stored dtype for floating-point files (see :mod:`specsched.data.scaling`).

        Raises
        ------
        InputError
            Naming the part's file when a chunk's sample shape differs from
            :attr:`sample_shape`, or as the loaders.
        """
        for part in self.parts:
            yield from checked_chunks(part, self.sample_shape, chunk_size)

    def load(self) -> np.ndarray:
        """All samples in memory, float64 ``(N, *sample_shape)`` (small datasets only)."""
        return np.concatenate([c.astype(np.float64, copy=False)
                               for c in self.iter_chunks(65536)])


def unknown_source_error(src) -> InputError:
    """The error for a source that is neither a built-in name nor an existing path."""
    return InputError(
        f"{src}: neither a built-in dataset ({', '.join((*BUILTIN_DATASETS, *SYSTEM_DATASETS))}) "
        "nor an existing file or folder"
    )


def checked_chunks(part, sample_shape: tuple, chunk_size: int) -> Iterator[np.ndarray]:
    """The chunks of one part, each checked against the dataset's ``sample_shape``."""
    for chunk in part.iter_chunks(chunk_size):
        if chunk.shape[1:] != tuple(sample_shape):
            raise InputError(
                f"{part.label}: samples of shape {chunk.shape[1:]} "
                f"({int(np.prod(chunk.shape[1:]))} values), the dataset's are "
                f"{tuple(sample_shape)} ({int(np.prod(sample_shape))} values); all chunks "
                "must have the same dimension"
            )
        yield chunk


def check_stored(source: DataSource) -> None:
    """Check from the file sizes that every ``.npy`` file of ``source`` holds the data its
    header announces (one ``stat`` per file; no data read).

    Run before a dask run submits its tasks, so that a truncated shard is refused on the
    client instead of failing on a worker (in process the read fails naming the file too).

    Raises
    ------
    InputError
        Naming the first file shorter than ``header offset + prod(shape) x itemsize``.
    """
    seen = set()
    for part in source.parts:
        header = getattr(part, "header", None)
        if not isinstance(header, ArrayHeader) or header.member is not None \
                or header.path in seen:
            continue
        seen.add(header.path)
        need, have = header.offset + header.nbytes, os.path.getsize(header.path)
        if have < need:
            raise InputError(
                f"{header.path}: truncated file: its header announces shape {header.shape} "
                f"{header.dtype} ({need} bytes with the header), the file holds {have}"
            )


def source_from_array(x, name: str = "array") -> DataSource:
    """Wrap an in-memory samples array ``(N, ...)`` as a :class:`DataSource`.

    Raises
    ------
    InputError
        If ``x`` is 0-d or holds no samples.
    """
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"{name}: expected samples of shape (N, ...), got shape {x.shape}")
    itemsize = x.dtype.itemsize if np.issubdtype(x.dtype, np.floating) else 8
    return DataSource(name, tuple(x.shape[1:]), int(x.shape[0]), (ArrayPart(x, name),),
                      itemsize=itemsize)


def _array_file_source(files: list[Path], name: str, part_size: int) -> DataSource:
    """``.npy`` / ``.npz`` files (shards of one dataset) from their headers; warns once when
    their integers are read as pixels."""
    parts, first = [], None
    total, itemsize = 0, 0
    for f in files:
        h = array_header(f)
        scale = pixel_max(h.dtype, str(f))  # refuses dtypes without a reading
        if not h.shape:
            raise InputError(f"{f}: expected an array of samples of shape (N, ...), got a "
                             "scalar")
        if h.shape[0] == 0:
            raise InputError(f"{f}: the array holds no samples (shape {h.shape})")
        if len(h.shape) < 2:
            raise InputError(
                f"{f}: expected samples of shape (N, ...) with one sample per row, got a 1-D "
                f"array of {h.shape[0]} values (eigenvalues are passed as a spectrum)"
            )
        if first is None:
            first = (f, h, scale)
        elif h.sample_shape != first[1].sample_shape:
            raise InputError(
                f"{f}: samples of shape {h.sample_shape}, but {first[0].name} has "
                f"{first[1].sample_shape}; all files of the dataset must have the same sample "
                "shape (dimension mismatch)"
            )
        elif scale != first[2]:
            raise InputError(
                f"{f}: samples stored as {h.dtype}, but {first[0].name} as {first[1].dtype}, "
                "which is read with another scaling (docs/formats.md); store every file of "
                "the dataset with the same dtype"
            )
        parts += [NpyPart(h, a, b) for a, b in _ranges(h.shape[0], part_size)]
        total += h.shape[0]
        itemsize = max(itemsize, 8 if scale is not None else h.dtype.itemsize)
    f, h, scale = first
    warn_scaling(h.dtype, name)
    return DataSource(name, h.sample_shape, total, tuple(parts), kind="npy",
                      itemsize=itemsize)


def _zarr_source(path: Path, name: str, part_size: int) -> DataSource:
    """A zarr array ``(N, ...)`` from its header; parts cut at multiples of its chunk rows."""
    h = zarr_header(path)
    scale = pixel_max(h.dtype, str(path))  # refuses dtypes without a reading
    size = max(h.chunk_rows, part_size // h.chunk_rows * h.chunk_rows)
    parts = tuple(ZarrPart(h, a, b) for a, b in _ranges(h.shape[0], size))
    warn_scaling(h.dtype, name)
    return DataSource(name, h.sample_shape, h.shape[0], parts, kind="zarr",
                      itemsize=8 if scale is not None else h.dtype.itemsize)


def _group(items, size):
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def _image_source(files, name, grayscale, crop, size, files_per_part) -> DataSource:
    x0 = read_image(files[0], grayscale=grayscale, crop=crop, size=size)
    shape = x0.shape
    parts = tuple(
        ImageFilesPart(tuple(str(p) for p in g), grayscale, crop,
                       None if size is None else tuple(size), shape)
        for g in _group(files, files_per_part)
    )
    return DataSource(name, shape, len(files), parts, kind="images")


def _audio_source(files, name, sample_rate, frame_length, files_per_part) -> DataSource:
    counts = [audio_frame_count(f, sample_rate, frame_length) for f in files]
    keep = [(f, c) for f, c in zip(files, counts, strict=True) if c > 0]
    if not keep:
        raise InputError(
            f"{name}: no audio file is at least one frame long ({frame_length} samples at "
            f"{sample_rate} Hz); pass a shorter frame_length (--frame-length)"
        )
    parts = tuple(
        AudioFilesPart(tuple(str(f) for f, _ in g), sample_rate, frame_length,
                       sum(c for _, c in g))
        for g in _group(keep, files_per_part)
    )
    n = sum(c for _, c in keep)
    return DataSource(name, (frame_length,), n, parts, kind="audio",
                      sample_rate=float(sample_rate))


def _idx_source(files: list[Path], name: str) -> DataSource:
    parts, shape, total = [], None, 0
    for f in files:
        file_shape, dtype = read_idx_header(f)
        check_idx_images(f, file_shape, dtype)
        if shape is None:
            shape = file_shape[1:]
        elif file_shape[1:] != shape:
            raise InputError(f"{f}: images of shape {file_shape[1:]}, expected {shape}")
        parts.append(IdxPart(str(f), int(file_shape[0])))
        total += file_shape[0]
    return DataSource(name, tuple(shape), total, tuple(parts), kind="idx")


def fashion_mnist_source(folder: str | os.PathLike = FASHION_MNIST_DIR) -> DataSource:
    """Fashion-MNIST (70000 images of 28 x 28, train then test) from Debian's package.

    Source: H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST" (2017), as packaged by Debian
    ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist/`` (idx.gz files).
    Pixels ``x / 255 * 2 - 1``, shape ``(70000, 28, 28)``.

    Raises
    ------
    InputError
        If the files are absent; the message says ``apt-get install -y dataset-fashion-mnist``.
    """
    folder = Path(folder)
    files = [folder / f"{s}-images-idx3-ubyte.gz" for s in ("train", "t10k")]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(
            f"fashion-mnist: {missing[0]} not found; install Debian's package with "
            "`apt-get install -y dataset-fashion-mnist` (files in "
            f"{FASHION_MNIST_DIR}/)"
        )
    return _idx_source(files, "fashion-mnist")


def _classify_folder(folder: Path) -> tuple[str, list[Path]]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.name)
    if cifar10_batch_files(folder):
        return "cifar10", cifar10_batch_files(folder)
    kinds = {"images": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES, "npy": (".npy",),
             "idx": (".gz", "-ubyte", ".idx")}
    found: dict[str, list[Path]] = {}
    for f in files:
        name = f.name.lower()
        kind = next((k for k, sfx in kinds.items() if name.endswith(sfx)), None)
        if kind is None:
            raise InputError(
                f"{f}: not a data file (expected images {', '.join(IMAGE_SUFFIXES)}, audio "
                f"{', '.join(AUDIO_SUFFIXES)}, .npy shards or IDX files); move it out of "
                f"the folder {folder}"
            )
        found.setdefault(kind, []).append(f)
    if not found:
        raise InputError(f"{folder}: the folder holds no data file")
    if len(found) > 1:
        a, b = (found[k][0] for k in list(found)[:2])
        raise InputError(f"{folder}: mixes kinds of files ({a.name} and {b.name}); keep one kind")
    (kind, paths), = found.items()
    return kind, paths


def open_source(src: str | os.PathLike, *, grayscale: bool = False, crop: int | None = None,
                size: tuple[int, int] | None = None, sample_rate: int = 16000,
                frame_length: int = 16384, part_size: int = PART_SIZE,
                files_per_part: int = 256) -> DataSource:
    """Open any samples source as a :class:`DataSource` without reading it all.

    Parameters
    ----------
    src : str or path-like
        A built-in name (``natural-patches``, ``digits``), a system dataset
        (``fashion-mnist``, ``sonic-pi-samples``: Debian packages), a ``.npy`` file or a
        ``.npz`` file (rows read at their offset), an IDX file (``.gz`` or not), or a folder
        of: images (``.png``/``.jpg``), audio (``.wav``/``.flac``/``.ogg``), ``.npy`` shards
        of the same sample shape and dtype, IDX image files, or CIFAR-10 python batches
        (``data_batch_*``, ``test_batch``), or a zarr array's folder (optional extra
        ``zarr``). Folders are read in file-name order; hidden files are ignored. Stored
        values are read by the dtype rule of :mod:`specsched.data.scaling`: uint8 / uint16 /
        bool ``.npy``/``.npz``/zarr samples are taken as pixels and mapped to ``[-1, 1]``
        with one :class:`~specsched.data.scaling.DataScalingWarning`.
    grayscale, crop, size :
        Image options (see :func:`specsched.data.images.read_image`); ``size`` is
        ``(H, W)`` in pixels.
    sample_rate : int
        Audio rate in Hz after resampling.
    frame_length : int
        Audio samples per frame (one sample of the dataset).
    part_size : int
        Samples per part of a ``.npy`` file or zarr array (one dask task each; a zarr
        array's parts are whole multiples of its chunk rows).
    files_per_part : int
        Image or audio files per part.

    Returns
    -------
    DataSource
        Only headers have been read (and the first image of an image folder).

    Raises
    ------
    InputError
        For ``cifar10`` (eigenvalues only), an unknown name or missing path, a folder holding
        a file that is not data (naming it), files of different sample shapes or scalings
        (naming the file), a stored dtype without a reading (signed integers, complex), an
        array that is not ``(N, ...)``, an absent Debian dataset (saying how to install
        it), unreadable headers, a zarr array without the ``zarr`` extra (naming it) or a
        zarr group.
    """
    if isinstance(src, str):
        if src == "natural-patches":
            return source_from_array(natural_patches(), src)
        if src == "digits":
            return source_from_array(digits(), src)
        if src == "fashion-mnist":
            return fashion_mnist_source()
        if src == "sonic-pi-samples":
            if not SONIC_PI_DIR.is_dir():
                raise InputError(
                    f"sonic-pi-samples: {SONIC_PI_DIR} not found; install Debian's package "
                    "with `apt-get install -y sonic-pi-samples`"
                )
            src_path = SONIC_PI_DIR
            return _audio_source(
                sorted(p for p in src_path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES),
                "sonic-pi-samples", sample_rate, frame_length, files_per_part,
            )
        if src in BUILTIN_DATASETS:
            raise InputError(
                f"{src}: this built-in dataset ships as covariance eigenvalues only, without "
                f"samples; use it as a spectrum (as `specsched optimize --spectrum {src}`)"
            )
    path = Path(src)
    name = str(src)
    if is_zarr(path):
        return _zarr_source(path, name, part_size)
    if path.is_dir():
        kind, files = _classify_folder(path)
        if kind == "cifar10":
            return DataSource(name, (32, 32, 3), 10000 * len(files),
                              tuple(CifarPart(str(f)) for f in files), kind="cifar10")
        if kind == "images":
            return _image_source(files, name, grayscale, crop, size, files_per_part)
        if kind == "audio":
            return _audio_source(files, name, sample_rate, frame_length, files_per_part)
        if kind == "npy":
            return _array_file_source(files, name, part_size)
        return _idx_source(files, name)
    if not path.exists():
        raise unknown_source_error(src)
    low = path.name.lower()
    if low.endswith((".npy", ".npz")):
        return _array_file_source([path], name, part_size)
    if low.endswith((".gz", "-ubyte", ".idx")):
        return _idx_source([path], name)
    raise InputError(
        f"{path}: expected a .npy or .npz file, an IDX file (.gz, -ubyte, .idx) or a folder, "
        f"got suffix {path.suffix!r}"
    )
