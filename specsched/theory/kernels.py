r"""Compiled (numba) loss and gradient of every discrete sampler: one fused pass.

The NumPy reference (:func:`specsched.theory.samplers.closed_form_vjp`) builds (S, d) arrays
of gains and their derivatives. These kernels compute the same value and gradient
(docs/theory.md sections 3-5) with

- one forward and one backward sweep per block of eigen-directions, the blocks run in
  parallel (``numba.prange``) and the directions of a block in the inner, vectorisable loop;
- per-step inputs only: the scalars ``(alpha, beta, gamma, delta, q, ...)`` of each step
  and their partial derivatives in ``ab_s`` and ``ab_{s-1}``
  (:func:`specsched.theory.samplers.step_scalars`), so
  ``A_s(lambda) = (alpha_s lambda + beta_s) / (gamma_s lambda + delta_s)``, evaluated by
  :func:`specsched.theory.samplers.mobius` and differentiated by
  :func:`specsched.theory.samplers.mobius_derivative`: the same two functions as the NumPy
  reference, compiled here (``inline="always"``);
- float64 throughout and memory O(S x block) per thread, never O(S x d).

Every direction k carries a weight ``w_k`` (1 for an exact spectrum; quadrature weights for a
compressed one, :mod:`specsched.theory.quadrature`), so the loss is
``sum_k w_k term_k``. Losses: 0 = ``W2^2``, 1 = ``KL(gen || data)``, 2 = ``KL(data || gen)``;
the KL kernels skip the directions with ``keep[k] = False`` (below the eigenvalue floor).

numba is imported when this module is; compiled code is cached on disk after the first call.
numba (0.68) keys that cache on the contents of this file only, not on the functions it calls
from other files: :data:`COMPILED_CALLEES_SHA256` below ties this file to the source of
:func:`~specsched.theory.samplers.mobius` and :func:`~specsched.theory.samplers.mobius_derivative`
(``tests/test_kernels.py`` checks it), so an edit there forces an edit here and the cache is
rebuilt, in a checkout as after an upgrade.
"""

from __future__ import annotations

import contextlib
import math

import numba as nb
import numpy as np

from specsched.caches import numba_cache_enabled
from specsched.theory.samplers import mobius, mobius_derivative

#: First 16 hex digits of the sha256 of the source of ``samplers.mobius`` followed by
#: ``samplers.mobius_derivative``, which these kernels compile. Update it with those functions:
#: numba's cache sees only this file, and a stale compiled callee would go unnoticed.
COMPILED_CALLEES_SHA256 = "cb5991199f2cd7bf"

#: Directions per block: the inner, vectorised loop.
BLOCK = 64
LOSS_CODES = {"w2": 0, "kl": 1, "kl-data-gen": 2}
_FASTMATH = {"reassoc", "contract", "nsz"}
#: Cache the compiled kernels on disk, in a folder that can be written (specsched.caches).
_CACHE = numba_cache_enabled(__file__)


#: Magnitudes below this are flushed to zero in the running quantities (variance, transfer
#: function, prefix products, adjoints): subnormal numbers (H of a tiny eigenvalue after
#: many steps, or a product of two or three small factors) make every operation on them
#: ~100x slower. Keeping every factor at 0 or above 1e-100 keeps products of three of them
#: normal; a variance, gain or adjoint this small changes no loss or gradient in float64.
TINY = 1e-100


#: Below this many (iteration, direction) pairs the kernels run on one thread: a parallel
#: launch costs more than the work, and on a busy machine waiting for a descheduled worker
#: thread can cost 10x the work (measured: 26 s instead of 5 s for ``optimize --sampler
#: dpmpp-2m --nfe 10`` beside another process; the DDIM kernels on 106 quadrature nodes
#: likewise). Shared by these kernels and :mod:`specsched.theory.kkernels`.
PARALLEL_MIN_WORK = 200_000


@contextlib.contextmanager
def threads_for(work: int):
    """Run the kernels called inside on one thread when ``work`` (S x d) is small."""
    if work >= PARALLEL_MIN_WORK:
        yield
        return
    before = nb.get_num_threads()
    nb.set_num_threads(1)
    try:
        yield
    finally:
        nb.set_num_threads(before)


_mobius = nb.njit(inline="always", fastmath=_FASTMATH)(mobius)
_mobius_derivative = nb.njit(inline="always", fastmath=_FASTMATH)(mobius_derivative)


@nb.njit(inline="always", fastmath=_FASTMATH)
def _ftz(x):
    return x if abs(x) >= TINY else 0.0


@nb.njit(inline="always", fastmath=_FASTMATH)
def _term(code, lam, v, e, keep):
    """(value, d/dv, d/de) of one direction's loss term (see losses.py)."""
    if code == 0:
        sv = math.sqrt(v)
        sl = math.sqrt(lam)
        dv = 1.0 - sl / sv if sv > 0.0 else 0.0
        return e * e + (sv - sl) ** 2, dv, 2.0 * e
    if not keep:
        return 0.0, 0.0, 0.0
    if code == 1:
        r = v / lam
        return 0.5 * (r - 1.0 - math.log(r) + e * e / lam), 0.5 * (1.0 / lam - 1.0 / v), e / lam
    r = lam / v
    return (0.5 * (r - 1.0 - math.log(r) + e * e / v), 0.5 * (1.0 / v - (lam + e * e) / (v * v)),
            e / v)


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=_CACHE)
def loss_value_kernel(lam, mean, weight, keep, P, v_start, c_S, normal, code):
    """Loss value only (forward sweep).

    Parameters
    ----------
    lam, mean, weight : float64 arrays of shape (d,)
    keep : bool array of shape (d,)
        Directions counted by the KLs.
    P : float64 array of shape (6, S)
        Per-step scalars of every step, step 1 first (rows
        :data:`specsched.theory.samplers.SCALAR_ROWS`; the last, ``b``, is not read).
    v_start : float64 array of shape (d,)
        Variance of the start distribution.
    c_S : float
        Scale of the true mean at step S (sqrt(ab_S) for VP, 1 for VE).
    normal : bool
        Start from N(0, v_start) (mean error -c_S H m) rather than the true marginal.
    code : int
        0 = W2^2, 1 = KL(gen || data), 2 = KL(data || gen).

    Returns
    -------
    float
    """
    d = lam.shape[0]
    S = P.shape[1]
    nblocks = (d + BLOCK - 1) // BLOCK
    values = np.zeros(nblocks)
    for b in nb.prange(nblocks):
        k0 = b * BLOCK
        n = min(d, k0 + BLOCK) - k0
        v = v_start[k0:k0 + n].copy()
        H = np.ones(n)
        for s in range(S - 1, -1, -1):
            al, be, ga, de, q = P[0, s], P[1, s], P[2, s], P[3, s], P[4, s]
            for j in range(n):
                A, _ = _mobius(al, be, ga, de, lam[k0 + j])
                v[j] = _ftz(A * A * v[j] + q)
                H[j] = _ftz(H[j] * A)
        acc = 0.0
        for j in range(n):
            k = k0 + j
            e = -c_S * H[j] * mean[k] if normal else 0.0
            t, _, _ = _term(code, lam[k], v[j], e, keep[k])
            acc += weight[k] * t
        values[b] = acc
    return values.sum()


_WORKSPACES: dict = {}


def workspace(n_steps: int) -> np.ndarray:
    """Per-thread scratch of :func:`loss_grad_kernel`, reused across calls.

    Shape ``(n_threads, 4, n_steps, BLOCK)``: allocating it afresh in every call (or in every
    block) makes glibc map and unmap it each time, and the page faults cost more than the
    kernel (15 ms against 4 ms at S = 1000, d = 3072).
    """
    key = (nb.get_num_threads(), n_steps)
    work = _WORKSPACES.get(key)
    if work is None:
        _WORKSPACES.clear()
        work = _WORKSPACES[key] = np.empty((key[0], 4, n_steps, BLOCK))
    return work


def loss_grad(lam, mean, weight, keep, P, Pa, Pap, v_start, dv_start, c_S, dc_S, normal,
              code):
    """:func:`loss_grad_kernel` with its cached per-thread workspace: ``(value, grad)``."""
    grad = np.empty(P.shape[1])
    value = loss_grad_kernel(lam, mean, weight, keep, P, Pa, Pap, v_start, dv_start, c_S,
                             dc_S, normal, code, workspace(P.shape[1]), grad)
    return value, grad


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=_CACHE)
def loss_grad_kernel(lam, mean, weight, keep, P, Pa, Pap, v_start, dv_start, c_S, dc_S,
                     normal, code, work, grad):
    """Loss value and its gradient in ``alphas_cumprod`` (fused forward-backward sweep).

    Parameters
    ----------
    lam, mean, weight, keep, P, v_start, c_S, normal, code
        As in :func:`loss_value_kernel`.
    Pa, Pap : float64 arrays of shape (6, S)
        Partial derivatives of ``P`` in ``ab_s`` and in ``ab_{s-1}``.
    dv_start : float64 array of shape (d,)
        Derivative of the start variance in ``ab_S``.
    dc_S : float
        Derivative of ``c_S`` in ``ab_S``.
    work : float64 array of shape (n_threads, 4, S, BLOCK)
        Scratch (:func:`workspace`); each thread uses its own slice.
    grad : float64 array of shape (S,)
        Output: the gradient is written here. (A returned array would be boxed by a call
        into Python, where a pending Ctrl-C or SIGTERM raises inside numba's C code and
        surfaces as ``SystemError``; a float is boxed without one. docs/reliability.md.)

    Returns
    -------
    value : float
    """
    d = lam.shape[0]
    S = P.shape[1]
    nblocks = (d + BLOCK - 1) // BLOCK
    values = np.zeros(nblocks)
    part = np.zeros((nblocks, 2 * S + 1))  # d/d a_s, d/d ap_s, d/d ab_S via the start
    for b in nb.prange(nblocks):
        k0 = b * BLOCK
        n = min(d, k0 + BLOCK) - k0
        ws = work[nb.get_thread_id()]
        A = ws[0]
        iden = ws[1]
        vin = ws[2]
        suffix = ws[3]  # prod_{j > s} A_j
        v = v_start[k0:k0 + n].copy()
        H = np.ones(n)
        for s in range(S - 1, -1, -1):
            al, be, ga, de, q = P[0, s], P[1, s], P[2, s], P[3, s], P[4, s]
            for j in range(n):
                a_, r = _mobius(al, be, ga, de, lam[k0 + j])
                A[s, j] = a_
                iden[s, j] = r
                vin[s, j] = v[j]
                suffix[s, j] = H[j]
                v[j] = _ftz(a_ * a_ * v[j] + q)
                H[j] = _ftz(H[j] * a_)
        w = np.empty(n)  # adjoint of the variance leaving the current step
        g = np.empty(n)  # dL/d mean_gain
        acc = 0.0
        for j in range(n):
            k = k0 + j
            e = -c_S * H[j] * mean[k] if normal else 0.0
            t, dv, de_ = _term(code, lam[k], v[j], e, keep[k])
            acc += weight[k] * t
            w[j] = weight[k] * dv
            g[j] = weight[k] * de_ * mean[k]
        values[b] = acc
        prefix = np.ones(n)  # prod_{j < s} A_j
        for s in range(S):
            pa0, pa1, pa2, pa3, pa4 = Pa[0, s], Pa[1, s], Pa[2, s], Pa[3, s], Pa[4, s]
            pp0, pp1, pp2, pp3, pp4 = Pap[0, s], Pap[1, s], Pap[2, s], Pap[3, s], Pap[4, s]
            ga_ = 0.0
            gp_ = 0.0
            for j in range(n):
                x = lam[k0 + j]
                a_ = A[s, j]
                dLdA = 2.0 * w[j] * a_ * vin[s, j]
                if normal:
                    dLdA -= g[j] * c_S * prefix[j] * suffix[s, j]
                dA_da = _mobius_derivative(pa0, pa1, pa2, pa3, x, a_, iden[s, j])
                dA_dap = _mobius_derivative(pp0, pp1, pp2, pp3, x, a_, iden[s, j])
                ga_ += dLdA * dA_da + w[j] * pa4
                gp_ += dLdA * dA_dap + w[j] * pp4
                prefix[j] = _ftz(prefix[j] * a_)
                w[j] = _ftz(w[j] * a_ * a_)
            part[b, s] = ga_
            part[b, S + s] = gp_
        st = 0.0
        for j in range(n):
            st += w[j] * dv_start[k0 + j]
            if normal:
                st -= g[j] * dc_S * H[j]
        part[b, 2 * S] = st
    tot = np.zeros(2 * S + 1)
    for b in range(nblocks):
        tot += part[b]
    grad[:] = tot[:S]
    grad[:S - 1] += tot[S + 1:2 * S]  # ab_{s} is the "ap" of step s + 1
    grad[S - 1] += tot[2 * S]
    return values.sum()
