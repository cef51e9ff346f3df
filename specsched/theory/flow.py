r"""Flow-matching samplers that call the model more than once a step, and their closed forms.

Notation (docs/theory.md section 10). Flow matching (rectified flow, as in Stable Diffusion 3
and Flux): ``x_t = (1 - t) x_0 + t eps``, ``t`` in [0, 1], velocity ``v = eps - x_0``; with a
denoiser ``x0_hat`` the velocity estimate is ``v_hat = (x_t - x0_hat) / t``. A schedule is
``alphas_cumprod`` (step 1 the least noisy first) read as times ``t_s = sigma_s / (1 +
sigma_s)`` (:func:`specsched.schedules.fm_times_from_alphas_cumprod`): ``t_S = 1`` (pure noise,
``ab_S = 0``) is allowed, and the start is ``x ~ N(0, 1)`` at ``t_S``.

Euler on the velocity is a one-call update, the discrete sampler ``fm-euler`` of
:mod:`specsched.theory.samplers` (equal to DDIM on the same levels). Heun on the velocity,
diffusers' ``FlowMatchHeunDiscreteScheduler`` (s_churn = 0), is defined here once,
:func:`heun_step`: Euler to ``t'``, the velocity there, the average of the two; Euler onto
``t' = 0``. It drives both

- the Monte Carlo sampler (:func:`specsched.sampling.flow.sample_flow`), on arrays, and
- the closed form: with the Wiener denoiser ``x0_hat = m + g (x - (1 - t) m)``,
  ``g = (1 - t) lambda / ((1 - t)^2 lambda + t^2)`` (section 2, FM), the deviation
  ``e = x - (1 - t) m`` from the mean path has velocity ``(1 - g) e / t`` and the mean path
  is followed exactly, so each step multiplies ``e`` by a gain ``A_s(lambda)``: the step
  itself evaluated on ``e = 1`` (:func:`step_gain`). As for DDIM, ``H = prod_s A_s``,
  ``var_gen = H^2 v_S`` and ``mean_gen - m = -(1 - t_S) H m`` (normal start; 0 for the
  marginal start ``N((1 - t_S) m, (1 - t_S)^2 lambda + t_S^2)``).

Because the law is a product of per-step gains, each a function of two neighbouring levels,
the losses, gradients and Newton Hessians of :mod:`specsched.theory.curvature` apply to these
samplers unchanged (with the gain evaluated directly instead of from Mobius scalars).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from specsched.errors import InputError
from specsched.schedules.conversions import _fm_times
from specsched.theory.wiener import wiener_gain_coefficients

__all__ = ["PRODUCT_SAMPLERS", "ProductSampler", "get_product_sampler", "heun_step",
           "step_gain"]


def heun_step(x, t, t_next, velocity: Callable):
    """One step of Heun's method on the flow-matching velocity, ``t -> t_next``.

    ``x' = x + (t_next - t) (v(x, t) + v(x + (t_next - t) v(x, t), t_next)) / 2``; Euler,
    ``x + (t_next - t) v(x, t)``, onto ``t_next = 0`` (diffusers'
    ``FlowMatchHeunDiscreteScheduler.step`` with ``s_churn = 0``: two model calls a step, one
    on the last).

    Parameters
    ----------
    x : array or complex array
        The state at ``t`` (samples, or per-direction deviations for the closed form).
    t, t_next : float or array broadcasting against ``x``
        ``1 >= t > t_next >= 0``; ``t_next`` is 0 everywhere or nowhere.
    velocity : callable
        ``velocity(x, t) -> v_hat``.

    Returns
    -------
    array like ``x``
        The state at ``t_next``.
    """
    v = velocity(x, t)
    dt = t_next - t
    if np.all(np.real(t_next) == 0.0):
        return x + dt * v
    x_2 = x + dt * v
    return x + (0.5 * dt) * (v + velocity(x_2, t_next))


@dataclass(frozen=True)
class ProductSampler:
    """A deterministic flow-matching sampler whose closed form is a product of step gains.

    Attributes
    ----------
    name : str
        Command-line name.
    step : callable
        ``step(x, t, t_next, velocity) -> x_next`` (:func:`heun_step`).
    param : str
        ``"fm"``: states ``x_t = (1 - t) x_0 + t eps``, start ``N(0, 1)`` at ``t_S``.
    nfe_rule : str
        Model calls per schedule, in words.
    nfe : callable
        ``nfe(n_steps) -> int``.
    library : str
        Whose code is its specification (diffusers 0.42's scheduler class).
    function : str
        That class.
    description : str
    """

    name: str
    step: Callable
    param: str
    nfe_rule: str
    nfe: Callable
    library: str
    function: str
    description: str


PRODUCT_SAMPLERS: dict[str, ProductSampler] = {
    "fm-heun": ProductSampler(
        "fm-heun", heun_step, "fm",
        "two per step (the second at the next level), one on the last step (onto t = 0)",
        lambda n: 2 * n - 1, "diffusers", "FlowMatchHeunDiscreteScheduler",
        "flow matching: Heun on the velocity in t, Euler onto t = 0 (diffusers' "
        "FlowMatchHeunDiscreteScheduler), start N(0, 1)"),
}


def get_product_sampler(name: str) -> ProductSampler:
    """The :class:`ProductSampler` called ``name``; InputError naming the choices otherwise."""
    try:
        return PRODUCT_SAMPLERS[name]
    except (KeyError, TypeError):
        raise InputError(f"sampler: expected one of {list(PRODUCT_SAMPLERS)}, got "
                         f"{name!r}") from None


def _fm_gain(lam, t):
    """Wiener gain in FM states, ``(1 - t) lambda / ((1 - t)^2 lambda + t^2)``; complex-safe."""
    s, gamma, delta = wiener_gain_coefficients(t, "fm")
    return s * lam / (gamma * lam + delta)


def step_gain(spec: ProductSampler, eigenvalues, a, ap):
    """Per-direction gain ``A_s(lambda)`` of each step: the step run on the deviation 1.

    Parameters
    ----------
    spec : ProductSampler
    eigenvalues : ndarray of shape (n_directions, 1) or broadcasting, float64
    a, ap : ndarray of shape (n_steps,), float or complex
        ``ab_s`` and ``ab_{s-1}`` of each step (``ap = 1`` is the last step, onto ``t = 0``;
        ``a = 0`` is ``t = 1``). Complex values give complex-step derivatives.

    Returns
    -------
    ndarray of shape (n_directions, n_steps)
        ``e_{s-1} = A_s e_s`` (module docstring).
    """
    lam = np.asarray(eigenvalues)
    t, t_next = _fm_times(a), _fm_times(ap)

    def velocity(e, tt):  # the deviation's velocity under the Wiener denoiser
        return (1.0 - _fm_gain(lam, tt)) * e / tt

    last = np.real(ap) == 1.0
    shape = np.broadcast_shapes(lam.shape, np.shape(t))
    out = np.empty(shape, dtype=np.result_type(lam, t, float))
    one = np.ones(shape, dtype=out.dtype)
    if np.any(last):
        out[..., last] = spec.step(one[..., last], t[last], t_next[last], velocity)
    if np.any(~last):
        out[..., ~last] = spec.step(one[..., ~last], t[~last], t_next[~last], velocity)
    return out

