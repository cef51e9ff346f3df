r"""GITS: noise levels chosen by dynamic programming on a denoiser's own teacher trajectories.

A network-aware competitor to the spectrum's optimised schedules (Chen et al. 2024, "On the
Trajectory Regularity of ODE-based Diffusion Sampling", ICML), following the procedure of
their code's ``gits_utils.get_dp_list`` and ``dp`` as read, not checked against it (it is
torch research code, not an installable library). The procedure, on VE levels
(k-diffusion's convention):

1. a fine teacher grid ``t_0 > t_1 > ... > t_{N-1}`` (Karras et al.'s rho = 7 ramp from
   ``sigma_max`` to ``sigma_min``, N = 60 by default);
2. warm-up trajectories: ``n`` starts ``x ~ N(0, t_0^2)`` run by a teacher sampler through
   the grid (``heun`` by default), keeping the state ``x_i`` at every ``t_i`` and the
   probability-flow derivative ``d_i = (x_i - D(x_i, t_i)) / t_i`` there;
3. the cost of one Euler jump from grid level i to level j > i: ``C[i, j] = mean_n ||x_i +
   (t_j - t_i) d_i - x_j||_2`` (the error of the student's step against the teacher);
4. dynamic programming: K = S - 1 jumps from ``t_0`` to ``t_{N-1}`` through grid levels,
   minimising ``sum_k coeff^k C[i_k, i_{k+1}]`` (k = 0 first): ``coeff > 1`` (1.15 by
   default) weighs the later, less noisy jumps more, as GITS does.

The S levels ``t_{i_0} = sigma_max > ... > t_{i_K} = sigma_min`` are returned; k-diffusion's
samplers run them with the final 0 appended (S steps; the step onto 0 is the samplers' own
final denoising, which GITS's EDM samplers do not take). GITS's code also offers an L1 and a
"deviation" metric and an extra analytic first step (AFS); only the L2 metric is here, and no
AFS (docs/unet.md says so where the study uses it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from specsched.errors import InputError
from specsched.sampling.ksamplers import _ArrayKit
from specsched.schedules.conversions import sigmas_from_alphas_cumprod
from specsched.schedules.families import karras_alphas_cumprod
from specsched.theory.ksolvers import get_ksampler, resolve_options

__all__ = ["GITS_COEFF", "GITS_TEACHER_STEPS", "gits_cost_matrix", "gits_dp", "gits_sigmas"]

#: GITS's defaults: the teacher grid's size and the DP's cost coefficient.
GITS_TEACHER_STEPS = 60
GITS_COEFF = 1.15


def gits_dp(cost, num_levels: int, coeff: float = GITS_COEFF) -> np.ndarray:
    """Indices of the grid levels GITS's dynamic programme selects.

    Parameters
    ----------
    cost : ndarray of shape (N, N)
        ``cost[i, j]`` of one jump from grid level i to level j > i (the rest is unread).
    num_levels : int
        Levels to select, ``2 <= num_levels <= N``: K = num_levels - 1 jumps.
    coeff : float
        Weight growth per jump: the k-th jump (k = 0 first) costs ``coeff^k cost[i, j]``.

    Returns
    -------
    ndarray of shape (num_levels,), int64
        ``0 = i_0 < i_1 < ... < i_K = N - 1`` minimising ``sum_k coeff^k cost[i_k,
        i_{k+1}]`` (the first minimum in index order on ties).

    Raises
    ------
    InputError
        A non-square or non-finite ``cost``, ``num_levels`` out of range, ``coeff <= 0``.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise InputError(f"cost: expected a square matrix of at least 2 x 2, got {c.shape}",
                         param="cost")
    N = c.shape[0]
    if not np.all(np.isfinite(np.triu(c, 1))):
        raise InputError("cost: the jump costs (above the diagonal) must be finite",
                         param="cost")
    if not isinstance(num_levels, (int, np.integer)) or not 2 <= num_levels <= N:
        raise InputError(f"num_levels: expected an integer in [2, {N}], got {num_levels!r}",
                         param="num_levels")
    if not coeff > 0:
        raise InputError(f"coeff: expected a number > 0, got {coeff!r}", param="coeff")
    K = int(num_levels) - 1
    # V[k, i]: the least cost of reaching level N - 1 from level i in k jumps
    V = np.full((K + 1, N), np.inf)
    nxt = np.zeros((K + 1, N), dtype=np.int64)
    V[1, :N - 1] = c[:N - 1, N - 1]
    nxt[1, :] = N - 1
    for k in range(2, K + 1):
        for i in range(N - 1):
            j = np.arange(i + 1, N - 1)
            if j.size == 0:
                continue
            total = c[i, j] + coeff * V[k - 1, j]
            best = int(np.argmin(total))
            V[k, i], nxt[k, i] = total[best], j[best]
    if not np.isfinite(V[K, 0]):
        raise InputError(f"num_levels: {num_levels} levels do not fit a grid of {N}",
                         param="num_levels")
    path = [0]
    for k in range(K, 0, -1):
        path.append(int(nxt[k, path[-1]]))
    return np.array(path, dtype=np.int64)


def _teacher_trajectory(model, grid, x, spec, options):
    """States ``(N, n, d)`` and derivatives at every grid level from the start ``x``."""
    kit = _ArrayKit(np.concatenate([grid, [0.0]]), options, model, None)  # deterministic
    states, derivs = [x], []
    history = ()
    for i in range(grid.size):
        derivs.append((states[-1] - model(states[-1], grid[i])) / grid[i])
        if i + 1 < grid.size:
            x, history = spec.step(kit, i, states[-1], history)
            states.append(x)
    return np.stack(states), np.stack(derivs)


def gits_cost_matrix(model: Callable, grid, starts, teacher: str = "heun") -> np.ndarray:
    """GITS's cost matrix of Euler jumps against the teacher's trajectories (module doc).

    Parameters
    ----------
    model : callable
        VE denoiser ``model(x, sigma) -> x0_hat``, x of shape (n, d) float64
        (:class:`specsched.sampling.ksamplers.WienerModel`, a network wrapper).
    grid : ndarray of shape (N,)
        Teacher levels, strictly decreasing, > 0.
    starts : ndarray of shape (n, d)
        Warm-up starts at ``grid[0]`` (e.g. ``grid[0] * standard normal``).
    teacher : str
        A deterministic k-diffusion sampler (``heun``, ``dpm-2``, ``dpmpp-2m``, ...) with its
        default options.

    Returns
    -------
    ndarray of shape (N, N), float64
        ``C[i, j]`` for ``j > i``; 0 on and below the diagonal.

    Raises
    ------
    InputError
        A grid not strictly decreasing and positive, starts not of shape (n, d), or a
        stochastic teacher.
    """
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size < 2 or np.any(g <= 0) or np.any(np.diff(g) >= 0):
        raise InputError("grid: expected at least 2 noise levels > 0, strictly decreasing",
                         param="grid")
    x = np.asarray(starts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"starts: expected shape (n, d), got {x.shape}", param="starts")
    spec = get_ksampler(teacher)
    if spec.noise != "none":
        raise InputError(f"teacher: expected a deterministic sampler, got {teacher!r}",
                         param="teacher")
    states, derivs = _teacher_trajectory(model, g, x, spec, resolve_options(teacher))
    N = g.size
    C = np.zeros((N, N))
    for i in range(N - 1):
        for j in range(i + 1, N):
            jump = states[i] + (g[j] - g[i]) * derivs[i] - states[j]
            C[i, j] = np.mean(np.linalg.norm(jump, axis=1))
    return C


def gits_sigmas(model: Callable, dim: int, num_steps: int, *, n_warmup: int = 256,
                sigma_min: float = 0.002, sigma_max: float = 80.0,
                n_teacher: int = GITS_TEACHER_STEPS, coeff: float = GITS_COEFF,
                teacher: str = "heun", rng: np.random.Generator | None = None) -> np.ndarray:
    """GITS's ``num_steps`` noise levels for a denoiser (module docstring).

    Parameters
    ----------
    model : callable
        VE denoiser on arrays of shape (n, dim), as :func:`gits_cost_matrix`.
    dim : int
        Dimension of a sample (the model's input rows).
    num_steps : int
        Levels to select (S >= 2); the sampler then runs them with a final 0.
    n_warmup : int
        Warm-up trajectories.
    sigma_min, sigma_max : float
        Ends of the teacher grid (EDM's 0.002 and 80 by default).
    n_teacher : int
        Levels of the teacher grid (Karras rho = 7 ramp).
    coeff, teacher
        As in :func:`gits_dp` and :func:`gits_cost_matrix`.
    rng : numpy.random.Generator, optional
        Source of the warm-up starts.

    Returns
    -------
    ndarray of shape (num_steps,), float64
        Descending levels from ``sigma_max`` to ``sigma_min`` (no final 0).

    Raises
    ------
    InputError
        Bad sizes, levels or teacher (naming the argument).
    """
    if not isinstance(n_warmup, (int, np.integer)) or n_warmup < 1:
        raise InputError(f"n_warmup: expected an integer >= 1, got {n_warmup!r}",
                         param="n_warmup")
    # Karras's rho = 7 ramp, noisiest first (k-diffusion's get_sigmas_karras without its 0)
    grid = sigmas_from_alphas_cumprod(karras_alphas_cumprod(n_teacher, sigma_min,
                                                            sigma_max))[::-1].copy()
    rng = np.random.default_rng() if rng is None else rng
    starts = grid[0] * rng.standard_normal((n_warmup, dim))
    cost = gits_cost_matrix(model, grid, starts, teacher)
    return grid[gits_dp(cost, num_steps, coeff)]
