"""Loading a folder of images as an array of samples.

Conventions
-----------
Images are returned as float64 of shape ``(N, H, W, C)``, channels last, with pixel values
mapped linearly from ``[0, max]`` of their integer type to ``[-1, 1]``
(``x / max * 2 - 1``, ``max = 255`` for 8-bit and ``65535`` for 16-bit files), the usual
scaling of diffusion-model training data (and of the packaged CIFAR-10 spectrum).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from specsched.data.scaling import to_unit_interval
from specsched.errors import InputError

__all__ = ["load_image_folder", "IMAGE_SUFFIXES", "read_image"]

#: File suffixes read as images (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _first_line(exc: BaseException) -> str:
    """The first line of a decoder's error (imageio appends multi-line install hints)."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(" .:") if text else type(exc).__name__


def _to_hwc(image: np.ndarray, name: str, grayscale: bool) -> np.ndarray:
    """Return one decoded image as float64 (H, W, C) in [-1, 1], alpha dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            f"{name}: expected a 2-D grayscale, RGB or RGBA image, got array shape {image.shape}"
        )
    if image.shape[2] in (2, 4):  # gray + alpha, RGBA: drop alpha
        image = image[:, :, :-1]
    x = to_unit_interval(image, name)
    if grayscale and x.shape[2] == 3:
        from skimage.color import rgb2gray

        # rgb2gray works on [0, 1] (ITU-R BT.709 luma weights); map back to [-1, 1]
        x = rgb2gray((x + 1.0) / 2.0)[:, :, None] * 2.0 - 1.0
    return x


def load_image_folder(path: str | os.PathLike, *, grayscale: bool = False) -> np.ndarray:
    """Load every image of a folder as one array of samples.

    Parameters
    ----------
    path : path-like
        A folder. Its files ``*.png``, ``*.jpg``, ``*.jpeg`` (suffix case-insensitive) are read
        with :func:`skimage.io.imread`, in order of file name; sub-folders and other files
        are ignored.
    grayscale : bool
        Convert RGB images to one luminance channel (:func:`skimage.color.rgb2gray`,
        BT.709 weights). Without it RGB images keep 3 channels and grayscale images get 1.

    Returns
    -------
    ndarray of shape (N, H, W, C), float64
        ``N`` images in ``[-1, 1]`` (8-bit: ``x / 255 * 2 - 1``, 16-bit: ``x / 65535 * 2 - 1``);
        ``C`` is 3 (RGB; the alpha channel of RGBA is dropped) or 1 (grayscale).

    Raises
    ------
    InputError
        If ``path`` is not a folder, holds no image file, a file cannot be decoded (naming
        it), or two images differ in shape ``(H, W, C)`` (naming both files and shapes;
        mixing grayscale and RGB images needs ``grayscale=True``).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not files:
        raise InputError(f"{folder}: no image files (*.png, *.jpg, *.jpeg) in the folder")
    out: np.ndarray | None = None
    for i, file in enumerate(files):
        x = read_image(file, grayscale=grayscale)
        if out is None:
            out = np.empty((len(files),) + x.shape, dtype=np.float64)
        elif x.shape != out.shape[1:]:
            raise InputError(
                f"{folder}: images differ in shape: {files[0].name} is {out.shape[1:]} "
                f"(H, W, C), {file.name} is {x.shape}; all images must have the same size"
                + ("" if grayscale else " and channels (grayscale=True converts RGB to gray)")
            )
        out[i] = x
    return out


def _center_crop(x: np.ndarray, crop: int) -> np.ndarray:
    h, w = x.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[top : top + crop, left : left + crop]


def read_image(path: str | os.PathLike, *, grayscale: bool = False, crop: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image file as float64 ``(H, W, C)`` in ``[-1, 1]``, optionally cropped/resized.

    Parameters
    ----------
    path : path-like
        A PNG or JPEG file (read with :func:`skimage.io.imread`).
    grayscale : bool
        Convert RGB to one luminance channel (BT.709 weights, as :func:`load_image_folder`).
    crop : int, optional
        Side of a centred square crop, applied first (the image's shorter side must be at
        least ``crop``).
    size : (int, int), optional
        Output ``(H, W)`` in pixels after the crop, by anti-aliased bilinear resizing
        (:func:`skimage.transform.resize`, ``anti_aliasing=True``).

    Returns
    -------
    ndarray of shape (H, W, C), float64
        ``C`` is 1 (grayscale) or 3 (RGB; alpha dropped).

    Raises
    ------
    InputError
        Naming the file if it cannot be decoded, has an unsupported pixel type, or is
        smaller than ``crop``.
    """
    from skimage.io import imread

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            raw = np.asarray(imread(path))
    except Exception as exc:  # decoders raise many types; report them all the same way
        raise InputError(f"{path}: cannot read the image ({_first_line(exc)})") from exc
    x = _to_hwc(raw, str(path), grayscale)
    if crop is not None:
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 1:
            raise InputError(f"crop (--crop): expected a side in pixels >= 1, got {crop!r}")
        if min(x.shape[:2]) < crop:
            raise InputError(f"{path}: image of {x.shape[:2]} pixels is smaller than crop={crop}")
        x = _center_crop(x, crop)
    if size is not None and tuple(size) != x.shape[:2]:
        from skimage.transform import resize

        x = resize(x, (size[0], size[1], x.shape[2]), order=1, anti_aliasing=True,
                   preserve_range=True)
    return x
