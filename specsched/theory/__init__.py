"""Closed-form theory of diffusion samplers on Gaussian data (docs/theory.md sections 2-5).

- :mod:`~specsched.theory.wiener`: the Wiener (MMSE) denoiser per eigen-direction, and the
  one definition of its gain;
- :mod:`~specsched.theory.samplers`: each discrete sampler defined once by its update, and its
  closed form as a per-direction linear system (transfer function, generated mean and
  variance, reverse-mode gradient);
- :mod:`~specsched.theory.losses`: W2 and both KLs with per-direction terms;
- :mod:`~specsched.theory.objective`: evaluation and objective + gradient of a schedule;
- :mod:`~specsched.theory.kernels`: the same objective and gradient compiled with numba
  (imported on first use);
- :mod:`~specsched.theory.quadrature`: a large spectrum compressed into weighted nodes;
- :mod:`~specsched.theory.sde`: continuous-time VP solvers with the exact score;
- :mod:`~specsched.theory.unchained`: DDIM on unchained levels (diffusers' DDIMScheduler).
"""

from specsched.theory.losses import KL_FLOOR, LOSSES, LossReport
from specsched.theory.objective import (
    evaluate_schedule,
    loss_and_grad,
    loss_summary,
    loss_value,
)
from specsched.theory.samplers import (
    INITS,
    SAMPLERS,
    GeneratedGaussian,
    Sampler,
    StepGains,
    closed_form,
    get_sampler,
    linear_system,
    resolve_eta,
    step_coefficients,
    step_gains,
    step_scalars,
)
from specsched.theory.wiener import wiener_denoise, wiener_gain, wiener_gain_coefficients

__all__ = [
    "INITS",
    "KL_FLOOR",
    "LOSSES",
    "SAMPLERS",
    "GeneratedGaussian",
    "LossReport",
    "Sampler",
    "StepGains",
    "closed_form",
    "get_sampler",
    "evaluate_schedule",
    "linear_system",
    "loss_and_grad",
    "loss_summary",
    "loss_value",
    "resolve_eta",
    "step_coefficients",
    "step_gains",
    "step_scalars",
    "wiener_denoise",
    "wiener_gain",
    "wiener_gain_coefficients",
]
