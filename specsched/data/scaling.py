"""How stored sample values are read: the one dtype rule every loader applies.

A diffusion model is trained on pixels mapped to ``[-1, 1]``; image files store them as 8- or
16-bit integers, and so do most array dumps of image datasets (``uint8`` ``.npy`` files). The
same images must give the same spectrum whichever way they are stored, so every loader (image
folders, IDX, CIFAR-10 batches, ``.npy``/``.npz`` files, ``.npy`` shards) reads a stored
dtype the same way (table in docs/formats.md):

========================  =====================================  ===========================
stored dtype              read as                                warning
========================  =====================================  ===========================
float16, float32, float64 the values as stored                   none
uint8                     8-bit pixels, ``x / 255 * 2 - 1``      ``.npy``/``.npz`` only (a
                                                                 guess); image, IDX and
                                                                 CIFAR-10 files say so
uint16                    16-bit pixels, ``x / 65535 * 2 - 1``   as uint8
bool                      binary pixels, False -> -1, True -> 1  as uint8
int8 .. int64, uint32,    refused: no standard scaling; the
uint64                    message says how to convert
complex, strings, objects refused
========================  =====================================  ===========================

In-memory arrays handed to the library (:func:`specsched.data.sources.source_from_array`,
:func:`specsched.spectrum.spectrum_from_samples`) are numbers, not a file format: their values
are used as given, whatever the dtype.
"""

from __future__ import annotations

import warnings

import numpy as np

from specsched.errors import InputError

__all__ = [
    "PIXEL_MAX",
    "DataScalingWarning",
    "pixel_max",
    "scaling_note",
    "to_unit_interval",
    "warn_scaling",
]

#: Stored integer dtypes read as pixels, and the value that maps to +1.
PIXEL_MAX = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535, np.dtype(np.bool_): 1}


class DataScalingWarning(UserWarning):
    """Stored integers were taken as pixel values and mapped to ``[-1, 1]`` (a guess)."""


def pixel_max(dtype, name: str) -> int | None:
    """The pixel scale of a stored dtype, or None for floats (values as stored).

    Parameters
    ----------
    dtype : numpy dtype
        The dtype stored in the file.
    name : str
        File name quoted in the error message.

    Returns
    -------
    int or None
        255 for uint8, 65535 for uint16, 1 for bool (the value mapped to +1); None for real
        floating dtypes.

    Raises
    ------
    InputError
        For signed or wide unsigned integers (no standard scaling; the message says how to
        convert), complex, string or object dtypes.
    """
    dtype = np.dtype(dtype)
    if dtype in PIXEL_MAX:
        return PIXEL_MAX[dtype]
    if np.issubdtype(dtype, np.floating):
        return None
    if np.issubdtype(dtype, np.integer):
        raise InputError(
            f"{name}: {dtype} samples have no standard scaling (8-bit images are uint8, 16-bit "
            "images uint16, int16 audio is x / 32768); convert them to floating point with "
            "the scaling you mean, e.g. np.save(path, (x / 32768).astype(np.float32))"
        )
    raise InputError(f"{name}: expected a real numeric array, got dtype {dtype}")


def scaling_note(dtype, name: str) -> str | None:
    """The one-line note saying how stored integers are read (None for floats).

    Raises
    ------
    InputError
        As :func:`pixel_max`.
    """
    top = pixel_max(dtype, name)
    if top is None:
        return None
    dtype = np.dtype(dtype)
    how = ("False -> -1, True -> 1" if dtype == np.bool_
           else f"x / {top} * 2 - 1 in [-1, 1]")
    kind = "binary" if dtype == np.bool_ else f"{8 * dtype.itemsize}-bit"
    return (f"{name}: {dtype} samples read as {kind} pixel values ({how}), as image files "
            "are; store floating-point samples to use the values as they are")


def warn_scaling(dtype, name: str) -> None:
    """Warn once (:class:`DataScalingWarning`) that a file's integers are read as pixels.

    Raises
    ------
    InputError
        As :func:`pixel_max`.
    """
    note = scaling_note(dtype, name)
    if note is not None:
        warnings.warn(note, DataScalingWarning, stacklevel=3)


def to_unit_interval(image: np.ndarray, name: str) -> np.ndarray:
    """Map integer or boolean pixels to float64 in ``[-1, 1]``: ``x / max * 2 - 1``.

    Parameters
    ----------
    image : ndarray
        uint8 (``max`` 255), uint16 (``max`` 65535) or bool (``max`` 1) pixel values.
    name : str
        File name quoted in the error message.

    Returns
    -------
    ndarray, float64, same shape

    Raises
    ------
    InputError
        For any other dtype.
    """
    top = PIXEL_MAX.get(image.dtype)
    if top is None:
        raise InputError(f"{name}: unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
    out = image.astype(np.float64)
    out /= top  # in place: the same operations as x / max * 2 - 1, one array
    out *= 2.0
    out -= 1.0
    return out
