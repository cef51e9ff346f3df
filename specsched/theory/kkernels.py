r"""Compiled (numba) state recursion of k-diffusion's samplers: generated law and its adjoint.

The NumPy closed form (:func:`specsched.theory.kclosed.kclosed_form`) traces each sampler's
step on linear forms whose coefficients are arrays over the d eigen-directions, and runs the
recursion ``y_{i+1} = M_i y_i + N_i w_i`` (docs/theory.md section 3) on (S, L, L, d) arrays.
These kernels compute the same law and gradient from the **corner system**
(:func:`specsched.theory.kclosed.corner_system`): the step traced once on the ``Q = 2^C``
corners of its C denoiser gains, so that per direction

    M_i(lambda) = sum_q w_q M_i[q],   w_q = prod_c (g_c if bit c of q else 1 - g_c),
    g_c = lambda / (lambda + s_c^2),  1 - g_c = s_c^2 / (lambda + s_c^2)

(``s_c`` the level of call c; the same for ``N_i``), and the recursion, its adjoint and the
chain rule through ``g_c`` run here, direction by direction, in blocks of :data:`BLOCK`
directions (the blocks in parallel, ``numba.prange``). The derivatives of the corner
matrices, of ``R_i`` and of the call levels in the sigmas of the stencil come with the corner
system (complex step, in :mod:`specsched.theory.kclosed`); the kernel contracts them with the
block's summed adjoints, so its cost is O(S L^3 d) for the recursion plus O(S O Q L^2) per
block for the stencil.

Memory: O(S L^2 BLOCK) per thread (the states entering each iteration, kept for the reverse
sweep), in a workspace reused across calls (:func:`workspace`). Float64 throughout; values
below :data:`specsched.theory.kernels.TINY` in the running states and adjoints are flushed to
zero (subnormal numbers are ~100x slower and change no loss).

numba is imported when this module is; compiled code is cached on disk after the first call.
numba keys that cache on this file only; the loss terms compiled into :func:`corner_vjp` come
from :mod:`specsched.theory.kernels`, tied to this file by :data:`COMPILED_CALLEES_SHA256`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from specsched.caches import numba_cache_enabled
from specsched.theory.kernels import PARALLEL_MIN_WORK, _term, threads_for

__all__ = ["BLOCK", "PARALLEL_MIN_WORK", "corner_forward", "corner_vjp", "scratch_rows",
           "threads_for", "workspace"]

#: Directions per block (the inner loops).
BLOCK = 64
_FASTMATH = {"reassoc", "contract", "nsz"}
_CACHE = numba_cache_enabled(__file__)
_TINY = 1e-100  # as specsched.theory.kernels.TINY
#: First 16 hex digits of the sha256 of the source of :func:`specsched.theory.kernels._term`,
#: which :func:`corner_vjp` compiles. numba's cache sees only this file: update this with
#: ``_term`` (``tests/test_kkernels.py`` checks it) so an edit there rebuilds the cache.
COMPILED_CALLEES_SHA256 = "0698b26c1da58239"
@nb.njit(inline="always", fastmath=_FASTMATH)
def _ftz(x):
    return x if abs(x) >= _TINY else 0.0


@nb.njit(inline="always")
def _rows(L, K, Q, C):
    """Row offsets of the scratch (a tuple: constant indices, no lookups in the loops): g,
    1 - g, g', w, M, N, hn, T, U, Pbar, hbar, Mbar, V2, Nbar, A."""
    rg = 0
    rgm = rg + C
    rgp = rgm + C
    rw = rgp + C
    rM = rw + Q
    rN = rM + L * L
    rh = rN + L * K
    rT = rh + L
    rU = rT + L * L
    rPb = rU + L * K
    rhb = rPb + L * L
    rMb = rhb + L
    rV2 = rMb + L * L
    rNb = rV2 + L * K
    rA = rNb + L * K
    return (rg, rgm, rgp, rw, rM, rN, rh, rT, rU, rPb, rhb, rMb, rV2, rNb, rA)


def scratch_rows(L: int, K: int, Q: int, C: int) -> int:
    """Rows of the per-thread scratch of the kernels (:func:`workspace`)."""
    return 3 * C + 2 * Q + 4 * L * L + 4 * L * K + 2 * L


@nb.njit(fastmath=_FASTMATH, cache=_CACHE)
def _maps(lam, k0, m, Mc_i, Nc_i, sc_i, S, r):
    """Gains, corner weights and ``M``, ``N`` of the block's directions into the scratch."""
    Q, L, _ = Mc_i.shape
    K = Nc_i.shape[2]
    C = sc_i.shape[0]
    rg, rgm, rgp, rw, rM, rN = r[0], r[1], r[2], r[3], r[4], r[5]
    for c in range(C):
        s = sc_i[c]
        s2 = s * s
        for j in range(m):
            lj = lam[k0 + j]
            den = lj + s2
            inv = 1.0 / den if den > 0.0 else 0.0
            S[rg + c, j] = lj * inv if den > 0.0 else 1.0  # lambda = 0 at sigma = 0: 1
            S[rgm + c, j] = s2 * inv
            S[rgp + c, j] = -2.0 * lj * s * inv * inv
    for q in range(Q):
        for j in range(m):
            S[rw + q, j] = 1.0
        for c in range(C):
            src = rg + c if (q >> c) & 1 else rgm + c
            for j in range(m):
                S[rw + q, j] *= S[src, j]
    for a in range(L):
        for b in range(L):
            row = rM + a * L + b
            for j in range(m):
                S[row, j] = 0.0
            for q in range(Q):
                x = Mc_i[q, a, b]
                if x != 0.0:
                    for j in range(m):
                        S[row, j] += x * S[rw + q, j]
        for k in range(K):
            row = rN + a * K + k
            for j in range(m):
                S[row, j] = 0.0
            for q in range(Q):
                x = Nc_i[q, a, k]
                if x != 0.0:
                    for j in range(m):
                        S[row, j] += x * S[rw + q, j]


@nb.njit(fastmath=_FASTMATH, cache=_CACHE)
def _advance(m, L, K, R_i, h, P, S, r):
    """One iteration in place: ``h <- M h``, ``P <- M P M^T + N R N^T`` (M, N in scratch)."""
    rM, rN, rh, rT, rU = r[4], r[5], r[6], r[7], r[8]
    for a in range(L):
        for j in range(m):
            S[rh + a, j] = 0.0
        for b in range(L):
            for j in range(m):
                S[rh + a, j] += S[rM + a * L + b, j] * h[b, j]
    for a in range(L):
        for j in range(m):
            h[a, j] = _ftz(S[rh + a, j])
    for a in range(L):
        for b in range(L):  # T = M P
            row = rT + a * L + b
            for j in range(m):
                S[row, j] = 0.0
            for e in range(L):
                for j in range(m):
                    S[row, j] += S[rM + a * L + e, j] * P[e * L + b, j]
        for k in range(K):  # U = N R
            row = rU + a * K + k
            for j in range(m):
                S[row, j] = 0.0
            for k2 in range(K):
                x = R_i[k2, k]
                if x != 0.0:
                    for j in range(m):
                        S[row, j] += S[rN + a * K + k2, j] * x
    for a in range(L):
        for b in range(L):
            row = a * L + b
            for j in range(m):
                P[row, j] = 0.0
            for e in range(L):
                for j in range(m):
                    P[row, j] += S[rT + a * L + e, j] * S[rM + b * L + e, j]
            for k in range(K):
                for j in range(m):
                    P[row, j] += S[rU + a * K + k, j] * S[rN + b * K + k, j]
            for j in range(m):
                P[row, j] = _ftz(P[row, j])


@nb.njit(inline="always", fastmath=_FASTMATH)
def _corner_sums(m, S, rw_q, rA_q, rbar, coef, out):
    """For the adjoint ``bar`` (rows ``rbar``, laid out like ``coef`` (A, B)) of one matrix:
    ``out[a, b] = sum_j w_q bar[a, b]`` (the block sum the stencil derivatives contract) and
    ``A_q += <coef, bar>`` per direction (row ``rA_q``)."""
    A, B = coef.shape
    for a in range(A):
        for b in range(B):
            row = rbar + a * B + b
            acc = 0.0
            for j in range(m):
                acc += S[rw_q, j] * S[row, j]
            out[a, b] = acc
            x = coef[a, b]
            if x != 0.0:
                for j in range(m):
                    S[rA_q, j] += x * S[row, j]


@nb.njit(inline="always")
def _start(m, k0, L, P0, h, P):
    for a in range(L):
        for j in range(m):
            h[a, j] = 0.0
    for a in range(L * L):
        for j in range(m):
            P[a, j] = 0.0
    for j in range(m):
        h[0, j] = 1.0
        P[0, j] = P0[k0 + j]


def workspace(n_iterations: int, L: int, K: int, Q: int, C: int) -> np.ndarray:
    """Per-thread scratch of the kernels, reused across calls (allocating it in every call
    costs page faults of the order of the kernel itself).

    Shape ``(n_threads, rows, BLOCK)``, float64: the states entering each iteration
    (``n_iterations (L + L^2)`` rows, kept for the reverse sweep), the running state
    (``L + L^2``) and :func:`scratch_rows`.
    """
    rows = (n_iterations + 1) * (L + L * L) + scratch_rows(L, K, Q, C)
    key = (nb.get_num_threads(), rows)
    work = _WORKSPACES.get(key)
    if work is None:
        _WORKSPACES.clear()
        work = _WORKSPACES[key] = np.empty((key[0], rows, BLOCK))
    return work


_WORKSPACES: dict = {}


@nb.njit(fastmath=_FASTMATH, cache=_CACHE)
def _forward_block(lam, Mc, Nc, R, sc, P0, H, V, ws, k0, m):
    """:func:`corner_forward` for the directions ``k0 .. k0 + m - 1`` (scratch ``ws``)."""
    n, Q, L, _ = Mc.shape
    K = Nc.shape[3]
    C = sc.shape[1]
    base = n * (L + L * L)
    h = ws[base:base + L]
    P = ws[base + L:base + L + L * L]
    S = ws[base + L + L * L:]
    r = _rows(L, K, Q, C)
    _start(m, k0, L, P0, h, P)
    for i in range(n):
        _maps(lam, k0, m, Mc[i], Nc[i], sc[i], S, r)
        _advance(m, L, K, R[i], h, P, S, r)
    for j in range(m):
        H[k0 + j] = h[0, j]
        V[k0 + j] = max(P[0, j], 0.0)


@nb.njit(fastmath=_FASTMATH, cache=_CACHE)
def _vjp_block(lam, Mc, Nc, R, sc, P0, dMc, dNc, dR, dsc, offsets, dP0, mean, weight, keep,
               normal, code, Pbar0, hbar0, ws, k0, m, part_row):
    """:func:`corner_vjp` for the directions ``k0 .. k0 + m - 1``: their loss; their
    gradient is added to ``part_row`` (n + 1,)."""
    n, Q, L, _ = Mc.shape
    K = Nc.shape[3]
    C = sc.shape[1]
    n_off = offsets.shape[0]
    LL = L + L * L
    base = n * LL
    h = ws[base:base + L]
    P = ws[base + L:base + LL]
    S = ws[base + LL:]
    r = _rows(L, K, Q, C)
    rg, rgm, rgp, rw, rM, rN = r[0], r[1], r[2], r[3], r[4], r[5]
    rhn, rT, rPb, rhb, rMb, rV2, rNb, rA = r[6], r[7], r[9], r[10], r[11], r[12], r[13], r[14]
    _start(m, k0, L, P0, h, P)
    for i in range(n):  # forward, keeping the states entering each iteration
        for a in range(LL):
            for j in range(m):
                ws[i * LL + a, j] = ws[base + a, j]
        _maps(lam, k0, m, Mc[i], Nc[i], sc[i], S, r)
        _advance(m, L, K, R[i], h, P, S, r)
    for a in range(L * L):
        for j in range(m):
            S[rPb + a, j] = 0.0
    for a in range(L):
        for j in range(m):
            S[rhb + a, j] = 0.0
    acc = 0.0
    for j in range(m):  # the loss terms and their partials, as kernels.loss_grad_kernel
        k = k0 + j
        if code < 0:
            S[rPb, j] = Pbar0[k]
            S[rhb, j] = hbar0[k]
            continue
        e = -h[0, j] * mean[k] if normal else 0.0
        t, dv, de = _term(code, lam[k], max(P[0, j], 0.0), e, keep[k])
        acc += weight[k] * t
        S[rPb, j] = weight[k] * dv
        S[rhb, j] = -weight[k] * de * mean[k] if normal else 0.0
    value = acc
    SM = np.empty((Q, L, L))
    SN = np.empty((Q, L, K))
    SR = np.empty((K, K))
    F = np.empty(C)
    for i in range(n - 1, -1, -1):
        _maps(lam, k0, m, Mc[i], Nc[i], sc[i], S, r)
        hi = i * LL  # rows of h_i, then P_i
        for a in range(L):  # T = Pbar M
            for b in range(L):
                row = rT + a * L + b
                for j in range(m):
                    S[row, j] = 0.0
                for e in range(L):
                    for j in range(m):
                        S[row, j] += S[rPb + a * L + e, j] * S[rM + e * L + b, j]
        for a in range(L):  # Mbar = 2 T P_i + hbar h_i^T
            for b in range(L):
                row = rMb + a * L + b
                for j in range(m):
                    S[row, j] = S[rhb + a, j] * ws[hi + b, j]
                for e in range(L):
                    for j in range(m):
                        S[row, j] += 2.0 * S[rT + a * L + e, j] * ws[hi + L + e * L + b, j]
        for a in range(L):  # V2 = Pbar N, Nbar = 2 V2 R
            for k in range(K):
                row = rV2 + a * K + k
                for j in range(m):
                    S[row, j] = 0.0
                for e in range(L):
                    for j in range(m):
                        S[row, j] += S[rPb + a * L + e, j] * S[rN + e * K + k, j]
            for k in range(K):
                row = rNb + a * K + k
                for j in range(m):
                    S[row, j] = 0.0
                for k2 in range(K):
                    x = 2.0 * R[i, k2, k]
                    if x != 0.0:
                        for j in range(m):
                            S[row, j] += S[rV2 + a * K + k2, j] * x
        for k in range(K):  # Rbar = N^T V2, summed over the block
            for k2 in range(K):
                acc = 0.0
                for a in range(L):
                    for j in range(m):
                        acc += S[rN + a * K + k, j] * S[rV2 + a * K + k2, j]
                SR[k, k2] = acc
        for q in range(Q):  # A_q and the block sums of w_q Mbar, w_q Nbar
            for j in range(m):
                S[rA + q, j] = 0.0
            _corner_sums(m, S, rw + q, rA + q, rMb, Mc[i, q], SM[q])
            _corner_sums(m, S, rw + q, rA + q, rNb, Nc[i, q], SN[q])
        for c in range(C):  # F_c = sum_j g'_c sum_q A_q dw_q/dg_c
            acc = 0.0
            for q in range(Q):
                sign = 1.0 if (q >> c) & 1 else -1.0
                for j in range(m):
                    S[rhn, j] = sign * S[rA + q, j] * S[rgp + c, j]
                for c2 in range(C):
                    if c2 != c:
                        src = rg + c2 if (q >> c2) & 1 else rgm + c2
                        for j in range(m):
                            S[rhn, j] *= S[src, j]
                for j in range(m):
                    acc += S[rhn, j]
            F[c] = acc
        for o in range(n_off):
            t = i + offsets[o]
            if t < 0 or t >= n:  # before the first level, or the final 0
                continue
            acc = 0.0
            for q in range(Q):
                for a in range(L):
                    for b in range(L):
                        acc += SM[q, a, b] * dMc[i, o, q, a, b]
                    for k in range(K):
                        acc += SN[q, a, k] * dNc[i, o, q, a, k]
            for k in range(K):
                for k2 in range(K):
                    acc += SR[k, k2] * dR[i, o, k, k2]
            for c in range(C):
                acc += F[c] * dsc[i, o, c]
            part_row[t] += acc
        for a in range(L):  # Pbar <- M^T T, hbar <- M^T hbar
            for b in range(L):
                row = rPb + a * L + b
                for j in range(m):
                    S[row, j] = 0.0
                for e in range(L):
                    for j in range(m):
                        S[row, j] += S[rM + e * L + a, j] * S[rT + e * L + b, j]
                for j in range(m):
                    S[row, j] = _ftz(S[row, j])
        for a in range(L):
            for j in range(m):
                S[rhn + a, j] = 0.0
            for e in range(L):
                for j in range(m):
                    S[rhn + a, j] += S[rM + e * L + a, j] * S[rhb + e, j]
        for a in range(L):
            for j in range(m):
                S[rhb + a, j] = _ftz(S[rhn + a, j])
    acc = 0.0
    for j in range(m):
        acc += S[rPb, j]
    part_row[0] += acc * dP0
    return value


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=_CACHE)
def corner_forward(lam, Mc, Nc, R, sc, P0, H, V, work):
    """Transfer function and generated variance per direction (forward recursion).

    Parameters
    ----------
    lam : float64 array of shape (d,)
        Eigenvalues ``lambda_k >= 0``.
    Mc : float64 array of shape (n, Q, L, L)
        Corner state matrices of the n iterations (sampling order; states padded to L).
    Nc : float64 array of shape (n, Q, L, K)
        Corner noise matrices (K = 0 for a deterministic sampler).
    R : float64 array of shape (n, K, K)
        Covariance of each iteration's draws.
    sc : float64 array of shape (n, C)
        Noise level of each denoiser call, ``Q = 2^C``.
    P0 : float64 array of shape (d,)
        Variance of the start ``x_0``.
    H, V : float64 arrays of shape (d,)
        Output: ``H = h_n[x]`` and ``var_gen = max(P_n[x, x], 0)``.
    work : float64 array of shape (n_threads, rows, BLOCK)
        Scratch (:func:`workspace`); each thread uses its own slice.

    Returns
    -------
    float
        0.0 (outputs are written in place: a returned array would be boxed where a pending
        signal surfaces as ``SystemError``, docs/reliability.md).
    """
    d = lam.shape[0]
    nblocks = (d + BLOCK - 1) // BLOCK
    for blk in nb.prange(nblocks):
        k0 = blk * BLOCK
        _forward_block(lam, Mc, Nc, R, sc, P0, H, V, work[nb.get_thread_id()], k0,
                       min(d, k0 + BLOCK) - k0)
    return 0.0


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=_CACHE)
def corner_vjp(lam, Mc, Nc, R, sc, P0, dMc, dNc, dR, dsc, offsets, dP0, mean, weight, keep,
               normal, code, Pbar0, hbar0, work, grad):
    """A loss of the generated law and its gradient in the sigmas (one fused forward and
    reverse sweep per block).

    Parameters
    ----------
    lam, Mc, Nc, R, sc, P0, work
        As in :func:`corner_forward`.
    mean, weight : float64 arrays of shape (d,)
        Data mean in the eigenbasis and each direction's weight (1, or quadrature weights).
    keep : bool array of shape (d,)
        Directions the KLs count.
    normal : bool
        Normal start (mean error ``-H m``) rather than the marginal (mean error 0).
    code : int
        0 = ``W2^2``, 1 = ``KL(gen || data)``, 2 = ``KL(data || gen)``
        (:data:`specsched.theory.kernels.LOSS_CODES`; the terms of
        :func:`specsched.theory.kernels._term`, :data:`COMPILED_CALLEES_SHA256`); -1: a loss
        computed outside, whose partials are ``Pbar0``, ``hbar0``.
    Pbar0, hbar0 : float64 arrays of shape (d,)
        With ``code = -1``: ``dL / d var_gen`` and ``dL / d H`` per direction (else unread).
    dMc : float64 array of shape (n, n_off, Q, L, L)
        ``d Mc[i] / d sigma_{i + offsets[o]}``; likewise ``dNc`` (n, n_off, Q, L, K),
        ``dR`` (n, n_off, K, K) and ``dsc`` (n, n_off, C).
    offsets : int64 array of shape (n_off,)
        The sampler's stencil (:attr:`~specsched.theory.ksolvers.KSampler.stencil`).
    dP0 : float
        ``d P0 / d sigma_0`` (``2 sigma_0`` for every start).
    grad : float64 array of shape (n + 1,)
        Output: ``dL / d sigmas`` (the entry of the final 0 is 0).

    Returns
    -------
    float
        The loss ``sum_k w_k term_k`` (the gradient in place, as :func:`corner_forward`).

    Notes
    -----
    With ``Pbar``, ``hbar`` the adjoints leaving iteration i: ``Mbar = 2 Pbar M P + hbar
    h^T``, ``Nbar = 2 Pbar N R``, ``Rbar = N^T Pbar N`` (docs/theory.md section 3); then
    ``dL/d sigma_{i+o} += sum_q <sum_j w_q Mbar, dMc[i, o, q]> + <.., dNc> + <sum_j Rbar,
    dR[i, o]> + sum_c (sum_j E_c g'_c) dsc[i, o, c]`` with ``E_c = sum_q A_q dw_q/dg_c`` and
    ``A_q = <Mbar, Mc[i, q]> + <Nbar, Nc[i, q]>``; ``Pbar <- M^T Pbar M``, ``hbar <- M^T
    hbar``.
    """
    d = lam.shape[0]
    n = Mc.shape[0]
    nblocks = (d + BLOCK - 1) // BLOCK
    part = np.zeros((nblocks, n + 1))
    values = np.zeros(nblocks)
    for blk in nb.prange(nblocks):
        k0 = blk * BLOCK
        values[blk] = _vjp_block(lam, Mc, Nc, R, sc, P0, dMc, dNc, dR, dsc, offsets, dP0,
                                 mean, weight, keep, normal, code, Pbar0, hbar0,
                                 work[nb.get_thread_id()], k0, min(d, k0 + BLOCK) - k0,
                                 part[blk])
    for t in range(n + 1):
        acc = 0.0
        for blk in range(nblocks):
            acc += part[blk, t]
        grad[t] = acc
    return values.sum()
