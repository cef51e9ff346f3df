"""Torch-free diffusion samplers over NumPy (or array-API) arrays.

- :mod:`~specsched.sampling.samplers`: DDIM-eta, DDPM (beta-tilde and "large" beta) in VP,
  DDIM-VE and DDPM-VE (SMLD ancestral), driven by a schedule (``alphas_cumprod``, step 1
  least noisy first) and a denoiser ``denoise(x, level) -> x0_hat`` that predicts x0;
- :mod:`~specsched.sampling.ksamplers`: k-diffusion's samplers (and diffusers' unipc) on
  arrays, running the very steps of :mod:`specsched.theory.ksolvers` the closed form is read
  from, one batch (``sample_k``) or batch by batch (``sample_k_batches``);
- :mod:`~specsched.sampling.denoisers`: exact denoisers (Wiener filter of a Spectrum, under
  white or coloured forward noise; Gaussian-mixture posterior mean) and the eps <-> x0
  wrappers;
- :mod:`~specsched.sampling.colour`: coloured forward noise in the samplers (``noise=``,
  docs/theory.md section 9): ``C^(1/2) z`` draws, FANS' per-direction DDIM-eta steps;
- :mod:`~specsched.sampling.stats`: empirical W2 against the data Gaussian with a Monte
  Carlo standard error;
- :mod:`~specsched.sampling.calibration`: a denoiser's (a network's) effective gain, bias
  and residual variance per eigen-direction, measured on a grid of noise levels;
- :mod:`~specsched.sampling.gits`: GITS (Chen et al. 2024), noise levels chosen by dynamic
  programming on a denoiser's own teacher trajectories, the network-aware competitor;
- ``specsched sample`` is :mod:`specsched.cli.sample`.
"""

from specsched.sampling.denoisers import (
    GaussianMixtureDenoiser,
    WienerDenoiser,
    eps_from_x0,
    x0_from_eps,
)
from specsched.sampling.samplers import (
    SAMPLER_NAMES,
    as_alphas_cumprod,
    sample,
    sample_batches,
    step,
)
from specsched.sampling.stats import EmpiricalW2, RunningMoments, empirical_w2

__all__ = [
    "SAMPLER_NAMES",
    "EmpiricalW2",
    "GaussianMixtureDenoiser",
    "RunningMoments",
    "WienerDenoiser",
    "as_alphas_cumprod",
    "empirical_w2",
    "eps_from_x0",
    "sample",
    "sample_batches",
    "step",
    "x0_from_eps",
]
