"""Noise schedules: baseline families, spacings, conversions and the schedule file.

Convention (docs/theory.md section 1): a schedule is ``alphas_cumprod = (ab_1, ..., ab_S)``,
step 1 (least noisy) first, ``1 > ab_1 > ... > ab_S > 0``, variance preserving.
"""

from specsched.schedules.conversions import (
    alphas_cumprod_from_betas,
    alphas_cumprod_from_logsnr,
    alphas_cumprod_from_sigmas,
    as_alphas_cumprod,
    betas_from_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    sigmas_from_alphas_cumprod,
    validate_alphas_cumprod,
)
from specsched.schedules.families import (
    BASELINES,
    EDM_SIGMA_RANGE,
    SIGMA_BASELINES,
    SPACINGS,
    TRAINING_FAMILIES,
    baseline_alphas_cumprod,
    exponential_alphas_cumprod,
    karras_alphas_cumprod,
    kl_optimal_alphas_cumprod,
    logsnr_alphas_cumprod,
    nearest_training_timesteps,
    nearest_training_timesteps_with_error,
    sigma_range_from_bounds,
    spacing_indices,
    training_alphas_cumprod,
)
from specsched.schedules.schedule import (
    SCHEDULE_FORMAT,
    SCHEDULE_VERSION,
    Schedule,
    schedule_schema,
)

__all__ = [
    "BASELINES",
    "EDM_SIGMA_RANGE",
    "SIGMA_BASELINES",
    "SCHEDULE_FORMAT",
    "SCHEDULE_VERSION",
    "SPACINGS",
    "TRAINING_FAMILIES",
    "Schedule",
    "alphas_cumprod_from_betas",
    "alphas_cumprod_from_logsnr",
    "alphas_cumprod_from_sigmas",
    "baseline_alphas_cumprod",
    "betas_from_alphas_cumprod",
    "exponential_alphas_cumprod",
    "karras_alphas_cumprod",
    "kl_optimal_alphas_cumprod",
    "logsnr_alphas_cumprod",
    "logsnr_from_alphas_cumprod",
    "nearest_training_timesteps",
    "nearest_training_timesteps_with_error",
    "schedule_schema",
    "sigma_range_from_bounds",
    "sigmas_from_alphas_cumprod",
    "spacing_indices",
    "training_alphas_cumprod",
    "as_alphas_cumprod",
    "validate_alphas_cumprod",
]
