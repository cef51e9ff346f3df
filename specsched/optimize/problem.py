r"""Schedule optimisation: minimise a closed-form loss over a monotone alphas_cumprod.

Problem (Benita, Elad, Keshet 2025; docs/theory.md section 5). For a fixed number of steps S,
discrete sampler (any of :data:`specsched.theory.SAMPLERS`, VP or VE) and spectrum, minimise
``W2^2``, ``KL(gen || data)`` or ``KL(data || gen)`` over
``ab = (ab_1, ..., ab_S)`` (step 1 the least noisy) subject to

    ab_min <= ab_s <= ab_max,        ab_s - ab_{s+1} >= delta   (s = 1..S-1).

The methods share the objective and its analytic gradient
(:func:`specsched.theory.loss_and_grad`):

- ``"slsqp"`` (the paper's method): SciPy's SLSQP on ``ab`` itself, with the bounds and
  the linear monotonicity constraints. Poorly scaled for large S (levels near 1 and near
  0 differ by orders of magnitude): on CIFAR-10 at S = 200 it stops, reporting success, 2%
  above the optimum;
- ``"slsqp-logsnr"``: SLSQP on ``logsnr = log(ab / (1 - ab))`` with the same bounds and the
  same margin on ``ab`` (a smooth constraint in logSNR); well scaled, it reaches the
  optimum at every S tried;
- ``"lbfgs-logsnr"``: L-BFGS-B on the S + 1 logSNR increments ``r >= 0`` (box bounds),
  ``logsnr_s = L_max - (L_max - L_min) sum_{j<s} r_j / sum(r)``, which is monotone and inside
  the bounds by construction and reaches them exactly. Cheap per iteration (O(S)), it
  serves as an independent cross-check;
- ``"lbfgs-log-increments"``: L-BFGS on ``log r`` (the same map), far better conditioned:
  7x fewer iterations than ``"lbfgs-logsnr"`` at S = 1000;
- ``"newton-logsnr"``: Newton's method in logSNR (:mod:`specsched.optimize.newton`) for
  samplers that inject no noise, whose Hessian is tridiagonal plus low rank
  (:mod:`specsched.theory.curvature`): 14 to 26 iterations from every start at S = 1000;
- ``"auto"`` (default): ``slsqp-logsnr`` up to :data:`AUTO_SLSQP_MAX_STEPS` steps,
  ``newton-logsnr`` above for a deterministic sampler (white noise, no calibration) and
  ``lbfgs-log-increments`` for the others, where a spectrum of
  :data:`QUADRATURE_STAGE_MIN_DIM` to
  :data:`QUADRATURE_MIN_DIM` directions is optimised on :data:`QUADRATURE_STAGE_BINS`
  quadrature bins and the best start polished on the exact spectrum (docs/theory.md
  section 5, "Methods").

Several starts (baseline schedules projected into the feasible set) are run and the best
is kept; every start's final loss is reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import optimize as sopt
from scipy.special import expit
from threadpoolctl import threadpool_limits

from specsched.errors import InputError
from specsched.optimize.newton import newton_logsnr
from specsched.schedules import (
    BASELINES,
    SIGMA_BASELINES,
    TRAINING_FAMILIES,
    baseline_alphas_cumprod,
    karras_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    sigmas_from_alphas_cumprod,
    training_alphas_cumprod,
)
from specsched.schedules.flow import FM_BASELINES, fm_baseline_alphas_cumprod
from specsched.theory import (
    KL_FLOOR,
    LOSSES,
    loss_and_grad,
    loss_summary,
    loss_value,
    resolve_eta,
)
from specsched.theory.curvature import is_deterministic, loss_curvature
from specsched.theory.flow import PRODUCT_SAMPLERS
from specsched.theory.ksolvers import KSAMPLERS
from specsched.theory.quadrature import compress_spectrum, error_estimate
from specsched.theory.samplers import sampler_param

#: Default bounds: the range spanned by the baseline families (:data:`BASELINES`), so that no
#: baseline is ever better for lack of room: the least noisy level is Karras/EDM's
#: sigma_min = 0.002 (ab = 1/(1 + 0.002^2)), the noisiest cosine's last training level
#: (beta clipped at 0.999; ab = 2.43e-9). The last level dominates KL on spectra with tiny
#: eigenvalues: within the linear T = 1000 range alone (:data:`LINEAR_AB_MIN`,
#: :data:`LINEAR_AB_MAX`), DDIM's KL optimum on CIFAR-10 at S = 50 is 84 nats, Karras's 34.
AB_MAX = float(karras_alphas_cumprod(2)[0])
AB_MIN = float(training_alphas_cumprod("cosine")[-1])
#: The range of the T = 1000 linear training schedule (Ho et al. 2020): pass these as
#: ``ab_min``/``ab_max`` to stay on the levels a standard discrete-time model was trained on.
LINEAR_AB_MAX = float(training_alphas_cumprod("linear")[0])
LINEAR_AB_MIN = float(training_alphas_cumprod("linear")[-1])
#: Default monotonicity margin ``ab_s - ab_{s+1} >= DELTA``.
DELTA = 1e-7
#: Default starts of the multi-start search.
STARTS = ("linear", "cosine", "karras", "logsnr", "scaled_linear")
#: Default starts of a flow-matching sampler (:mod:`specsched.schedules.flow`).
FM_STARTS = ("fm-uniform", "sd3-shift", "shifted-cosine")
#: ``terminal``: the noisiest level is optimised within the bounds ("free"), or fixed at
#: pure noise, ``ab_S = 0`` (``t_S = 1``, zero terminal SNR: where flow-matching models start).
TERMINALS = ("free", "zero-snr")
METHODS = ("auto", "slsqp", "slsqp-logsnr", "lbfgs-logsnr", "lbfgs-log-increments",
           "newton-logsnr")
#: ``method="auto"`` uses SLSQP on logSNR up to this many steps; above, Newton's method in
#: logSNR for deterministic samplers and L-BFGS on the log-increments for the others
#: (SLSQP's dense quadratic subproblem costs O(S^3) per iteration).
AUTO_SLSQP_MAX_STEPS = 50
#: ``"newton-logsnr"`` builds its Hessian on a quadrature of this many bins (at most two nodes
#: each) when the spectrum it optimises on has more directions than nodes: O(S K^2) per
#: Newton step with K nodes; the value and gradient stay those of the spectrum optimised.
NEWTON_HESSIAN_BINS = 64
#: Newton iterations at most per start (CIFAR-10 DDIM W2: 9 to 26 from the five starts at
#: S = 200 and 1000).
NEWTON_MAXITER = 200
#: L-BFGS's gradient tolerance on the start-scaled objective, and the largest gradient at
#: which its "abnormal" line-search stop (no further decrease at rounding level) is accepted.
LBFGS_GTOL = 1e-9
LBFGS_ACCEPT_GRAD = 1e-6
#: L-BFGS also stops when an iteration lowers the start-scaled objective by less than this
#: (relative): at S = 1000 it otherwise creeps on for thousands of iterations at the 1e-10
#: level.
LBFGS_FTOL = 1e-12
#: L-BFGS history length (SciPy's default is 10; 50 needs ~25% fewer iterations at S = 1000).
LBFGS_MEMORY = 50
#: Lower bound of a log-increment (``"lbfgs-log-increments"``): an increment of e^-30 = 1e-13
#: of the logSNR span stands for 0 (a level on its bound).
LOG_INCREMENT_MIN = -30.0
#: Upper bound of a log-increment: the map is scale-free (increments are normalised), and the
#: bound keeps a line search's trial step from overflowing exp (seen with dpmpp-2m at S = 500).
LOG_INCREMENT_MAX = 30.0
#: ``"lbfgs-log-increments"`` restarts L-BFGS from its result (fresh memory) while a run lowers
#: the start-scaled objective by more than this (relative), at most MAX_RESTARTS runs.
RESTART_RTOL = 1e-11
#: ``"lbfgs-log-increments"`` raises every start increment to at least this fraction of their
#: mean.
START_INCREMENT_FLOOR = 1e-2
MAX_RESTARTS = 5
#: ``quadrature="auto"`` compresses spectra of more than this many directions ...
QUADRATURE_MIN_DIM = 20_000
#: ... into this many bins (at most two nodes each; ADSN, d = 196608: 216 nodes, loss error
#: below 1e-7 relative).
QUADRATURE_BINS = 512
#: ``quadrature="auto"`` with ``"lbfgs-log-increments"`` on a spectrum of more than this many
#: (and at most QUADRATURE_MIN_DIM) directions runs every start on QUADRATURE_STAGE_BINS bins
#: (CIFAR-10: 106 nodes), then polishes the best on the exact spectrum: at S = 1000 the
#: polish needs a few exact evaluations instead of hundreds.
QUADRATURE_STAGE_MIN_DIM = 1024
QUADRATURE_STAGE_BINS = 64
#: Iterations of that exact polish at most (CIFAR-10, S = 200 and 1000: it gains 7e-11 of the
#: objective; it is there for spectra the stage's nodes fit worse).
POLISH_MAXITER = 20
#: The staged multi-start stops once two converged starts agree to this (relative) on the
#: quadrature: the polish settles the last digits, and at S = 1000 L-BFGS's starts agree to
#: about 6e-9 there, so AGREE_RTOL (1e-9) ran all five starts.
STAGE_AGREE_RTOL = 1e-7
#: Multi-start stops when two converged starts agree to this relative tolerance.
AGREE_RTOL = 1e-9
#: Largest ``maxiter``: SciPy's SLSQP and L-BFGS-B take it as a C int.
MAX_ITER = 2**31 - 1
#: Levels on which :func:`specsched.theory.curvature.is_deterministic` probes a sampler.
_PROBE_LEVELS = np.array([0.99, 0.5, 0.01])
#: Training grid T of the baselines (and starts) on a discrete-time grid (docs/theory.md
#: section 1): at most this many steps when they are reported or used.
TRAINING_GRID = 1000


@dataclass(frozen=True)
class OptimizeResult:
    """Outcome of :func:`optimize_schedule`, in SciPy's ``OptimizeResult`` vocabulary.

    Attributes
    ----------
    x : ndarray of shape (n_steps,), float64
        The optimised ``alphas_cumprod``, step 1 (least noisy) first.
    fun : float
        The reported loss at ``x``: W2 (data units) for ``loss="w2"``, KL in nats for
        "kl" (gen || data) and "kl-data-gen" (data || gen).
    w2, kl, kl_data_gen : float
        All three losses at ``x``.
    success : bool
        The best start's optimiser reported convergence.
    status : int
        That optimiser's exit code (SciPy's SLSQP / L-BFGS-B codes).
    message : str
    nit, nfev : int
        Iterations and objective evaluations of the best start.
    method : str
    start : str
        Name of the start that gave ``x``.
    starts : dict[str, float]
        Final loss of every start, on the spectrum the optimiser saw (exact or quadrature).
    baselines : dict[str, dict[str, float]]
        ``{"name": {"w2": ..., "kl": ..., "kl_data_gen": ...}}`` for every baseline
        schedule at ``n_steps``.
    loss, sampler, eta, init : as passed (eta resolved: None for samplers without one).
    quadrature : dict or None
        When optimised on a compressed spectrum: ``bins``, ``nodes``, ``objective`` (the
        quadrature's value of the optimised objective at ``x``), ``error_estimate`` (its own
        estimate), ``objective_exact`` and ``error`` (the truth).
    bounds : tuple (ab_min, ab_max, delta)
    """

    x: np.ndarray
    fun: float
    w2: float
    kl: float
    kl_data_gen: float
    success: bool
    status: int
    message: str
    nit: int
    nfev: int
    method: str
    start: str
    loss: str
    sampler: str
    eta: float | None
    init: str
    bounds: tuple
    starts: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    quadrature: dict | None = None

    def summary(self) -> dict:
        """JSON-ready record of the optimiser (for the schedule file's ``optimizer`` field)."""
        return {
            "method": self.method,
            "success": bool(self.success),
            "status": int(self.status),
            "message": str(self.message),
            "nit": int(self.nit),
            "nfev": int(self.nfev),
            "start": self.start,
            "starts": {k: float(v) for k, v in self.starts.items()},
            "ab_min": self.bounds[0],
            "ab_max": self.bounds[1],
            "delta": self.bounds[2],
            "init": self.init,
            "quadrature": self.quadrature,
        }


def project_feasible(alphas_cumprod, ab_min=AB_MIN, ab_max=AB_MAX, delta=DELTA):
    """Move a schedule into the feasible set of the optimisation problem.

    Each ``ab_s`` is clipped to ``[ab_min + (S - s) delta, ab_max - (s - 1) delta]`` and
    then lowered where needed so that ``ab_s - ab_{s+1} >= delta``.

    Parameters
    ----------
    alphas_cumprod : ndarray of shape (n_steps,), step 1 first
    ab_min, ab_max, delta : float

    Returns
    -------
    ndarray of shape (n_steps,), float64
    """
    ab = np.asarray(alphas_cumprod, dtype=np.float64).copy()
    S = ab.size
    k = np.arange(S)
    ab = np.clip(ab, ab_min + (S - 1 - k) * delta, ab_max - k * delta)
    for s in range(1, S):
        ab[s] = min(ab[s], ab[s - 1] - delta)
    return ab


def check_bounds(num_steps: int, ab_min: float, ab_max: float, delta: float) -> None:
    """Check the bounds and margin of the optimisation problem before any work.

    Parameters
    ----------
    num_steps : int
        The largest number of steps S that will be optimised (feasibility needs
        ``ab_max - ab_min >= (S - 1) delta``).
    ab_min, ab_max : float
        Bounds on every level of ``alphas_cumprod``: ``0 < ab_min < ab_max < 1``.
    delta : float
        Monotonicity margin ``ab_s - ab_{s+1} >= delta``: finite, ``>= 0``.

    Raises
    ------
    InputError
        Naming the parameter at fault in ``param`` (``ab_min``, ``ab_max`` or ``delta``) and
        in the message's first word, which names no other parameter: the command line shows
        the flag (``--ab-min``, ``--ab-max``, ``--delta``) instead.
    """
    for name, value in (("ab_min", ab_min), ("ab_max", ab_max)):
        if not (isinstance(value, (int, float, np.floating, np.integer))
                and 0.0 < value < 1.0):
            raise InputError(f"{name}: expected a level of alphas_cumprod in the open interval "
                             f"(0, 1), got {value!r}", param=name)
    if not ab_min < ab_max:
        raise InputError(f"ab_max: expected a level above the lower bound ({float(ab_min)!r}), "
                         f"got {float(ab_max)!r}", param="ab_max")
    if not (isinstance(delta, (int, float, np.floating, np.integer)) and 0.0 <= delta < np.inf):
        raise InputError(f"delta: expected a finite margin >= 0, got {delta!r}", param="delta")
    if ab_max - ab_min < (num_steps - 1) * delta:
        room = int((ab_max - ab_min) // delta) + 1
        raise InputError(
            f"delta: {num_steps} steps with a margin of {float(delta)!r} do not fit between "
            f"the bounds [{float(ab_min)!r}, {float(ab_max)!r}] (room for {room} at most); "
            "lower the margin or widen the bounds", param="delta"
        )


def _check_problem(num_steps, loss, ab_min, ab_max, delta, method, maxiter, starts, spacings,
                   n_free=None):
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise InputError(f"steps: expected an integer >= 1, got {num_steps!r}", param="steps")
    unknown = [n for n in starts if n not in BASELINES and n not in FM_BASELINES]
    if unknown:
        raise InputError(f"starts: expected names of {BASELINES + FM_BASELINES}, got "
                         f"{unknown[0]!r}", param="starts")
    if num_steps > TRAINING_GRID and (spacings or set(starts) & set(TRAINING_FAMILIES)):
        raise InputError(
            f"steps: {num_steps} sampling steps do not fit on the training grid of T = "
            f"{TRAINING_GRID} timesteps of the baselines and starts; expected an integer in "
            f"[1, {TRAINING_GRID}]", param="steps")
    if loss not in LOSSES:
        raise InputError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if method not in METHODS:
        raise InputError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(maxiter, (int, np.integer)) or not 1 <= maxiter <= MAX_ITER:
        raise InputError(f"maxiter: expected an integer in [1, {MAX_ITER}], got {maxiter!r}",
                         param="maxiter")
    check_bounds(max(num_steps if n_free is None else n_free, 1), ab_min, ab_max, delta)


def _start_schedule(name, num_steps, fm_kwargs):
    """A start's alphas_cumprod: a baseline family, or a flow-matching baseline (``t_S = 1``)."""
    if name in FM_BASELINES:
        return fm_baseline_alphas_cumprod(name, num_steps, **fm_kwargs)
    return baseline_alphas_cumprod(name, num_steps, spacing="linspace")


def _loss_table(baselines: dict) -> dict:
    """The three losses of each baseline of :func:`baseline_losses` (schedules dropped)."""
    return {k: {n: v[n] for n in ("w2", "kl", "kl_data_gen")} for k, v in baselines.items()}


def _one_step_from_noise(lam, m, loss, method, kw, baselines, ab_min, ab_max, delta):
    """The :class:`OptimizeResult` of S = 1 from pure noise: the data mean, whatever the
    schedule (no level to choose)."""
    x = np.zeros(1)
    with np.errstate(divide="ignore", invalid="ignore"):  # the KLs of a point mass: inf
        report = loss_summary(lam, m, x, **kw)
    return OptimizeResult(
        x=x, fun=report[loss.replace("-", "_")], w2=report["w2"], kl=report["kl"],
        kl_data_gen=report["kl_data_gen"], success=True, status=0,
        message="one step from pure noise (t = 1): no level to optimise", nit=0, nfev=0,
        method=method, start="pure noise", loss=loss, sampler=kw["sampler"], eta=kw["eta"],
        init=kw["init"], bounds=(float(ab_min), float(ab_max), float(delta)), starts={},
        baselines=_loss_table(baselines))


def baseline_losses(eigenvalues, mean, num_steps, *, sampler="ddim", eta=None, init="normal",
                    spacings=("linspace",), kl_floor=KL_FLOOR, sigma_range=None, options=None,
                    calibration=None, noise=None, fm_kwargs=None):
    """W2 and both KLs of every baseline family at ``num_steps`` steps.

    A flow-matching sampler (``fm-euler``, ``fm-heun``) is compared with the flow-matching
    baselines instead (:data:`specsched.schedules.flow.FM_BASELINES`, ``t_S = 1``), built
    with ``fm_kwargs`` (``shift``, ``resolution``, ``tokens`` of
    :func:`specsched.schedules.flow.fm_baseline_times`).

    Families on the T = 1000 training grid are evaluated at each of ``spacings``
    (named ``"family/spacing"``); ``karras``, ``exponential``, ``kl_optimal`` and ``logsnr``
    have no spacing. The sigma baselines (:data:`specsched.schedules.SIGMA_BASELINES`) run
    between ``sigma_range = (sigma_min, sigma_max)``, EDM's 0.002 and 80 when None
    (:func:`specsched.schedules.sigma_range_from_bounds` gives the range of ``ab`` bounds).
    ``options``, ``calibration`` and ``noise`` as in
    :func:`specsched.theory.evaluate_schedule`; with a
    calibration, a baseline whose levels reach outside the calibrated sigma range (the
    closed form has no measured denoiser there) is reported with NaN losses and a ``note``.

    Returns
    -------
    dict[str, dict]
        ``{name: {"w2": float, "kl": float, "kl_data_gen": float,
        "alphas_cumprod": ndarray[, "note": str]}}``.
    """
    out = {}
    if sampler_param(sampler) == "fm":  # the flow-matching baselines, t_S = 1
        for name in FM_BASELINES:
            ab = fm_baseline_alphas_cumprod(name, num_steps, **(fm_kwargs or {}))
            with np.errstate(divide="ignore", invalid="ignore"):  # S = 1: the KLs are inf
                r = loss_summary(eigenvalues, mean, ab, sampler=sampler, eta=eta, init=init,
                                 kl_floor=kl_floor, options=options, noise=noise)
            out[name] = {**r, "alphas_cumprod": ab}
        return out
    for name in BASELINES:
        for spacing in spacings if name in TRAINING_FAMILIES else (None,):
            extra = {"sigma_range": sigma_range} if name in SIGMA_BASELINES else {}
            ab = baseline_alphas_cumprod(name, num_steps, spacing=spacing or "linspace",
                                         **extra)
            label = f"{name}/{spacing}" if spacing else name
            s = sigmas_from_alphas_cumprod(ab)
            if calibration is not None and not calibration.covers(s):
                lo, hi = float(calibration.sigmas[0]), float(calibration.sigmas[-1])
                out[label] = {"w2": np.nan, "kl": np.nan, "kl_data_gen": np.nan,
                              "alphas_cumprod": ab,
                              "note": f"levels {s.min():.4g} to {s.max():.4g} outside the "
                              f"calibrated range [{lo:.4g}, {hi:.4g}]"}
                continue
            r = loss_summary(eigenvalues, mean, ab, sampler=sampler, eta=eta, init=init,
                             kl_floor=kl_floor, options=options, calibration=calibration,
                             noise=noise)
            out[label] = {**r, "alphas_cumprod": ab}
    return out


def _full(ab, terminal: bool):
    """The schedule of optimised levels ``ab``, with the fixed ``ab_S = 0`` when ``terminal``."""
    return np.append(ab, 0.0) if terminal else ab


class _Objective:
    """Objective scaled by its value at the start; caches value and gradient per point.

    Line searches ask for values only, which cost about half of value + gradient.
    """

    def __init__(self, eigenvalues, mean, scale, terminal=False, **kw):
        self.args = (eigenvalues, mean)
        self.kw = kw
        self.scale = scale
        self.terminal = terminal  # a fixed last level ab_S = 0 after the optimised ones
        self.nfev = 0
        self._value_cache = (None, None)
        self._grad_cache = (None, None, None)

    def value(self, ab):
        x, v = self._grad_cache[:2]
        if x is not None and np.array_equal(ab, x):
            return v
        x, v = self._value_cache
        if x is None or not np.array_equal(ab, x):
            with np.errstate(all="ignore"):
                v = loss_value(*self.args, _full(ab, self.terminal), **self.kw) / self.scale
            self._value_cache = (np.array(ab, copy=True), v)
            self.nfev += 1
        return v

    def __call__(self, ab):
        """Value and gradient at ``ab``."""
        x, v, g = self._grad_cache
        if x is None or not np.array_equal(ab, x):
            with np.errstate(all="ignore"):
                v, g = loss_and_grad(*self.args, _full(ab, self.terminal), **self.kw)
            v, g = v / self.scale, (g[:-1] if self.terminal else g) / self.scale
            self._grad_cache = (np.array(ab, copy=True), v, g)
            self.nfev += 1
        return v, g


def _run_slsqp(obj, x0, ab_min, ab_max, delta, maxiter, ftol):
    S = x0.size
    cons = []
    if S > 1:
        D = np.zeros((S - 1, S))
        D[np.arange(S - 1), np.arange(S - 1)] = 1.0
        D[np.arange(S - 1), np.arange(1, S)] = -1.0
        cons = [{"type": "ineq", "fun": lambda x: D @ x - delta, "jac": lambda x: D}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sopt.minimize(
            obj.value, x0, jac=lambda x: obj(x)[1], method="SLSQP",
            bounds=[(ab_min, ab_max)] * S, constraints=cons,
            options={"maxiter": maxiter, "ftol": ftol},
        )
    x = project_feasible(res.x, ab_min, ab_max, delta)
    return x, bool(res.success), int(res.status), str(res.message), int(res.nit)


def _run_slsqp_logsnr(obj, x0, ab_min, ab_max, delta, maxiter, ftol):
    """SLSQP on logSNR: the same constraints as on ``ab``, far better scaled.

    The bounds map to logSNR bounds; the margin ``ab_s - ab_{s+1} >= delta`` stays exactly
    that, a smooth nonlinear constraint ``expit(y_s) - expit(y_{s+1}) >= delta``.
    """
    L_max = float(logsnr_from_alphas_cumprod(ab_max))
    L_min = float(logsnr_from_alphas_cumprod(ab_min))
    S = x0.size
    y0 = logsnr_from_alphas_cumprod(project_feasible(x0, ab_min, ab_max, delta))

    def fun(y):
        return obj.value(expit(y))

    def jac(y):
        ab = expit(y)
        return obj(ab)[1] * ab * (1.0 - ab)

    cons = []
    if S > 1:
        rows = np.arange(S - 1)

        def margin(y):
            ab = expit(y)
            return ab[:-1] - ab[1:] - delta

        def margin_jac(y):
            ab = expit(y)
            dab = ab * (1.0 - ab)
            J = np.zeros((S - 1, S))
            J[rows, rows] = dab[:-1]
            J[rows, rows + 1] = -dab[1:]
            return J

        cons = [{"type": "ineq", "fun": margin, "jac": margin_jac}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sopt.minimize(fun, y0, jac=jac, method="SLSQP", bounds=[(L_min, L_max)] * S,
                            constraints=cons, options={"maxiter": maxiter, "ftol": ftol})
    x = project_feasible(expit(res.x), ab_min, ab_max, delta)
    return x, bool(res.success), int(res.status), str(res.message), int(res.nit)


def _increment_objective(obj, levels):
    """The scaled objective and its gradient in the logSNR increments ``r`` (S + 1,), mapped
    to levels by ``levels`` (a :class:`_MarginMap`)."""
    span = levels.L_max - levels.L_min

    def fun(r):
        ab, w, dab = levels.levels(r)
        v, g_ab = obj(ab)
        g_w = np.zeros_like(w)  # logsnr_s depends on w_j for j < s
        g_w[:-1] = -span * np.cumsum((g_ab * dab)[::-1])[::-1]
        return v, (g_w - np.dot(w, g_w)) / r.sum()  # through w = r / sum(r)

    return fun


def _run_lbfgs_logsnr(obj, x0, ab_min, ab_max, delta, maxiter, gtol):
    """L-BFGS-B on the S + 1 logSNR increments ``r >= 0`` (box bounds), normalised to span.

    ``logsnr_s = L_max - (L_max - L_min) sum_{j<s} r_j / sum(r)``: monotone and within the
    bounds by construction, and ``r_0 = 0`` (``ab_1 = ab_max``) or ``r_S = 0``
    (``ab_S = ab_min``) are reachable exactly, as optima on the bounds need.
    """
    levels = _MarginMap(x0.size, ab_min, ab_max, 0.0)  # no margin: the plain expit map
    fun = _increment_objective(obj, levels)
    r0 = np.maximum(levels.increments(project_feasible(x0, ab_min, ab_max, delta)), 1e-9)
    res = sopt.minimize(fun, r0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * r0.size,
                        options={"maxiter": maxiter, "gtol": gtol, "ftol": LBFGS_FTOL,
                                 "maxls": 50, "maxcor": LBFGS_MEMORY})
    ab = project_feasible(levels.levels(res.x)[0], ab_min, ab_max, delta)  # restore the margin
    ok, msg = bool(res.success), str(res.message)
    grad_norm = float(np.max(np.abs(res.jac)))
    if not ok and res.nit < maxiter and grad_norm < LBFGS_ACCEPT_GRAD:
        # The line search cannot improve any more at rounding level: a stationary point.
        ok, msg = True, f"{msg} (accepted: max |gradient| {grad_norm:.1e} of the scaled loss)"
    return ab, ok, int(res.status), msg, int(res.nit)


class _MarginMap:
    """Monotone logSNR levels onto the feasible set, margin included (docs/theory.md
    section 5).

    ``ab_s = ab_min + (S - s) delta + kappa (expit(logsnr_s) - ab_min)`` with
    ``kappa = (ab_max - ab_min - (S - 1) delta) / (ab_max - ab_min)``: for any
    ``L_min <= logsnr_S <= ... <= logsnr_1 <= L_max`` every bound and every margin
    ``ab_s - ab_{s+1} >= delta`` holds, and every feasible schedule is reached, so the
    optimiser works on the feasible set itself: no projection afterwards moves its result.
    With ``delta = 0`` it is the plain map ``ab_s = expit(logsnr_s)`` of
    :func:`_run_lbfgs_logsnr`, whose levels closer than the margin are pushed apart after
    the optimisation.
    """

    def __init__(self, S, ab_min, ab_max, delta):
        self.L_max = float(logsnr_from_alphas_cumprod(ab_max))
        self.L_min = float(logsnr_from_alphas_cumprod(ab_min))
        self.ab_min = float(ab_min)
        self.offset = ab_min + (S - 1 - np.arange(S)) * delta
        self.kappa = (ab_max - ab_min - (S - 1) * delta) / (ab_max - ab_min)

    def levels(self, r):
        """``(ab, w, d ab / d logsnr)`` of increments ``r`` (S + 1,)."""
        w = r / r.sum()
        e = expit(self.L_max - (self.L_max - self.L_min) * np.cumsum(w[:-1]))
        return self.offset + self.kappa * (e - self.ab_min), w, self.kappa * e * (1.0 - e)

    def increments(self, x0):
        """Increments ``r`` of a feasible schedule (projected first)."""
        e = self.ab_min + (x0 - self.offset) / self.kappa if self.kappa > 0 else x0
        logsnr = np.clip(logsnr_from_alphas_cumprod(np.clip(e, 1e-300, 1 - 1e-16)),
                         self.L_min, self.L_max)
        return np.maximum(-np.diff(np.concatenate([[self.L_max], logsnr, [self.L_min]]))
                          / (self.L_max - self.L_min), 0.0)


def _run_lbfgs_log_increments(obj, x0, ab_min, ab_max, delta, maxiter, gtol,
                              start_floor=START_INCREMENT_FLOOR):
    """L-BFGS on the logarithms ``u = log r`` of the logSNR increments (docs/theory.md
    section 5).

    The increments map to levels as in :func:`_run_lbfgs_logsnr`, through
    :class:`_MarginMap` so that the margin holds by construction; a relative change of any
    increment costs the same: on CIFAR-10 it needs 7x fewer iterations at S = 1000 (128
    against 937) and 3x fewer at S = 200. An increment cannot reach 0: ``u >=``
    :data:`LOG_INCREMENT_MIN` stands for it. L-BFGS's stop on a relative decrease below
    :data:`LBFGS_FTOL` can come early on a plateau, so the run restarts from its result with
    a fresh memory until a restart gains less than :data:`RESTART_RTOL` (at most
    :data:`MAX_RESTARTS` runs).
    """
    levels = _MarginMap(x0.size, ab_min, ab_max, delta)
    fun_r = _increment_objective(obj, levels)

    def fun(u):
        r = np.exp(u)
        v, g = fun_r(r)
        return v, g * r  # through r = e^u

    r0 = levels.increments(project_feasible(x0, ab_min, ab_max, delta))
    # an increment at (or near) 0 has no gradient in u = log r: a cold start raises every one
    # to start_floor of the mean (a start on a bound would stay there); a polish keeps them
    u = np.log(np.maximum(r0, max(start_floor * r0.mean(), np.exp(LOG_INCREMENT_MIN))))
    bounds = [(LOG_INCREMENT_MIN, LOG_INCREMENT_MAX)] * u.size
    nit, best, res = 0, np.inf, None
    for _ in range(MAX_RESTARTS):
        res = sopt.minimize(fun, u, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": max(maxiter - nit, 1), "gtol": gtol,
                                     "ftol": LBFGS_FTOL, "maxls": 50,
                                     "maxcor": LBFGS_MEMORY})
        nit += int(res.nit)
        gained = best - float(res.fun)
        u, best = res.x, min(best, float(res.fun))
        if gained <= RESTART_RTOL * abs(best) or nit >= maxiter:
            break
    ab = project_feasible(levels.levels(np.exp(u))[0], ab_min, ab_max, delta)  # rounding
    ok, msg = bool(res.success), str(res.message)
    grad_norm = float(np.max(np.abs(res.jac)))
    if not ok and nit < maxiter and grad_norm < LBFGS_ACCEPT_GRAD:
        ok, msg = True, f"{msg} (accepted: max |gradient| {grad_norm:.1e} of the scaled loss)"
    return ab, ok, int(res.status), msg, nit



class _NewtonSetup(NamedTuple):
    """Where ``"newton-logsnr"`` takes its Hessian: the nodes (eigenvalues, mean, weights and
    KL mask) of :func:`specsched.theory.curvature.loss_curvature`, the loss options, and
    whether they are the nodes the objective is evaluated on (then the curvature's value and
    gradient serve as the objective's)."""

    eigenvalues: np.ndarray
    mean: np.ndarray | None
    kwargs: dict
    same_nodes: bool


def _newton_setup(obj_lam, obj_m, obj_kw, lam, m, loss, sampler, eta, init, kl_floor):
    """The Hessian's nodes: the objective's when they are few (a quadrature stage), else a
    :data:`NEWTON_HESSIAN_BINS`-bin quadrature of the spectrum."""
    kw = dict(loss=loss, sampler=sampler, eta=eta, init=init, kl_floor=kl_floor)
    if obj_lam.size <= 2 * NEWTON_HESSIAN_BINS + 2:
        return _NewtonSetup(obj_lam, obj_m, {**kw, **obj_kw}, True)
    q = compress_spectrum(lam, m, NEWTON_HESSIAN_BINS, kl_floor)
    return _NewtonSetup(q.eigenvalues, q.mean, {**kw, **q.loss_kwargs()}, False)


def _run_newton(obj, x0, ab_min, ab_max, delta, maxiter, setup, lbfgs_first, fallback=True,
                start_floor=START_INCREMENT_FLOOR):
    """Newton's method in logSNR (:mod:`specsched.optimize.newton`; docs/theory.md section 5,
    "Newton's method") from ``x0``.

    ``lbfgs_first``: start Newton from the end of :func:`_run_lbfgs_log_increments` (the KLs:
    from cold starts Newton's steps crawl through their landscape, from L-BFGS's end it
    converges in a few). ``fallback``: when Newton alone does not converge, rerun the start
    that way.
    """
    L_max = float(logsnr_from_alphas_cumprod(ab_max))
    L_min = float(logsnr_from_alphas_cumprod(ab_min))
    cache = {}

    def curvature(y):
        key = y.tobytes()
        if key not in cache:
            cache.clear()
            with np.errstate(all="ignore"):
                c = loss_curvature(setup.eigenvalues, setup.mean,
                                   np.append(y, -np.inf) if obj.terminal else y,
                                   **setup.kwargs).scaled(1.0 / obj.scale)
            cache[key] = c.without_last() if obj.terminal else c
        return cache[key]

    def fun(y):
        if setup.same_nodes:
            c = curvature(y)
            obj.nfev += 1
            return c.value, c.grad
        ab = expit(y)
        v, g = obj(ab)
        return v, g * ab * (1.0 - ab)

    nit0 = 0
    start = project_feasible(x0, ab_min, ab_max, delta)
    if lbfgs_first:
        start, ok0, status0, msg0, nit0 = _run_lbfgs_log_increments(
            obj, start, ab_min, ab_max, delta, maxiter, LBFGS_GTOL, start_floor)
    res = newton_logsnr(fun, curvature, logsnr_from_alphas_cumprod(start), L_min, L_max, delta,
                        maxiter=max(1, min(maxiter - nit0, NEWTON_MAXITER)))
    if not res.success and fallback and not lbfgs_first:
        x, ok, status, msg, nit = _run_newton(obj, x0, ab_min, ab_max, delta, maxiter, setup,
                                              True, False, start_floor)
        return x, ok, status, f"{msg} (after Newton alone: {res.message})", nit + res.nit
    # Newton accepts only decreasing steps: its point is never worse than its start
    x = project_feasible(expit(res.y), ab_min, ab_max, delta)  # rounding
    if not lbfgs_first:
        return x, res.success, 0 if res.success else 1, f"Newton: {res.message}", res.nit
    if res.success:
        return x, True, 0, f"L-BFGS ({nit0} iterations), then Newton: {res.message}", \
            nit0 + res.nit
    # an optimum on the margin (merging levels) stops Newton: L-BFGS's verdict stands
    return x, ok0, status0, f"{msg0}; then Newton: {res.message}", nit0 + res.nit


def optimize_schedule(
    eigenvalues,
    mean,
    num_steps: int,
    *,
    loss: str = "w2",
    sampler: str = "ddim",
    eta: float | None = None,
    init: str = "normal",
    ab_min: float = AB_MIN,
    ab_max: float = AB_MAX,
    delta: float = DELTA,
    method: str = "auto",
    starts=STARTS,
    spacings=("linspace",),
    maxiter: int = 1000,
    ftol: float = 1e-12,
    kl_floor: float = KL_FLOOR,
    x0=None,
    quadrature="auto",
    backend: str = "auto",
    agree_rtol: float | None = AGREE_RTOL,
    sigma_range=None,
    options=None,
    calibration=None,
    noise=None,
    terminal: str | None = None,
    fm_kwargs: dict | None = None,
) -> OptimizeResult:
    """Optimise a monotone alphas_cumprod schedule for a spectrum, sampler and loss.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,), float64
        Data variances ``lambda_k >= 0``.
    mean : ndarray of shape (n_directions,) or None
        Data mean in the eigenbasis (None: centred data).
    num_steps : int
        Number of sampling steps S >= 1.
    loss : {"w2", "kl", "kl-data-gen"}
        Minimised loss (W2 via ``W2^2``; KL(gen || data); KL(data || gen)).
    sampler : str
        A discrete sampler of :data:`specsched.theory.SAMPLERS` (VP or VE) or one of
        k-diffusion's (:data:`specsched.theory.ksolvers.KSAMPLERS`, on the schedule's sigmas).
    eta : float or None
        DDIM-eta stochasticity (0 DDIM, 1 DDPM beta-tilde); None: the sampler's own.
    init : {"normal", "marginal"}
        Start distribution of the reverse process.
    ab_min, ab_max, delta : float
        Bounds on every ``ab_s`` and the monotonicity margin (module docstring). Defaults:
        the range spanned by the baseline families (:data:`AB_MIN`, :data:`AB_MAX`), margin
        1e-7.
    method : {"auto", "slsqp", "slsqp-logsnr", "lbfgs-logsnr", "lbfgs-log-increments", \
"newton-logsnr"}
        See the module docstring; "slsqp" is the paper's SLSQP on ``ab``; "newton-logsnr"
        needs a sampler that injects no noise, white noise and no calibration.
    starts : sequence of str
        Baseline names to start from (projected into the feasible set), in this order; the
        best is kept (see ``agree_rtol``).
    spacings : sequence of str
        Spacings at which the baseline losses are reported.
    sigma_range : (float, float) or None
        ``(sigma_min, sigma_max)`` of the reported sigma baselines (``karras``,
        ``exponential``, ``kl_optimal``; :func:`baseline_losses`); None: EDM's 0.002 and 80.
        ``sigma_range_from_bounds(ab_min, ab_max)`` compares them on the optimiser's own
        range. The starts keep their defaults (they are projected into the bounds anyway).
    maxiter : int
        Iteration limit of each start.
    ftol : float
        SLSQP's tolerance on the change of the start-scaled objective (L-BFGS stops on
        :data:`LBFGS_GTOL` instead).
    kl_floor : float
        Relative eigenvalue floor of KL.
    x0 : ndarray of shape (n_steps,), optional
        An extra start (named "warm"), e.g. the optimum at a neighbouring step count
        interpolated by :func:`warm_start`.
    quadrature : "auto", int or None
        Optimise on a spectrum compressed into weighted nodes
        (:mod:`specsched.theory.quadrature`, the int is its number of bins): cost O(S K)
        instead of O(S d). "auto" uses :data:`QUADRATURE_BINS` bins when d exceeds
        :data:`QUADRATURE_MIN_DIM` (:data:`QUADRATURE_BINS` for k-diffusion's samplers, whose
        L-state recursion costs ~10x the DDIM kernel per direction), the exact spectrum
        otherwise; with ``"lbfgs-log-increments"`` (auto above
        :data:`AUTO_SLSQP_MAX_STEPS` steps) and :data:`QUADRATURE_STAGE_MIN_DIM` <
        d <= :data:`QUADRATURE_MIN_DIM` it runs the starts on
        :data:`QUADRATURE_STAGE_BINS` bins and polishes the best on the exact spectrum
        (at most :data:`POLISH_MAXITER` iterations, kept only if lower). None is always
        exact. The reported losses are always exact; ``result.quadrature`` holds the
        quadrature's own error estimate, or for a polished run the exact objective before
        and after the polish.
    backend : {"auto", "numpy", "numba"}
        Loss and gradient implementation (:func:`specsched.theory.loss_and_grad`).
    agree_rtol : float or None
        Stop the multi-start once two starts that converged reach the same objective to
        this relative tolerance (default :data:`AGREE_RTOL`): independent starts landing
        on one value is the evidence multi-start exists for. None runs every start.

    options : dict, optional
        Options of a k-diffusion sampler besides eta (``s_noise``, ``r``, ``solver_type``;
        :func:`specsched.theory.ksolvers.resolve_options`); a discrete sampler takes none.
    calibration : LinearCalibration, optional
        Optimise for a measured denoiser instead of the Wiener filter
        (:func:`specsched.sampling.calibration.calibrate_denoiser`; k-diffusion's samplers
        only): the network-calibrated closed form, on the exact spectrum (no quadrature), its
        levels within the calibrated sigma range (keep ``ab_min``/``ab_max`` inside it).
    noise : str, NoiseSpectrum or None
        The forward noise spectrum (:func:`specsched.theory.evaluate_schedule`; None is white):
        the schedule is optimised for that forward process, its losses measured in x. A
        coloured spectrum optimises on the exact spectrum (no quadrature: its nodes group
        directions by eigenvalue, which the noise weights would split).
    terminal : {"free", "zero-snr"} or None
        "zero-snr" fixes the last level at pure noise, ``ab_S = 0`` (``t_S = 1``, where
        flow-matching models start) and optimises the other S - 1 within the bounds; "free"
        optimises all S. None: "zero-snr" for a flow-matching sampler (``fm-euler``,
        ``fm-heun``), "free" otherwise. With "zero-snr" and S = 1 there is nothing to
        optimise: the result is the one step from pure noise.
    fm_kwargs : dict, optional
        ``shift``, ``resolution`` and ``tokens`` of the flow-matching baselines and starts
        (:func:`specsched.schedules.flow.fm_baseline_times`).

    Returns
    -------
    OptimizeResult
        Non-convergence is reported in ``success``/``message``, not raised.

    Raises
    ------
    InputError
        Invalid ``num_steps``, ``loss``, ``method``, ``sampler``, ``eta`` or ``maxiter``,
        bounds or margin out of range or infeasible (:func:`check_bounds`), a bad
        ``sigma_range`` (named ``sigma_min``/``sigma_max``), or an optimum that merges two
        steps (``delta = 0`` only).

    Notes
    -----
    Benita, Elad, Keshet (2025), "Spectral Analysis of Diffusion Models with Application to
    Schedule Design"; docs/theory.md section 5.
    """
    fm = sampler_param(sampler) == "fm"
    terminal = ("zero-snr" if fm else "free") if terminal is None else terminal
    if terminal not in TERMINALS:
        raise InputError(f"terminal: expected one of {TERMINALS}, got {terminal!r}",
                         param="terminal")
    zero = terminal == "zero-snr"
    if fm and tuple(starts) == STARTS:
        starts = FM_STARTS
    fm_kwargs = dict(fm_kwargs or {})
    _check_problem(num_steps, loss, ab_min, ab_max, delta, method, maxiter, starts, spacings,
                   num_steps - 1 if zero else num_steps)
    eta = resolve_eta(sampler, eta)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    m = None if mean is None else np.asarray(mean, dtype=np.float64)
    if noise is not None:
        from specsched.theory.noise import noise_spectrum

        noise = noise_spectrum(noise, lam)  # the one parse (a file is read once)
        noise = None if noise.is_white else noise
    newton_ok = (calibration is None and noise is None
                 and is_deterministic(sampler, _PROBE_LEVELS, eta))
    if method == "auto":  # a product sampler's gradient costs its Hessian: Newton at any S
        method = ("newton-logsnr" if sampler in PRODUCT_SAMPLERS
                  else "slsqp-logsnr" if num_steps <= AUTO_SLSQP_MAX_STEPS
                  else "newton-logsnr" if newton_ok else "lbfgs-log-increments")
    elif method == "newton-logsnr" and not newton_ok:
        raise InputError(
            f"method: newton-logsnr needs a sampler that injects no noise (ddim with eta = 0, "
            f"ddim-ve, fm-euler, fm-heun), white forward noise and no calibration; got sampler "
            f"{sampler!r}"
            f"{f' with eta = {eta:g}' if eta else ''}"
            f"{', a coloured noise spectrum' if noise is not None else ''}"
            f"{', a calibration' if calibration is not None else ''}; use "
            "lbfgs-log-increments", param="method")
    kw = dict(sampler=sampler, eta=eta, init=init, kl_floor=kl_floor, options=options,
              calibration=calibration, noise=noise)
    baselines = baseline_losses(lam, m, num_steps, spacings=spacings, sigma_range=sigma_range,
                                fm_kwargs=fm_kwargs, **kw)
    if zero and num_steps == 1:  # one step from pure noise: nothing to choose
        return _one_step_from_noise(lam, m, loss, method, kw, baselines, ab_min, ab_max, delta)
    n_bins, polish = (None, False) if calibration is not None or noise is not None else \
        _quadrature_plan(quadrature, lam.size, sampler, method)
    if n_bins is None:
        obj_lam, obj_m, obj_kw = lam, m, {}
    else:
        q = compress_spectrum(lam, m, n_bins, kl_floor)
        obj_lam, obj_m, obj_kw = q.eigenvalues, q.mean, q.loss_kwargs()
    newton = (_newton_setup(obj_lam, obj_m, obj_kw, lam, m, loss, sampler, eta, init, kl_floor)
              if method == "newton-logsnr" else None)
    named = [(name, _start_schedule(name, num_steps, fm_kwargs)) for name in starts]
    if x0 is not None:  # the warm start first: it usually needs the fewest iterations
        named.insert(0, ("warm", np.asarray(x0, dtype=np.float64)))
    if zero:  # the optimised levels: all but the fixed ab_S = 0
        named = [(name, ab[:-1]) for name, ab in named]
    with threadpool_limits(1, user_api="blas"):
        # SLSQP's BLAS threads spin between calls and starve the numba kernel's threads:
        # with them limited, S = 100 optimises 30x faster on 2 cores.
        okw = dict(loss=loss, backend=backend, terminal=zero, **kw, **obj_kw)
        stage_rtol = (max(agree_rtol, STAGE_AGREE_RTOL)
                      if polish and agree_rtol is not None else agree_rtol)
        best, start_losses = _multi_start(named, obj_lam, obj_m, okw, method, ab_min, ab_max,
                                          delta, maxiter, ftol, stage_rtol, newton=newton)
        if polish:  # the quadrature's optimum, polished on the exact spectrum
            staged = best
            okw = dict(loss=loss, backend=backend, terminal=zero, **kw)
            before = loss_value(lam, m, _full(staged.x, zero), loss=loss, backend=backend,
                                **kw)
            polished, _ = _multi_start([(staged.start, staged.x)], lam, m, okw, method, ab_min,
                                       ab_max, delta, POLISH_MAXITER, ftol, None, start_floor=0.0,
                                       newton=newton and newton._replace(same_nodes=False),
                                       polish=True)
            # the stage's verdict stands (the polish is capped); its schedule only if lower
            better = polished.value < before
            best = staged._replace(
                value=polished.value if better else before,
                x=polished.x if better else staged.x,
                message=f"{staged.message}; polished on the exact spectrum "
                        f"({polished.nit} iterations)",
                nit=staged.nit + polished.nit, nfev=staged.nfev + polished.nfev)
    _, name, x, ok, status, msg, nit, nfev = best
    _check_result_levels(x, ab_min, ab_max, delta)
    x = _full(x, zero)
    report = loss_summary(lam, m, x, **kw)
    value = report[loss.replace("-", "_")]
    if ok and not np.isfinite(value):  # never a NaN/inf loss reported as success
        ok, msg = False, f"the {loss} loss of the result is not finite ({value})"
    quad = None
    if polish:
        quad = {"bins": n_bins, "nodes": int(obj_lam.size), "polished": True,
                "objective_before_polish": float(before),
                "objective_exact": float(loss_value(lam, m, x, loss=loss, backend=backend,
                                                    **kw))}
    elif n_bins is not None:
        est = error_estimate(lam, m, x, n_bins, loss=loss, **kw)
        exact = loss_value(lam, m, x, loss=loss, backend=backend, **kw)
        quad = {"bins": n_bins, "nodes": int(obj_lam.size), "objective": est["value"],
                "error_estimate": est["error_estimate"], "objective_exact": exact,
                "error": abs(est["value"] - exact)}
    if loss == "w2":  # report W2, not the optimised W2^2
        start_losses = {k: float(np.sqrt(max(v, 0.0))) for k, v in start_losses.items()}
    return OptimizeResult(
        x=x, fun=value, w2=report["w2"], kl=report["kl"],
        kl_data_gen=report["kl_data_gen"], success=ok, status=status, message=msg, nit=nit,
        nfev=nfev, method=method, start=name, loss=loss, sampler=sampler, eta=eta, init=init,
        bounds=(float(ab_min), float(ab_max), float(delta)), starts=start_losses,
        baselines=_loss_table(baselines),
        quadrature=quad,
    )


def _check_result_levels(x, ab_min, ab_max, delta):
    """Raise InputError if the optimum merges steps (possible only with ``delta = 0``)."""
    same = np.flatnonzero(np.diff(x) >= 0)
    if same.size:
        i = int(same[0]) + 1
        raise InputError(
            f"delta: with a margin of {delta:g} the optimum within the bounds "
            f"[{float(ab_min)!r}, {float(ab_max)!r}] merges steps {i} and {i + 1} "
            f"(alphas_cumprod = {float(x[i - 1])!r}); a schedule needs strictly decreasing "
            f"levels: pass a margin > 0 (default {DELTA:g}) or widen the bounds", param="delta"
        )


class _Run(NamedTuple):
    """One optimiser run: its objective on the spectrum it saw, start name, schedule and
    SciPy's report."""

    value: float
    start: str
    x: np.ndarray
    success: bool
    status: int
    message: str
    nit: int
    nfev: int


def _multi_start(named, lam, m, okw, method, ab_min, ab_max, delta, maxiter, ftol,
                 agree_rtol, start_floor=START_INCREMENT_FLOOR, newton=None, polish=None):
    """Run every start (or until two converged ones agree); the best and all starts' values.

    ``newton``: the :class:`_NewtonSetup` of ``"newton-logsnr"``; ``polish``: not None when
    this run polishes a stage's optimum (Newton then goes straight from it, no fallback).
    """
    best, values, agreed = None, {}, []
    kw = {k: v for k, v in okw.items() if k != "terminal"}
    terminal = okw.get("terminal", False)
    for name, start in named:
        start = project_feasible(start, ab_min, ab_max, delta)
        scale = max(loss_value(lam, m, _full(start, terminal), **kw), 1e-300)
        obj = _Objective(lam, m, scale, terminal, **kw)
        if method == "slsqp":
            x, ok, status, msg, nit = _run_slsqp(obj, start, ab_min, ab_max, delta, maxiter,
                                                 ftol)
        elif method == "slsqp-logsnr":
            x, ok, status, msg, nit = _run_slsqp_logsnr(obj, start, ab_min, ab_max, delta,
                                                        maxiter, ftol)
        elif method == "lbfgs-logsnr":
            x, ok, status, msg, nit = _run_lbfgs_logsnr(obj, start, ab_min, ab_max, delta,
                                                        maxiter, LBFGS_GTOL)
        elif method == "newton-logsnr":
            x, ok, status, msg, nit = _run_newton(obj, start, ab_min, ab_max, delta, maxiter,
                                                  newton, okw["loss"] != "w2" and not polish,
                                                  not polish, start_floor)
        else:
            x, ok, status, msg, nit = _run_lbfgs_log_increments(obj, start, ab_min, ab_max,
                                                                delta, maxiter, LBFGS_GTOL,
                                                                start_floor)
        value = obj.value(x) * scale
        values[name] = value
        if best is None or value < best.value:
            best = _Run(value, name, x, ok, status, msg, nit, obj.nfev)
        if agree_rtol is not None and ok:
            if any(abs(value - v) <= agree_rtol * abs(v) for v in agreed):
                break
            agreed.append(value)
    return best, values


def _quadrature_plan(quadrature, d, sampler, method):
    """``(bins, polish)``: the quadrature the optimiser runs on, and whether its optimum is
    then polished on the exact spectrum (``quadrature="auto"`` with
    ``"lbfgs-log-increments"`` on a spectrum of :data:`QUADRATURE_STAGE_MIN_DIM` to
    :data:`QUADRATURE_MIN_DIM` directions)."""
    bins = _quadrature_bins(quadrature, d, sampler)
    staged = (isinstance(quadrature, str) and quadrature == "auto"
              and method in ("lbfgs-log-increments", "newton-logsnr")
              and QUADRATURE_STAGE_MIN_DIM < d <= QUADRATURE_MIN_DIM)
    return (QUADRATURE_STAGE_BINS, True) if staged else (bins, False)


def _quadrature_bins(quadrature, d, sampler="ddim"):
    if quadrature is None:
        return None
    if quadrature == "auto":
        # k-diffusion's samplers: an L-state recursion, ~10x the DDIM kernel's work per
        # direction; compress from QUADRATURE_BINS up
        threshold = QUADRATURE_BINS if sampler in KSAMPLERS else QUADRATURE_MIN_DIM
        return QUADRATURE_BINS if d > threshold else None
    if isinstance(quadrature, (int, np.integer)) and quadrature >= 1:
        return int(quadrature)
    raise InputError(f"quadrature: expected 'auto', None or a number of bins >= 1, "
                     f"got {quadrature!r}")


def warm_start(alphas_cumprod, num_steps: int) -> np.ndarray:
    """Resample a schedule to ``num_steps`` steps, linearly in logSNR over step position.

    Parameters
    ----------
    alphas_cumprod : ndarray of shape (n,), step 1 first
        E.g. the optimum at a neighbouring step count.
    num_steps : int

    Returns
    -------
    ndarray of shape (num_steps,), float64
        A start for :func:`optimize_schedule` (``x0``); step 1 and step S keep the end levels.
    """
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    if ab.size == 1 or num_steps == 1:
        return np.full(num_steps, ab[-1])
    pos = np.linspace(0.0, 1.0, ab.size)
    new = np.linspace(0.0, 1.0, num_steps)
    return expit(np.interp(new, pos, logsnr_from_alphas_cumprod(ab)))
