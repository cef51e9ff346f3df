"""specsched: noise schedules for diffusion models designed from the spectrum of the data.

The pipeline flows one way::

    data -> spectrum -> theory (transfer functions, W2/KL) -> optimiser -> schedule JSON

``import specsched`` loads NumPy only; every stage lives in its own subpackage
(:mod:`specsched.data`, :mod:`specsched.spectrum`, :mod:`specsched.theory`,
:mod:`specsched.schedules`, :mod:`specsched.optimize`) and is imported on demand.
"""

__version__ = "0.1.0"

from specsched.errors import InputError, SpecschedError

__all__ = ["__version__", "InputError", "SpecschedError"]
