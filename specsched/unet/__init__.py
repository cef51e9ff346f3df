"""Reference DDPM U-Net: training, and sampling through specsched's torch-free sampler.

Optional extra: ``pip install torch==2.13.0`` then ``pip install -e ".[unet]"``. Importing
this package does not import torch; the submodules that need it do (:mod:`.model`,
:mod:`.denoiser`, the training loop in :mod:`.train`), and :func:`require_torch` turns a
missing torch into an :class:`~specsched.errors.InputError` saying how to install it.

- :mod:`~specsched.unet.model`: :class:`UNet` (Ho et al. 2020): residual blocks, group norm,
  sinusoidal time embedding, self-attention at low resolution;
- :mod:`~specsched.unet.train`: :class:`TrainConfig`, :func:`train_unet` (epsilon
  prediction on a T-step training grid, AdamW, EMA, seeded, atomic checkpoints with resume,
  a time budget); the default data is Fashion-MNIST at 16 x 16
  (:func:`specsched.data.fashion_mnist.fashion_mnist_images`);
- :mod:`~specsched.unet.edm`: EDM preconditioning (Karras et al. 2022: ``c_skip``,
  ``c_out``, ``c_in``, ``c_noise``, the loss weight, log-normal training levels), array-API
  functions that need no torch; ``TrainConfig(preconditioning="edm")`` trains a
  noise-level-conditioned denoiser with them, and :class:`EDMDenoiser` samples it through
  k-diffusion's samplers at any level of its trained range (``sample_k``);
- :mod:`~specsched.unet.denoiser`: :class:`UNetDenoiser`, the network as a denoiser
  ``denoise(x, ab) -> x0_hat`` for :func:`specsched.sampling.sample` (nearest training step in
  logSNR for levels off the grid), and :func:`sample_eps`, which samples a network trained
  with coloured noise under its own noise;
- :mod:`~specsched.unet.colour`: coloured forward noise drawn by FFT (:class:`FourierColour`,
  ``c_f`` from the training images' power per frequency; ``TrainConfig(noise_spectrum=...)``);
- ``specsched train-unet`` and ``specsched sample-unet`` are :mod:`specsched.cli.unet`.
"""

from __future__ import annotations

import importlib

from specsched.errors import InputError

__all__ = [
    "TORCH_INSTALL_HINT",
    "EDMDenoiser",
    "FourierColour",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetDenoiser",
    "count_parameters",
    "load_checkpoint",
    "nearest_timesteps",
    "require_torch",
    "sample_eps",
    "train_unet",
]

#: How to install the optional extra (torch pinned: an unpinned torch pulls CUDA wheels).
TORCH_INSTALL_HINT = ('this needs PyTorch: run `pip install torch==2.13.0` (the CPU wheel), '
                      "then `pip install 'specsched[unet]'`")

_LAZY = {
    "UNet": "specsched.unet.model",
    "count_parameters": "specsched.unet.model",
    "TrainConfig": "specsched.unet.train",
    "TrainResult": "specsched.unet.train",
    "train_unet": "specsched.unet.train",
    "load_checkpoint": "specsched.unet.train",
    "UNetDenoiser": "specsched.unet.denoiser",
    "EDMDenoiser": "specsched.unet.denoiser",
    "nearest_timesteps": "specsched.unet.denoiser",
    "sample_eps": "specsched.unet.denoiser",
    "FourierColour": "specsched.unet.colour",
}


def require_torch():
    """Import and return :mod:`torch`, or raise an InputError saying how to install it.

    Raises
    ------
    InputError
        When torch is not installed (the CLI turns it into exit code 2).
    """
    try:
        import torch
    except ImportError:
        raise InputError(TORCH_INSTALL_HINT) from None
    return torch


def __getattr__(name):
    if name in _LAZY:
        module = _LAZY[name]
        if module != "specsched.unet.train":
            require_torch()
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'specsched.unet' has no attribute {name!r}")
