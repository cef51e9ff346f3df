"""Chunked first and second moments in a block layout, written against the array API.

Notation (docs/theory.md section 6)
-----------------------------------
A chunk of ``n`` samples is arranged as ``F`` of shape ``(n, P, C)``: ``P`` independent
blocks of ``C`` coordinates each. Its summary is the count ``n``, the block means
``Fbar = mean_i F_i`` (P, C) and the centred second moments
``M2[p] = sum_i (F_ip - Fbar_p)(F_ip - Fbar_p)^H`` (P, C, C). Two summaries merge exactly with
the pairwise update of Chan, Golub & LeVeque (1979), ``delta = Fbar_B - Fbar_A``::

    n    = n_A + n_B
    Fbar = Fbar_A + delta n_B / n
    M2   = M2_A + M2_B + delta delta^H n_A n_B / n       (per block p)

Three layouts use it:

- full covariance: ``P = 1``, ``C = d`` (the flattened samples), ``M2[0] = Xc^T Xc``;
- diagonal: ``P = d``, ``C = 1`` (per-coordinate variances; their sum is the trace);
- Fourier (shift-invariant) model: ``F = FFT_ortho(x)`` over the spatial axes, ``P`` the
  number of frequencies, ``C`` the channels; ``M2[p] / (n - 1)`` is the C x C cross-power
  (Hermitian) matrix at frequency ``p``.

The functions take any array-API namespace ``xp`` (NumPy, CuPy, array-api-strict) through
:func:`array_api_compat.array_namespace`; the result stays on the chunk's device.

References
----------
T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for
computing sample variances", STAN-CS-79-773, 1979.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from specsched.errors import InputError

__all__ = [
    "LAYOUTS",
    "Moments",
    "as_blocks",
    "chunk_moments",
    "merge_moments",
    "get_namespace",
    "to_numpy",
]

#: Block layouts of :func:`as_blocks`.
LAYOUTS = ("full", "diag", "fourier")


class Moments(NamedTuple):
    """Summary of samples in block layout.

    Attributes
    ----------
    n : int
        Number of samples.
    mean : array of shape (P, C)
        Block means (complex for the Fourier layout).
    m2 : array of shape (P, C, C)
        Centred second moments ``sum_i (F_ip - mean_p)(F_ip - mean_p)^H``.
    """

    n: int
    mean: object
    m2: object


def get_namespace(device: str = "cpu", xp=None):
    """The array namespace for a device.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        ``"cpu"``: NumPy (or ``xp`` when given); ``"cuda"``: CuPy's array-API namespace.
    xp : module, optional
        An array-API namespace to use on the CPU (e.g. :mod:`array_api_strict` in tests).

    Returns
    -------
    module
        The namespace.

    Raises
    ------
    InputError
        For an unknown device, or ``"cuda"`` when CuPy is not installed or sees no GPU.
    """
    if device == "cpu":
        if xp is not None:
            return xp
        import array_api_compat.numpy as xnp

        return xnp
    if device != "cuda":
        raise InputError(f"--device: expected 'cpu' or 'cuda', got {device!r}")
    try:
        import cupy
    except ImportError as exc:
        raise InputError(
            "--device cuda: CuPy is not installed; pip install 'specsched[gpu]' "
            "(cupy-cuda12x) on a machine with an NVIDIA GPU, or use --device cpu"
        ) from exc
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver
        raise InputError(f"--device cuda: no usable CUDA device ({exc}); use --device cpu") \
            from exc
    if n_gpus < 1:
        raise InputError("--device cuda: no CUDA device found; use --device cpu")
    import array_api_compat.cupy as xcp

    return xcp


def to_numpy(a) -> np.ndarray:
    """Copy an array of any array-API library to a host NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    try:
        return np.from_dlpack(a)
    except (TypeError, RuntimeError, BufferError):
        return np.asarray(a)


def as_blocks(x, layout: str, xp):
    """Arrange a chunk ``x`` of shape ``(n, *sample_shape)`` as ``F`` of shape ``(n, P, C)``.

    Parameters
    ----------
    x : array of shape (n, *sample_shape), float64
        ``sample_shape`` is ``(L,)`` (signal), ``(H, W)`` (gray) or ``(H, W, C)`` (channels
        last) for the Fourier layout; anything for ``"full"`` and ``"diag"``.
    layout : {"full", "diag", "fourier"}
    xp : array namespace

    Returns
    -------
    array of shape (n, P, C)
        ``"full"``: ``(n, 1, d)``; ``"diag"``: ``(n, d, 1)``; ``"fourier"``: the unitary DFT
        (``norm="ortho"``) over the spatial axes, complex128, ``(n, prod(spatial), C)``.
    """
    n = x.shape[0]
    if layout == "full":
        return xp.reshape(x, (n, 1, -1))
    if layout == "diag":
        return xp.reshape(x, (n, -1, 1))
    if x.ndim in (2, 3):  # (n, L) signal or (n, H, W) gray image: one channel
        x = xp.reshape(x, tuple(x.shape) + (1,))
    spatial = tuple(range(1, x.ndim - 1))
    F = xp.fft.fftn(xp.astype(x, xp.complex128), axes=spatial, norm="ortho")
    return xp.reshape(F, (n, -1, x.shape[-1]))


def chunk_moments(F, xp) -> Moments:
    """Count, block means and centred second moments of one chunk ``F`` (n, P, C).

    Returns
    -------
    Moments
        ``m2 = Fc^T conj(Fc)`` per block, computed with one batched matmul (no ``n x P x C x
        C`` temporary).
    """
    n = F.shape[0]
    mean = xp.mean(F, axis=0)
    Fc = F - mean
    left = xp.permute_dims(Fc, (1, 2, 0))  # (P, C, n)
    right = xp.permute_dims(Fc, (1, 0, 2))  # (P, n, C)
    if xp.isdtype(F.dtype, "complex floating"):
        right = xp.conj(right)
    return Moments(int(n), mean, xp.matmul(left, right))


def merge_moments(a: Moments | None, b: Moments, xp) -> Moments:
    """Merge two summaries (Chan et al. update); ``a`` may be None (nothing yet).

    Returns
    -------
    Moments
        The summary of the union of both sample sets.
    """
    if a is None or a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n / n)
    outer = delta[:, :, None] * (xp.conj(delta[:, None, :])
                                 if xp.isdtype(delta.dtype, "complex floating")
                                 else delta[:, None, :])
    return Moments(n, mean, a.m2 + b.m2 + outer * (a.n * b.n / n))


def moments_to_numpy(m: Moments) -> Moments:
    """The same summary with host NumPy arrays."""
    return Moments(m.n, to_numpy(m.mean), to_numpy(m.m2))
