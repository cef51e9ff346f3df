"""specsched: noise schedules for diffusion models designed from the spectrum of the data.

The pipeline flows one way::

    data -> spectrum -> theory (transfer functions, W2/KL) -> optimiser -> schedule JSON

``import specsched`` loads NumPy only; every stage lives in its own subpackage
(:mod:`specsched.data`, :mod:`specsched.spectrum`, :mod:`specsched.theory`,
:mod:`specsched.schedules`, :mod:`specsched.optimize`) and is imported on demand.
"""

import os

__version__ = "0.1.0"

# numba's OpenMP threading layer (libgomp, which reads this when the first parallel kernel
# loads it) spins its threads at every barrier by default; on a machine whose other core is
# busy the spinning thread holds the core the waited-for one needs: the CIFAR-10 loss +
# gradient at S = 100 took 430 ms a call instead of 2 ms. Sleeping waiters fix it; a user's
# own setting is kept. Set here, before any kernel of any subpackage can run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from specsched.errors import InputError, SpecschedError

__all__ = ["__version__", "InputError", "SpecschedError"]
