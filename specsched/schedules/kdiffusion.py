"""Load k-diffusion's ``sampling.py`` without the package ``__init__`` (and its heavy imports).

``import k_diffusion`` runs ``k_diffusion/__init__.py``, which imports every submodule and with
them clip, clean-fid, wandb, torchvision, safetensors, PIL and more: with
``pip install --no-deps k-diffusion`` it fails. The samplers themselves
(``k_diffusion/sampling.py``, 0.1.1.post1) need only torch, scipy, tqdm, torchdiffeq, torchsde
and one helper of ``k_diffusion/utils.py``, ``append_dims``. :func:`load_k_diffusion_sampling`
executes ``sampling.py`` (and optionally ``external.py``, the model wrappers) under a stub
parent package ``_k_diffusion_light`` whose ``utils`` holds that helper alone, so nothing else
of the package runs and a later ``import k_diffusion`` is not affected. docs/export.md shows
it; the tests use it.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from specsched.errors import InputError

__all__ = ["K_DIFFUSION_PIP", "load_k_diffusion_sampling"]

#: How to install what ``sampling.py`` needs without the package's heavy dependencies.
K_DIFFUSION_PIP = ("pip install --no-deps k-diffusion==0.1.1.post1 torchsde==0.2.6 "
                   "torchdiffeq==0.2.5 trampoline==0.1.2")
_PARENT = "_k_diffusion_light"


def _append_dims(x, target_dims):
    """``k_diffusion.utils.append_dims``: append trailing singleton axes up to ``target_dims``."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, "
                         "which is less")
    return x[(...,) + (None,) * dims_to_append]


def _load(name: str, folder: Path):
    full = f"{_PARENT}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    setattr(sys.modules[_PARENT], name, module)
    return module


def load_k_diffusion_sampling(with_external: bool = False):
    """k-diffusion's ``sampling`` module (and ``external``), loaded without its ``__init__``.

    Parameters
    ----------
    with_external : bool
        Also load ``external.py`` (``CompVisDenoiser``, ``DiscreteEpsDDPMDenoiser``, ...) and
        return ``(sampling, external)``.

    Returns
    -------
    module or tuple of two modules
        ``sampling`` with ``sample_euler``, ``sample_euler_ancestral``, ``get_sigmas_karras``,
        ...; loaded once per process (later calls return the same modules).

    Raises
    ------
    InputError
        If k-diffusion is not installed (the message gives the pip line,
        :data:`K_DIFFUSION_PIP`) or one of the modules ``sampling.py`` imports is missing.
    """
    spec = importlib.util.find_spec("k_diffusion")  # locates the package, runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"k-diffusion is not installed: {K_DIFFUSION_PIP}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if _PARENT not in sys.modules:
        parent = types.ModuleType(_PARENT)
        parent.__path__ = [str(folder)]
        utils = types.ModuleType(f"{_PARENT}.utils")
        utils.append_dims = _append_dims
        parent.utils = utils
        sys.modules[_PARENT] = parent
        sys.modules[utils.__name__] = utils
    try:
        sampling = _load("sampling", folder)
        external = _load("external", folder) if with_external else None
    except ModuleNotFoundError as exc:
        raise InputError(f"k-diffusion's sampling.py needs {exc.name!r}: "
                         f"{K_DIFFUSION_PIP}") from None
    return (sampling, external) if with_external else sampling
