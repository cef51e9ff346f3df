r"""Closed forms of k-diffusion's samplers with the Wiener denoiser, derived from their steps.

docs/theory.md section 3. With the exact Wiener denoiser of ``N(m, diag(lambda))`` in VE form,
``D(x, sigma) - m = g (x - m)``, ``g = lambda / (lambda + sigma^2)`` per eigen-direction, and
every step of :mod:`specsched.theory.ksolvers` combines its inputs linearly, and preserves
constants (its coefficients sum to one), so the deviation from the data mean evolves by a
linear recursion on the sampler's state ``y = (x, history...)`` (``L <= 4`` entries):

    y_{i+1} = M_i y_i + N_i w_i,        w_i ~ N(0, R_i),

with ``M_i`` (``L' x L``) and ``N_i`` (``L' x K``) per direction and ``R_i`` the ``K x K``
covariance of the iteration's noise draws (identity for independent draws; for a Brownian
motion in sigma, ``R_ab = |I_a cap I_b| / sqrt(|I_a| |I_b|)`` of the draws' intervals).
**The matrices are not derived by hand**: each iteration's step function is run once on
:class:`Affine` values, linear forms in its inputs and draws, and ``M_i``, ``N_i`` are read
off them. So the closed form is the step of the sampler itself.

From ``x_0 ~ N(0, sigma_0^2)`` (``init="normal"``; deviation mean ``-m``; ``N(0, 1 +
sigma_0^2)`` for diffusers' ``unipc``, whose VP start is ``N(0, 1)``) or the marginal
``N(m, lambda + sigma_0^2)`` (``init="marginal"``), the generated law per direction has

    transfer H = h_N[x],  h_{i+1} = M_i h_i,  h_0 = 1
    var_gen    = P_N[x, x],  P_{i+1} = M_i P_i M_i^T + N_i R_i N_i^T,  P_0 = Var(x_0)
    mean_gen - m = -H m  (normal start; 0 for the marginal).

The gradient in the schedule is the adjoint of this recursion (reverse mode, O(N L^2 d)); the
partial derivatives of ``M_i, N_i, R_i`` in the sigmas iteration i reads
(:attr:`~specsched.theory.ksolvers.KSampler.stencil`) are taken by complex step (Squire &
Trapp 1998), the step function again. Iterations that take the same branches (the first
:attr:`~specsched.theory.ksolvers.KSampler.warmup`, while a multistep method's history
grows; the last, onto sigma = 0; all others) are run as one batch, the step then seeing
columns of levels: (1 + stencil size) x (warmup + 2) step evaluations per pass, each
O(S L d), whatever S; the recursion itself is O(S L^2 d).

The compiled path (``backend="numba"``) traces each batch once more cheaply: the step's
matrices are multilinear in the gains of its C <= 2 denoiser calls, so it runs on the
``2^C`` corners of the gains instead of the d directions (:func:`corner_system`), every
stencil offset perturbed in the same pass, and :mod:`specsched.theory.kkernels` interpolates
the corners per direction inside the compiled recursion and its adjoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.schedules.conversions import sigmas_from_alphas_cumprod
from specsched.theory.ksolvers import KSampler, get_ksampler, resolve_options
from specsched.theory.samplers import GeneratedGaussian, check_init

__all__ = [
    "Affine",
    "CornerSystem",
    "check_sigmas",
    "corner_system",
    "kclosed_form",
    "kclosed_form_vjp",
    "kclosed_loss_and_grad",
    "kdiffusion_sigmas",
]

_H = 1e-30  # complex-step size
#: :class:`Affine` key of the constant term (a calibrated denoiser's bias).
CONST = -1


class Affine:
    """A linear form ``sum_k c_k u_k`` in the basis of one iteration's inputs and draws.

    ``terms`` maps a basis index to its coefficients, an ndarray of shape (n_directions,)
    (float or complex). Supports ``+``, ``-`` and multiplication by a scalar or a
    per-direction array: what the steps of :mod:`specsched.theory.ksolvers` use.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: dict):
        self.terms = terms

    def __add__(self, other: Affine) -> Affine:
        out = dict(self.terms)
        for k, c in other.terms.items():
            out[k] = out[k] + c if k in out else c
        return Affine(out)

    def __sub__(self, other: Affine) -> Affine:
        return self + other * -1.0

    def __mul__(self, scale) -> Affine:
        return Affine({k: c * scale for k, c in self.terms.items()})

    __rmul__ = __mul__

    def __neg__(self) -> Affine:
        return self * -1.0


class _Levels:
    """``kit.sigmas`` for a batch of iterations ``i`` (an int array): ``levels[i + o]`` is the
    column (G, 1) of ``sigmas[i + o]``, complex-perturbed at the offset ``perturb`` (an int:
    every row; or an int array of shape (G,): each row at its own offset)."""

    def __init__(self, sigmas, members, perturb=None):
        self.sigmas, self.members = sigmas, members
        self.perturb = None if perturb is None else np.asarray(perturb)
        self.cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.sigmas.size

    def __getitem__(self, index):
        o = self._offset(index)
        col = self.cache.get(o)
        if col is None:
            idx = self.members + o
            if idx[0] < 0 or idx[-1] >= self.sigmas.size:  # unread outside (members sorted)
                np.minimum(np.maximum(idx, 0, out=idx), self.sigmas.size - 1, out=idx)
            col = self.sigmas[idx][:, None]
            if self.perturb is not None:
                col = col + 1j * _H * (self.perturb == o).reshape(-1, 1)
            self.cache[o] = col
        return col

    def _offset(self, index) -> int:
        """The offset ``o`` of ``index = members + o`` (an int: every member reads it)."""
        offsets = np.asarray(index) - self.members
        o = int(offsets.flat[0])
        if offsets.size > 1 and (offsets.min() != o or offsets.max() != o):
            raise IndexError("levels: a batch reads one offset at a time")
        return o


class _Kit:
    """The interface of the steps, on :class:`Affine` values, for a batch of G iterations."""

    def __init__(self, levels: _Levels, options, eigenvalues, noise: str, n_inputs: int):
        self.sigmas, self.options, self.lam, self.noise_kind = levels, options, eigenvalues, noise
        self.next_index = n_inputs
        self.intervals: list[tuple] = []

    def model(self, x: Affine, sigma) -> Affine:
        return x * (self.lam / (self.lam + sigma * sigma))

    def noise(self, sigma, sigma_next) -> Affine:
        k = self.next_index
        self.next_index += 1
        self.intervals.append((sigma, sigma_next))
        shape = np.broadcast_shapes(np.shape(sigma), (1, self.lam.size))
        return Affine({k: np.ones(shape, dtype=np.result_type(self.lam, sigma))})

    def noise_covariance(self, n_members: int):
        """``R`` (G, K, K) of this batch's draws (module docstring)."""
        n = len(self.intervals)
        if self.noise_kind != "brownian":
            return np.broadcast_to(np.eye(n), (n_members, n, n))
        cols = [None if iv is None else (np.broadcast_to(iv[0], (n_members, 1))[:, 0],
                                         np.broadcast_to(iv[1], (n_members, 1))[:, 0])
                for iv in self.intervals]  # None: a draw independent of all others
        dtype = np.result_type(*[c for iv in cols if iv is not None for c in iv], np.float64)
        R = np.empty((n_members, n, n), dtype=dtype)
        for a, ca in enumerate(cols):
            for b, cb in enumerate(cols):
                if ca is None or cb is None:
                    R[:, a, b] = 1.0 if a == b else 0.0
                    continue
                (a0, a1), (b0, b1) = ca, cb
                lo = _cmax(_cmin(a0, a1), _cmin(b0, b1))
                hi = _cmin(_cmax(a0, a1), _cmax(b0, b1))
                overlap = np.where(np.real(hi) > np.real(lo), hi - lo, 0.0 * hi)
                R[:, a, b] = overlap / np.sqrt((a0 - a1) * (b0 - b1))
        return R


class _CornerKit(_Kit):
    """:class:`_Kit` with the Wiener gains replaced by the corners of the unit cube.

    A step's matrices are multilinear in the gains ``g_c`` of its denoiser calls
    (``c = 0, 1, ...`` in the order called; each call's output ``g_c x`` enters the step
    linearly, so every ``g_c`` appears to degree at most one): with ``Q = 2^C`` corners
    ``b in {0, 1}^C``, ``M(g) = sum_b M(b) prod_c (g_c if b_c else 1 - g_c)``. The step runs
    once on the corners (the "direction" axis of the linear forms is the corner index ``q``,
    bit c of q giving ``b_c``) and records each call's noise level, from which the gains of
    any eigenvalue follow (:mod:`specsched.theory.kkernels`).
    """

    def __init__(self, levels: _Levels, options, noise: str, n_inputs: int, n_calls: int):
        super().__init__(levels, options, np.zeros(2**n_calls), noise, n_inputs)
        self.bits = [((np.arange(2**n_calls) >> c) & 1).astype(np.float64)[None, :]
                     for c in range(n_calls)]
        self.calls: list = []

    def model(self, x: Affine, sigma) -> Affine:
        c = len(self.calls)
        if c >= len(self.bits):  # KSampler.calls is wrong
            raise RuntimeError(f"a step calls the denoiser more than {len(self.bits)} times")
        self.calls.append(sigma)
        return x * self.bits[c]


class _CalibratedKit(_Kit):
    """:class:`_Kit` whose denoiser is a measured linear filter instead of the Wiener filter.

    ``D(x, sigma) - m = a(sigma) (x - m) + b(sigma) + sqrt(r(sigma)) w`` per direction, with
    ``(a, b, r)`` of a :class:`~specsched.sampling.calibration.LinearCalibration`
    interpolated linearly in ``log sigma`` (complex-step safe) and ``w`` a standard normal
    draw independent of every other (the residual as noise: its correlations with the input
    are nil by construction of the fit, those across calls are neglected).
    """

    def __init__(self, levels, options, eigenvalues, noise, n_inputs, calibration):
        super().__init__(levels, options, eigenvalues, noise, n_inputs)
        self.calibration = calibration

    def model(self, x: Affine, sigma) -> Affine:
        a, b, r = self.calibration.interpolate(sigma, name="calibration")
        k = self.next_index
        self.next_index += 1
        self.intervals.append(None)  # independent of the sampler's draws
        return x * a + Affine({CONST: b, k: np.sqrt(r)})


def _cmin(a, b):
    return np.where(np.real(a) <= np.real(b), a, b)


def _cmax(a, b):
    return np.where(np.real(a) >= np.real(b), a, b)


def _batches(n_iterations: int, warmup: int = 3):
    """Iterations that take the same branches: the first ``warmup`` alone (a multistep
    method's history still growing, :attr:`~specsched.theory.ksolvers.KSampler.warmup`), the
    final one (onto sigma = 0) alone, the rest together; in order of first iteration."""
    keys: dict[tuple, list[int]] = {}
    for i in range(n_iterations):
        keys.setdefault((min(i, warmup), i == n_iterations - 1), []).append(i)
    return [np.array(v) for v in keys.values()]


def _read_maps(kit, outputs, n_inputs: int, G: int, width: int, dtype):
    """``(M (G, L', L, width), N (G, L', K, width), R (G, K, K), c (G, L', width))`` of a
    traced step; ``c`` its constant term (:data:`CONST`)."""
    n_draws = kit.next_index - n_inputs
    M = np.zeros((G, len(outputs), n_inputs, width), dtype=dtype)
    N = np.zeros((G, len(outputs), n_draws, width), dtype=dtype)
    c = np.zeros((G, len(outputs), width), dtype=dtype)
    for j, out in enumerate(outputs):
        for k, coef in out.terms.items():
            if k == CONST:
                c[:, j] = coef
            elif k < n_inputs:
                M[:, j, k] = coef
            else:
                N[:, j, k - n_inputs] = coef
    return M, N, kit.noise_covariance(G), c


def _trace(spec: KSampler, kit, members, n_inputs: int, G: int, width: int, dtype):
    inputs = [Affine({k: np.ones((G, width), dtype=dtype)}) for k in range(n_inputs)]
    x, history = spec.step(kit, members, inputs[0], tuple(inputs[1:]))
    return _read_maps(kit, (x, *history), n_inputs, G, width, dtype)


def _batch_maps(spec: KSampler, sigmas, options, lam, members, n_inputs: int, perturb=None,
                calibration=None):
    """``(M (G, L', L, d), N (G, L', K, d), R (G, K, K), c (G, L', d))`` of the iterations
    ``members``; ``c`` the constant term (zero for the Wiener denoiser, whose steps preserve
    the data mean)."""
    levels = _Levels(sigmas, members, perturb)
    if calibration is None:
        kit = _Kit(levels, options, lam, spec.noise, n_inputs)
    else:
        kit = _CalibratedKit(levels, options, lam, spec.noise, n_inputs, calibration)
    dtype = complex if perturb is not None else np.float64
    return _trace(spec, kit, members, n_inputs, members.size, lam.size, dtype)


def _all_maps(spec, sigmas, options, lam, n_iterations: int, calibration=None):
    """Every iteration's ``(M, N, R, c)``, batch by batch; state sizes follow the iterations."""
    maps: list = [None] * n_iterations
    L = 1
    for members in _batches(n_iterations, spec.warmup):  # in order of first iteration
        M, N, R, c = _batch_maps(spec, sigmas, options, lam, members, L,
                                 calibration=calibration)
        for g, i in enumerate(members):
            maps[i] = (M[g], N[g], R[g], c[g])
        L = M.shape[1]  # the state leaving these iterations enters the next batch
    return maps


@dataclass(frozen=True)
class CornerSystem:
    """A sampler's recursion on given sigmas, as matrices at the corners of its gains.

    The input of the compiled kernels (:mod:`specsched.theory.kkernels`, whose docstring
    gives the interpolation ``M_i(lambda) = sum_q w_q(lambda) M[i, q]``); states are padded to
    L entries and draws to K (0 for a deterministic sampler; zero rows and columns change
    nothing).

    Attributes
    ----------
    M : ndarray of shape (n, Q, L, L), float64
        Corner state matrices of the n iterations, sampling order; ``Q = 2^C``.
    N : ndarray of shape (n, Q, L, K), float64
        Corner noise matrices.
    R : ndarray of shape (n, K, K), float64
        Covariance of each iteration's draws.
    call_sigmas : ndarray of shape (n, C), float64
        Noise level of each denoiser call (1.0 where an iteration makes fewer than C calls:
        no matrix depends on it).
    offsets : ndarray of shape (O,), int64
        The stencil (derivatives are in ``sigmas[i + offsets[o]]``).
    dM, dN, dR, d_call_sigmas : ndarrays of shapes (n, O, ...) or None
        Derivatives of the above in ``sigmas[i + offsets[o]]`` (complex step), when asked.
    """

    M: np.ndarray
    N: np.ndarray
    R: np.ndarray
    call_sigmas: np.ndarray
    offsets: np.ndarray
    dM: np.ndarray | None = None
    dN: np.ndarray | None = None
    dR: np.ndarray | None = None
    d_call_sigmas: np.ndarray | None = None


def corner_system(spec: KSampler, sigmas, options, derivatives: bool = False) -> CornerSystem:
    """The :class:`CornerSystem` of ``spec`` on ``sigmas`` (descending, final 0; trusted).

    Each batch of iterations that take the same branches (:func:`_batches`) runs the step
    once on the corners (:class:`_CornerKit`); with ``derivatives`` each iteration is
    repeated once per stencil offset, each copy complex-perturbed at its own offset, so one
    pass gives the values (real parts) and every partial derivative (imaginary parts / h).
    """
    n = sigmas.size - 1
    stencil = np.asarray(spec.stencil, dtype=np.int64)
    n_off = stencil.size if derivatives else 1
    traced, L = [], 1
    for members in _batches(n, spec.warmup):
        G = members.size
        rows = np.repeat(members, n_off)
        perturb = np.tile(stencil, G) if derivatives else None
        kit = _CornerKit(_Levels(sigmas, rows, perturb), options, spec.noise, L, spec.calls)
        dtype = complex if derivatives else np.float64
        M, N, R, _ = _trace(spec, kit, rows, L, rows.size, 2**spec.calls, dtype)  # c = 0
        calls = [np.asarray(c).reshape(-1) if np.size(c) == rows.size else np.full(rows.size, c)
                 for c in kit.calls]
        traced.append((members, M, N, R, calls))
        L = M.shape[1]
    Lmax = max(max(t[1].shape[1], t[1].shape[2]) for t in traced)
    K = max([t[2].shape[2] for t in traced] + [0])
    C = spec.calls  # a batch making fewer calls: its unused bits duplicate corners
    Q = 2**C
    shape = (n, n_off)
    Mo = np.zeros(shape + (Q, Lmax, Lmax), dtype=dtype)
    No = np.zeros(shape + (Q, Lmax, K), dtype=dtype)
    Ro = np.zeros(shape + (K, K), dtype=dtype)
    So = np.ones(shape + (C,), dtype=dtype)
    for members, M, N, R, calls in traced:
        G = members.size
        a, b, k = M.shape[1], M.shape[2], N.shape[2]
        Mo[members, :, :, :a, :b] = M.transpose(0, 3, 1, 2).reshape(G, n_off, Q, a, b)
        No[members, :, :, :a, :k] = N.transpose(0, 3, 1, 2).reshape(G, n_off, Q, a, k)
        Ro[members, :, :k, :k] = R.reshape(G, n_off, k, k)
        for c, col in enumerate(calls):
            So[members, :, c] = col.reshape(G, n_off)
    if not derivatives:
        return CornerSystem(Mo[:, 0], No[:, 0], Ro[:, 0], So[:, 0], stencil)

    def parts(a):
        return np.ascontiguousarray(a[:, 0].real), np.ascontiguousarray(a.imag / _H)

    (M0, dM), (N0, dN), (R0, dR), (S0, dS) = (parts(a) for a in (Mo, No, Ro, So))
    return CornerSystem(M0, N0, R0, S0, stencil, dM, dN, dR, dS)


def kdiffusion_sigmas(alphas_cumprod) -> np.ndarray:
    """k-diffusion's ``sigmas`` of a schedule: ``(sigma_S, ..., sigma_1, 0)``.

    :func:`specsched.schedules.sigmas_from_alphas_cumprod` (``sigma_s = sqrt((1 - ab_s) /
    ab_s)``, step 1 first) reversed, with the final 0 appended; ndarray of shape
    (n_steps + 1,), float64, descending when ``alphas_cumprod`` decreases. Not validated (an
    optimiser's iterate passes through here); :func:`specsched.schedules.export.export_k_diffusion`
    is the validated export of the same levels.
    """
    return np.concatenate([sigmas_from_alphas_cumprod(alphas_cumprod)[::-1], [0.0]])


def check_sigmas(sigmas, name: str = "sigmas") -> np.ndarray:
    """``sigmas`` as float64 if strictly decreasing, positive, finite and ending with 0.

    Raises
    ------
    InputError
        Naming ``name`` and what was expected.
    """
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise InputError(f"{name}: expected a 1-D array of at least 2 noise levels ending "
                         f"with 0, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or s[-1] != 0.0 or np.any(s[:-1] <= 0.0) \
            or np.any(np.diff(s) >= 0.0):
        raise InputError(f"{name}: expected finite noise levels sigma_0 > ... > sigma_(N-1) > 0 "
                         "followed by a final 0 (k-diffusion's order)")
    return s


def _start_variance(spec: KSampler, lam, sigma_0, init: str):
    """``Var(x_0)``: the marginal ``lambda + sigma_0^2``, or the sampler's normal start
    (:meth:`~specsched.theory.ksolvers.KSampler.start_std` squared: ``sigma_0^2``, or
    ``1 + sigma_0^2`` for a VP library); the derivative in ``sigma_0`` is ``2 sigma_0`` in
    every case."""
    if init == "marginal":
        return lam + sigma_0 * sigma_0
    return spec.start_std(sigma_0) ** 2 + 0.0 * lam


def _generated(spec: KSampler, H, var, sigma_0, init: str, offset=None) -> GeneratedGaussian:
    """The :class:`GeneratedGaussian` of the recursion's ``H`` (from the VE start) and var.

    ``transfer`` is reported from the library's own start variable: ``H`` for VE, ``H
    sqrt(1 + sigma_0^2)`` from diffusers' VP ``x_T`` (``x = x_T sqrt(1 + sigma_0^2)``), what a
    probe ``x_T = 1`` returns; ``mean_gain`` is ``-H`` either way (the start's mean is 0).
    """
    normal = init == "normal"
    scale = spec.start_std(sigma_0) if spec.param == "vp" else 1.0
    return GeneratedGaussian(transfer=H * scale, variance=var,
                             mean_gain=-H if normal else np.zeros_like(H),
                             mean_offset=offset)


def _forward(spec, sigmas, options, lam, init, keep_steps: bool, calibration=None):
    """Run the recursion: ``(H, var, offset, trace)``, the trace holding each iteration's
    ``(M, N, R, c, P, h, mu)`` when asked.

    ``mu`` is the state's mean apart from the start's (``-m``, carried by ``h``): ``mu_{i+1}
    = M_i mu_i + c_i`` from 0, so ``offset = mu_N[x]`` (0 unless the denoiser is calibrated).
    """
    P = _start_variance(spec, lam, sigmas[0], init)[None, None, :]
    h = np.ones((1, lam.size))
    mu = np.zeros((1, lam.size))
    trace = []
    for M, N, R, c in _all_maps(spec, sigmas, options, lam, sigmas.size - 1, calibration):
        if keep_steps:
            trace.append((M, N, R, c, P, h, mu))
        h = np.einsum("jkd,kd->jd", M, h)
        mu = np.einsum("jkd,kd->jd", M, mu) + c
        P = (np.einsum("jkd,kld,mld->jmd", M, P, M)
             + np.einsum("jad,ab,mbd->jmd", N, R, N))
    # a variance that rounds below 0 (a direction with lambda = 0, where the generated law
    # collapses: LMS on CIFAR-10's 9 zero eigenvalues) is 0
    return h[0], np.maximum(P[0, 0], 0.0), mu[0], trace


def _arguments(eigenvalues, sigmas, sampler, options, init, validate):
    """``(spec, options, sigmas, eigenvalues)`` of :func:`kclosed_form` checked once."""
    spec = get_ksampler(sampler)
    opts = resolve_options(sampler) if options is None else options
    check_init(init)
    s = check_sigmas(sigmas) if validate else np.asarray(sigmas, dtype=np.float64)
    return spec, opts, s, np.asarray(eigenvalues, dtype=np.float64)


KBACKENDS = ("numpy", "numba")


def _check_calibration(calibration, backend, lam):
    if calibration is None:
        return
    if _check_backend(backend) != "numpy":
        raise InputError("backend: a calibrated denoiser runs on the 'numpy' backend only",
                         param="backend")
    if calibration.gain.shape[1] != lam.size:
        raise InputError(f"calibration: has {calibration.gain.shape[1]} directions, the "
                         f"spectrum {lam.size}", param="calibration")


def _check_backend(backend: str) -> str:
    if backend not in KBACKENDS:
        raise InputError(f"backend: expected one of {KBACKENDS}, got {backend!r}",
                         param="backend")
    return backend


def _numba_forward(spec, system: CornerSystem, lam, sigma_0, init):
    """``(H, var)`` by :func:`specsched.theory.kkernels.corner_forward`."""
    from specsched.theory import kkernels  # numba: imported on first use

    lam = np.ascontiguousarray(lam)
    P0 = np.ascontiguousarray(_start_variance(spec, lam, sigma_0, init), dtype=np.float64)
    H, var = np.empty(lam.size), np.empty(lam.size)
    with kkernels.threads_for(lam.size * system.M.shape[0]):
        kkernels.corner_forward(lam, system.M, system.N, system.R, system.call_sigmas, P0, H,
                                var, _workspace(system))
    return H, var


def _workspace(system: CornerSystem):
    from specsched.theory import kkernels  # numba: imported on first use

    n, Q, L, _ = system.M.shape
    return kkernels.workspace(n, L, system.N.shape[3], Q, system.call_sigmas.shape[1])


def _corner_vjp(spec, cs: CornerSystem, s, lam, init, mean, weight, keep, code, Pbar0, hbar0):
    """Run :func:`specsched.theory.kkernels.corner_vjp`: ``(value, grad)``."""
    from specsched.theory import kkernels  # numba: imported on first use

    P0 = np.ascontiguousarray(_start_variance(spec, lam, s[0], init), dtype=np.float64)
    grad = np.empty(s.size)
    with kkernels.threads_for(lam.size * cs.M.shape[0]):
        value = kkernels.corner_vjp(lam, cs.M, cs.N, cs.R, cs.call_sigmas, P0, cs.dM, cs.dN,
                                    cs.dR, cs.d_call_sigmas, cs.offsets, 2.0 * float(s[0]),
                                    mean, weight, keep, init == "normal", code, Pbar0, hbar0,
                                    _workspace(cs), grad)
    grad[-1] = 0.0
    return float(value), grad


def _numba_vjp(spec, s, opts, lam, init, loss_partials):
    """:func:`kclosed_form_vjp` by the compiled kernels (one trace with derivatives; the loss
    of ``loss_partials`` between a forward pass and the fused one)."""
    cs = corner_system(spec, s, opts, derivatives=True)
    lam = np.ascontiguousarray(lam)
    H, var = _numba_forward(spec, cs, lam, s[0], init)
    gen = _generated(spec, H, var, s[0], init)
    value, d_var, d_gain = loss_partials(gen)
    hbar = -np.asarray(d_gain, dtype=np.float64) if init == "normal" else np.zeros(lam.size)
    zeros = np.zeros(lam.size)
    _, grad = _corner_vjp(spec, cs, s, lam, init, zeros, zeros, np.zeros(lam.size, bool), -1,
                          np.ascontiguousarray(d_var, dtype=np.float64),
                          np.ascontiguousarray(hbar))
    return value, gen, grad


def kclosed_loss_and_grad(eigenvalues, mean, sigmas, sampler: str, options: dict | None,
                          init: str, loss: str, weights=None, keep=None,
                          validate: bool = True):
    """A loss of a k-diffusion sampler's generated law and its gradient in ``sigmas``, fused.

    The compiled path of :func:`kclosed_form_vjp` with the loss terms inside the kernel (one
    forward and one reverse sweep, :func:`specsched.theory.kkernels.corner_vjp`).

    Parameters
    ----------
    eigenvalues, sigmas, sampler, options, init, validate
        As in :func:`kclosed_form`.
    mean : ndarray of shape (n_directions,), float64
        Data mean in the eigenbasis (zeros for centred data).
    loss : {"w2", "kl", "kl-data-gen"}
        ``W2^2``, ``KL(gen || data)`` or ``KL(data || gen)`` (docs/theory.md section 4).
    weights : ndarray of shape (n_directions,), optional
        Weight of each direction's term (quadrature nodes); 1 by default.
    keep : ndarray of bool, shape (n_directions,), optional
        Directions the KLs count (e.g. :func:`specsched.theory.losses.kl_mask`); all by
        default.

    Returns
    -------
    value : float
    grad : ndarray of shape (n_steps + 1,), float64
        ``d value / d sigmas``; 0 for the final 0.

    Raises
    ------
    InputError
        As :func:`kclosed_form`; an unknown loss.
    """
    from specsched.theory.kernels import LOSS_CODES  # numba: imported on first use

    spec, opts, s, lam = _arguments(eigenvalues, sigmas, sampler, options, init, validate)
    if loss not in LOSS_CODES:
        raise InputError(f"loss: expected one of {list(LOSS_CODES)}, got {loss!r}",
                         param="loss")
    lam = np.ascontiguousarray(lam)
    w = np.ones(lam.size) if weights is None else np.ascontiguousarray(weights, np.float64)
    keep = np.ones(lam.size, bool) if keep is None else np.ascontiguousarray(keep, bool)
    cs = corner_system(spec, s, opts, derivatives=True)
    empty = np.zeros(0)
    return _corner_vjp(spec, cs, s, lam, init, np.ascontiguousarray(mean, np.float64), w,
                       keep, LOSS_CODES[loss], empty, empty)


def kclosed_form(eigenvalues, sigmas, sampler: str, options: dict | None = None,
                 init: str = "normal", validate: bool = True,
                 backend: str = "numpy", calibration=None) -> GeneratedGaussian:
    """Generated Gaussian of a k-diffusion sampler with the exact Wiener denoiser.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    sigmas : ndarray of shape (n_steps + 1,), float64
        k-diffusion's noise levels, descending, final 0 (:func:`check_sigmas`).
    sampler : str
        A name of :data:`~specsched.theory.ksolvers.KSAMPLERS`.
    options : dict, optional
        Resolved options (:func:`resolve_options`); the sampler's defaults by default.
    init : {"normal", "marginal"}
        Start ``x ~ N(0, sigmas[0]^2)`` (k-diffusion's ``randn * sigmas[0]``) or the marginal.
    validate : bool
        Check ``sigmas`` (:func:`check_sigmas`); False trusts them (an optimiser's iterate
        may be non-monotone for a moment; the final 0 is still required).
    backend : {"numpy", "numba"}
        "numpy": the reference, the recursion on (n, L, L, d) arrays of the step traced over
        the directions; "numba": the compiled recursion on the step traced over the corners
        of its gains (:func:`corner_system`, :mod:`specsched.theory.kkernels`), the same
        numbers to rounding, far faster (no O(S d) Python-level work).
    calibration : LinearCalibration, optional
        A measured denoiser (:func:`specsched.sampling.calibration.calibrate_denoiser`, d
        directions in the order of ``eigenvalues``) in place of the Wiener filter: the
        network-calibrated closed form (gains, biases and residual variances interpolated in
        log sigma; the residuals as independent noise). NumPy backend only; the eigenvalues
        still set the marginal start.

    Returns
    -------
    GeneratedGaussian
        ``transfer`` H, ``variance`` and ``mean_gain`` (``-H``, normal start; 0 marginal).

    Raises
    ------
    InputError
        Unknown sampler, init or option; sigmas not as expected.

    Notes
    -----
    docs/theory.md section 3 (module docstring); the steps are k-diffusion 0.1.1.post1's.
    """
    spec, opts, s, lam = _arguments(eigenvalues, sigmas, sampler, options, init, validate)
    _check_calibration(calibration, backend, lam)
    if calibration is not None:
        H, var, offset, _ = _forward(spec, s, opts, lam, init, False, calibration)
        return _generated(spec, H, var, s[0], init, offset)
    if _check_backend(backend) == "numba":
        H, var = _numba_forward(spec, corner_system(spec, s, opts), lam, s[0], init)
    else:
        H, var, _, _ = _forward(spec, s, opts, lam, init, keep_steps=False)
    return _generated(spec, H, var, s[0], init)


def kclosed_form_vjp(eigenvalues, sigmas, sampler: str, options: dict | None, init: str,
                     loss_partials, validate: bool = True, backend: str = "numpy",
                     calibration=None):
    """A loss of the generated Gaussian and its gradient in ``sigmas`` (reverse mode).

    Parameters
    ----------
    eigenvalues, sigmas, sampler, options, init, validate, backend, calibration
        As in :func:`kclosed_form`.
    loss_partials : callable
        ``loss_partials(gen) -> (L, dL/d var_gen, dL/d mean_gain[, dL/d mean_error])``
        (ndarrays of shape (n_directions,)); the fourth, needed with a ``calibration``
        (whose mean error has a part ``mean_offset`` that does not scale with m), may be
        left out otherwise.

    Returns
    -------
    value : float
    gen : GeneratedGaussian
    grad : ndarray of shape (n_steps + 1,), float64
        ``dL / d sigmas``; the entry of the final 0 is 0 (it is not a free level).

    Notes
    -----
    Adjoint of the recursion of the module docstring: with ``Pbar``, ``hbar`` the adjoints
    leaving iteration i, ``Mbar = 2 Pbar M P + hbar h^T``, ``Nbar = 2 Pbar N R``,
    ``Rbar = N^T Pbar N``, then ``Pbar <- M^T Pbar M``, ``hbar <- M^T hbar``; the
    derivatives of ``(M, N, R)`` in the sigmas of the stencil by complex step.
    """
    spec, opts, s, lam = _arguments(eigenvalues, sigmas, sampler, options, init, validate)
    normal = init == "normal"
    _check_calibration(calibration, backend, lam)
    if calibration is None and _check_backend(backend) == "numba":
        return _numba_vjp(spec, s, opts, lam, init, loss_partials)
    H, var, offset, trace = _forward(spec, s, opts, lam, init, True, calibration)
    gen = _generated(spec, H, var, s[0], init, None if calibration is None else offset)
    value, d_var, d_gain, *rest = loss_partials(gen)
    if calibration is not None and not rest:
        raise InputError("loss_partials: with a calibration it must also return dL/d "
                         "mean_error (4 values)", param="loss_partials")
    n = s.size - 1
    grad = np.zeros(s.size)
    n_out = trace[-1][0].shape[0] if trace else 1  # entries of the final state
    Pbar = np.zeros((n_out, n_out, lam.size))
    Pbar[0, 0] = d_var
    hbar = np.zeros((n_out, lam.size))
    if normal:
        hbar[0] = -d_gain
    mubar = np.zeros((n_out, lam.size))
    if calibration is not None:
        mubar[0] = rest[0]
    adjoints: list = [None] * n
    for i in range(n - 1, -1, -1):
        M, N, R, c, P, h, mu = trace[i]
        adjoints[i] = (2.0 * np.einsum("jmd,mkd,kld->jld", Pbar, M, P)
                       + np.einsum("jd,kd->jkd", hbar, h)
                       + np.einsum("jd,kd->jkd", mubar, mu),
                       2.0 * np.einsum("jmd,mad,ab->jbd", Pbar, N, R),
                       np.einsum("jad,jmd,mbd->ab", N, Pbar, N),
                       mubar)
        Pbar = np.einsum("jkd,jmd,mld->kld", M, Pbar, M)
        hbar = np.einsum("jkd,jd->kd", M, hbar)
        mubar = np.einsum("jkd,jd->kd", M, mubar)
    # d(M, N, R)/d sigma_{i+o} by complex step, a batch of iterations and one offset at a time
    for members in _batches(n, spec.warmup):
        L = trace[int(members[0])][0].shape[1]
        Mbar = np.stack([adjoints[i][0] for i in members])
        Nbar = np.stack([adjoints[i][1] for i in members])
        Rbar = np.stack([adjoints[i][2] for i in members])
        cbar = np.stack([adjoints[i][3] for i in members])
        for o in spec.stencil:
            j = members + o
            valid = (j >= 0) & (j < n)  # not before the first level, nor the final 0
            if not np.any(valid):
                continue
            dM, dN, dR, dc = (np.imag(a) / _H for a in
                              _batch_maps(spec, s, opts, lam, members, L, perturb=o,
                                          calibration=calibration))
            contrib = (np.sum(Mbar * dM, axis=(1, 2, 3)) + np.sum(Nbar * dN, axis=(1, 2, 3))
                       + np.sum(Rbar * dR, axis=(1, 2)) + np.sum(cbar * dc, axis=(1, 2)))
            np.add.at(grad, j[valid], contrib[valid])
    # the start variance sigma_0^2 (+ lambda, or + 1 for a VP library): d / d sigma_0 = 2 sigma_0
    grad[0] += np.sum(Pbar[0, 0] * 2.0 * s[0])
    return value, gen, grad
