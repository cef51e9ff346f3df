"""Closed-form theory of diffusion samplers on Gaussian data (docs/theory.md sections 2-5).

- :mod:`~specsched.theory.wiener`: the Wiener (MMSE) denoiser per eigen-direction;
- :mod:`~specsched.theory.samplers`: DDIM-eta / DDPM as per-direction linear systems,
  transfer functions, generated mean and variance, and their reverse-mode gradient;
- :mod:`~specsched.theory.losses`: W2 and KL(gen || data) with per-direction terms;
- :mod:`~specsched.theory.objective`: evaluation and objective + gradient of a schedule.
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
    closed_form,
    get_sampler,
    resolve_eta,
    step_coefficients,
)
from specsched.theory.wiener import wiener_denoise, wiener_gain

__all__ = [
    "INITS",
    "KL_FLOOR",
    "LOSSES",
    "SAMPLERS",
    "GeneratedGaussian",
    "LossReport",
    "Sampler",
    "closed_form",
    "get_sampler",
    "evaluate_schedule",
    "loss_and_grad",
    "loss_summary",
    "loss_value",
    "resolve_eta",
    "step_coefficients",
    "wiener_denoise",
    "wiener_gain",
]
