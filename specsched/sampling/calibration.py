r"""A denoiser's effective linear filter per eigen-direction, measured (a network's calibration).

The closed forms (docs/theory.md section 3) assume the exact Wiener denoiser: in the
eigenbasis of the data, ``D(x, sigma) - m = g(sigma) (x - m)`` with ``g = lambda / (lambda +
sigma^2)``. A trained network is not that filter. :func:`calibrate_denoiser` measures what it
is, to first order: at each noise level of a grid it runs the denoiser on held-out data plus
noise, ``x = x_0 + sigma eps`` (VE), projects input and output on the eigenvectors,
``u_k = <x - mu, U_k>``, ``v_k = <D(x, sigma) - mu, U_k>``, and fits per direction the
least-squares line

    v_k = a_k(sigma) u_k + b_k(sigma) + e_k,    Var(e_k) = r_k(sigma),

``a_k`` the effective gain, ``b_k`` the bias of the output's deviation from the data mean and
``r_k`` the residual variance (what the line does not explain; unbiased, ``n - 2`` degrees of
freedom). For the exact Wiener denoiser, on any data with these eigenvectors, ``a_k = lambda_k
/ (lambda_k + sigma^2)`` and ``b_k = r_k = 0`` exactly (it is linear). The regression is per
direction (each output coordinate on its own input coordinate), as issue 14 asks; coupling
between directions is left in ``r_k``.

Sums are accumulated batch by batch in float64 (memory O(batch_size x D)).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from specsched.errors import InputError
from specsched.theory.calibration import LinearCalibration

__all__ = ["LinearCalibration", "calibrate_denoiser"]


def _check_sigmas(sigmas) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.size < 1 or not np.all(np.isfinite(s)) or np.any(s <= 0.0) \
            or np.any(np.diff(s) <= 0.0):
        raise InputError("sigmas: expected a 1-D array of finite noise levels > 0, strictly "
                         f"increasing, got {np.array2string(s, threshold=6)}", param="sigmas")
    return s


def calibrate_denoiser(model: Callable, samples, sigmas, *, eigenvectors=None, mean=None,
                       rng: np.random.Generator | None = None,
                       batch_size: int = 1024) -> LinearCalibration:
    """Measure a VE denoiser's effective gain, bias and residual variance per direction.

    Parameters
    ----------
    model : callable
        ``model(x, sigma) -> x0_hat`` for VE states ``x = x_0 + sigma eps`` of shape
        ``(b, *sample_shape)``, float64 (the convention of :mod:`specsched.sampling.ksamplers`,
        e.g. its :class:`~specsched.sampling.ksamplers.WienerModel`).
    samples : array-like of shape (n, *sample_shape)
        Held-out data ``x_0`` (n >= 3), float.
    sigmas : array-like of shape (G,)
        Noise levels, strictly increasing, > 0.
    eigenvectors : ndarray of shape (D, d), optional
        Orthonormal columns ``U_k`` of the data's eigenbasis in the flattened sample space
        (``D = prod(sample_shape)``); None: the samples are already eigenbasis coordinates
        (``U = I``).
    mean : ndarray of shape (D,), optional
        Data mean ``mu`` (flattened); zeros by default.
    rng : numpy.random.Generator, optional
        Source of the noise ``eps``.
    batch_size : int
        Samples per call of ``model``.

    Returns
    -------
    LinearCalibration

    Raises
    ------
    InputError
        Fewer than 3 samples, ``sigmas`` not as expected, shapes that do not match, or a
        model output of another shape (each naming the argument).

    Notes
    -----
    Module docstring; the closed form with these in place of the Wiener filter (the
    network-calibrated closed form) is docs/theory.md section 3,
    :func:`specsched.theory.kclosed.kclosed_form` with ``calibration=``.
    """
    x0 = np.asarray(samples, dtype=np.float64)
    if x0.ndim < 2 or x0.shape[0] < 3:
        raise InputError(f"samples: expected an array of at least 3 samples (n, ...), got "
                         f"shape {x0.shape}", param="samples")
    s = _check_sigmas(sigmas)
    n, shape = x0.shape[0], x0.shape[1:]
    D = int(np.prod(shape))
    U = None if eigenvectors is None else np.asarray(eigenvectors, dtype=np.float64)
    if U is not None and (U.ndim != 2 or U.shape[0] != D):
        raise InputError(f"eigenvectors: expected shape ({D}, d) for samples of shape "
                         f"{shape}, got {U.shape}", param="eigenvectors")
    mu = np.zeros(D) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
    if mu.size != D:
        raise InputError(f"mean: expected {D} values, got {mu.size}", param="mean")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size: expected an integer >= 1, got {batch_size!r}",
                         param="batch_size")
    rng = np.random.default_rng() if rng is None else rng
    d = D if U is None else U.shape[1]
    G = s.size
    gain, bias, resid = np.empty((G, d)), np.empty((G, d)), np.empty((G, d))
    for g, sigma in enumerate(s):
        sums = np.zeros((5, d))  # u, v, uu, uv, vv
        for start in range(0, n, batch_size):
            clean = x0[start:start + batch_size]
            x = clean + sigma * rng.standard_normal(clean.shape)
            out = np.asarray(model(x, sigma), dtype=np.float64)
            if out.shape != x.shape:
                raise InputError(f"model: returned shape {out.shape} for input {x.shape}",
                                 param="model")
            u = x.reshape(len(x), D) - mu
            v = out.reshape(len(x), D) - mu
            if U is not None:
                u, v = u @ U, v @ U
            sums += [u.sum(0), v.sum(0), (u * u).sum(0), (u * v).sum(0), (v * v).sum(0)]
        su, sv, suu, suv, svv = sums / n
        var_u = suu - su * su
        cov = suv - su * sv
        a = np.divide(cov, var_u, out=np.zeros(d), where=var_u > 0.0)
        gain[g] = a
        bias[g] = sv - a * su
        sse = n * ((svv - sv * sv) - a * cov)  # sum of squared residuals of the line
        resid[g] = np.maximum(sse, 0.0) / (n - 2)
    return LinearCalibration(s, gain, bias, resid, n)
