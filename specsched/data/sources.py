"""Data sources read chunk by chunk: any dataset size with bounded memory.

A :class:`DataSource` is a list of picklable *parts* (a range of a ``.npy`` file, a group of
image or audio files, one CIFAR-10 batch, one IDX file, an in-memory array). A part yields
float64 chunks of at most ``chunk_size`` samples, each of shape ``(n, *sample_shape)``, so
an estimator's memory is ``O(chunk_size x d)`` plus its own state, whatever ``N`` is. Parts
are the unit of distribution (one dask task per part); chunks are the unit of memory.

Sample layouts (how the Fourier model reads a sample)
------------------------------------------------------
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

from specsched.data.arrays import check_samples, read_array
from specsched.data.audio import AUDIO_SUFFIXES, audio_frame_count, read_audio_frames
from specsched.data.cifar import cifar10_batch_files, read_cifar10_batch
from specsched.data.idx import load_idx_images
from specsched.data.images import IMAGE_SUFFIXES, read_image, to_unit_interval
from specsched.errors import InputError

__all__ = [
    "DataSource",
    "ArrayPart",
    "NpyPart",
    "ImageFilesPart",
    "AudioFilesPart",
    "IdxPart",
    "CifarPart",
    "open_source",
    "source_from_array",
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
    """Rows ``start:stop`` of an in-memory samples array."""

    array: np.ndarray = field(repr=False)
    label: str = "array"

    @property
    def n(self) -> int:
        return int(self.array.shape[0])

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for a, b in _ranges(self.n, chunk_size):
            yield check_samples(self.array[a:b], self.label)


@dataclass(frozen=True)
class NpyPart:
    """Rows ``start:stop`` of a ``.npy`` file, read chunk by chunk at their file offset.

    The header is parsed as a memory map would be, then each chunk's rows are read with
    :func:`numpy.fromfile` at their offset (no mapping of the whole file, which would count
    touched pages in the resident set), so resident memory stays ``O(chunk_size x d)`` even
    for files larger than RAM.
    """

    path: str
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def label(self) -> str:
        return self.path

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
            except (ValueError, OSError) as exc:
                raise InputError(f"{self.path}: not a readable .npy file ({exc})") from exc
            if fortran:
                raise InputError(f"{self.path}: Fortran-ordered .npy files are not supported")
            row = int(np.prod(shape[1:], dtype=np.int64))
            offset = fh.tell()
            for a, b in _ranges(self.n, chunk_size):
                fh.seek(offset + (self.start + a) * row * dtype.itemsize)
                rows = np.fromfile(fh, dtype=dtype, count=(b - a) * row)
                if rows.size != (b - a) * row:
                    raise InputError(f"{self.path}: truncated .npy file")
                yield check_samples(rows.reshape((b - a,) + tuple(shape[1:])), self.path)


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

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        for a, b in _ranges(self.n, chunk_size):
            imgs = []
            for p in self.paths[a:b]:
                x = read_image(p, grayscale=self.grayscale, crop=self.crop, size=self.size)
                if self.sample_shape is not None and x.shape != self.sample_shape:
                    raise InputError(
                        f"{p}: image of shape {x.shape} (H, W, C), the first image of the "
                        f"dataset is {self.sample_shape}; pass size=(H, W) (--size) to resize "
                        "all images, or grayscale to mix gray and RGB"
                    )
                imgs.append(x)
            yield np.stack(imgs)


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
class _DecodedFilePart:
    """A file decoded whole into uint8 images, converted to [-1, 1] chunk by chunk."""

    path: str
    n_images: int

    @property
    def n(self) -> int:
        return self.n_images

    @property
    def label(self) -> str:
        return self.path

    #: ``reader(path) -> uint8 array (N, ...)``, set by each subclass.
    reader = None

    def iter_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        raw = self.reader(self.path)
        for a, b in _ranges(raw.shape[0], chunk_size):
            yield to_unit_interval(raw[a:b], self.path)


@dataclass(frozen=True)
class IdxPart(_DecodedFilePart):
    """An IDX image file (plain or ``.gz``): read once as uint8, converted chunk by chunk."""

    reader = staticmethod(load_idx_images)


@dataclass(frozen=True)
class CifarPart(_DecodedFilePart):
    """One CIFAR-10 python batch (10000 images of 32 x 32 x 3)."""

    n_images: int = 10000

    reader = staticmethod(read_cifar10_batch)


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
        Picklable parts, each with ``n``, ``label`` and ``iter_chunks(chunk_size)``.
    kind : str
        ``"array"``, ``"npy"``, ``"images"``, ``"audio"``, ``"idx"`` or ``"cifar10"``.
    sample_rate : float or None
        Samples per second for audio (frequencies in cycles per sample times this are Hz).
    """

    name: str
    sample_shape: tuple[int, ...]
    n_samples: int
    parts: tuple
    kind: str = "array"
    sample_rate: float | None = None

    @property
    def dimension(self) -> int:
        """``d = prod(sample_shape)``."""
        return int(np.prod(self.sample_shape, dtype=np.int64))

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[np.ndarray]:
        """Yield float64 chunks ``(n <= chunk_size, *sample_shape)`` over all parts in order.

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
        return np.concatenate(list(self.iter_chunks(65536)))


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


def source_from_array(x, name: str = "array") -> DataSource:
    """Wrap an in-memory samples array ``(N, ...)`` as a :class:`DataSource`.

    Raises
    ------
    InputError
        If ``x`` is 0-d or holds no samples.
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"{name}: expected samples of shape (N, ...), got shape {x.shape}")
    return DataSource(name, tuple(x.shape[1:]), int(x.shape[0]), (ArrayPart(x, name),))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
    shape, dtype = mm.shape, mm.dtype
    del mm
    if len(shape) < 2 or shape[0] == 0:
        raise InputError(f"{path}: expected samples of shape (N, ...) with N >= 1, got {shape}")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise InputError(f"{path}: expected a real numeric array, got dtype {dtype}")
    return shape, dtype


def _npy_source(files: list[Path], name: str, part_size: int) -> DataSource:
    parts, first = [], None
    total = 0
    for f in files:
        shape, _ = _npy_header(f)
        if first is None:
            first = (f, shape[1:])
        elif shape[1:] != first[1]:
            raise InputError(
                f"{f}: samples of shape {shape[1:]}, but {first[0].name} has {first[1]}; "
                "all files of the dataset must have the same sample shape (dimension mismatch)"
            )
        parts += [NpyPart(str(f), a, b) for a, b in _ranges(shape[0], part_size)]
        total += shape[0]
    return DataSource(name, tuple(first[1]), total, tuple(parts), kind="npy")


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
        raw = load_idx_images(f)
        if shape is None:
            shape = raw.shape[1:]
        elif raw.shape[1:] != shape:
            raise InputError(f"{f}: images of shape {raw.shape[1:]}, expected {shape}")
        parts.append(IdxPart(str(f), int(raw.shape[0])))
        total += raw.shape[0]
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
        (``fashion-mnist``, ``sonic-pi-samples``: Debian packages), a ``.npy`` file (memory
        mapped), a ``.npz`` file, an IDX file (``.gz`` or not), or a folder of: images
        (``.png``/``.jpg``), audio (``.wav``/``.flac``/``.ogg``), ``.npy`` shards of the same
        sample shape, IDX image files, or CIFAR-10 python batches (``data_batch_*``,
        ``test_batch``). Folders are read in file-name order; hidden files are ignored.
    grayscale, crop, size :
        Image options (see :func:`specsched.data.images.read_image`); ``size`` is
        ``(H, W)`` in pixels.
    sample_rate : int
        Audio rate in Hz after resampling.
    frame_length : int
        Audio samples per frame (one sample of the dataset).
    part_size : int
        Samples per part of a ``.npy`` file (one dask task each).
    files_per_part : int
        Image or audio files per part.

    Returns
    -------
    DataSource

    Raises
    ------
    InputError
        For ``cifar10`` (eigenvalues only), an unknown name or missing path, a folder holding
        a file that is not data (naming it), files of different sample shapes (naming the
        file), an absent Debian dataset (saying how to install it), unreadable files.
    """
    from specsched.data.builtin import BUILTIN_DATASETS, digits, natural_patches

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
                f"samples; use it as a spectrum (--spectrum {src})"
            )
    path = Path(src)
    name = str(src)
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
            return _npy_source(files, name, part_size)
        return _idx_source(files, name)
    if not path.exists():
        from specsched.data import unknown_source_error

        raise unknown_source_error(src)
    low = path.name.lower()
    if low.endswith(".npy"):
        return _npy_source([path], name, part_size)
    if low.endswith(".npz"):
        x = read_array(path)
        return source_from_array(x, name)
    if low.endswith((".gz", "-ubyte", ".idx")):
        return _idx_source([path], name)
    raise InputError(
        f"{path}: unsupported file type (expected .npy, .npz, IDX (.gz) or a folder)"
    )
