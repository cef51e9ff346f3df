"""Spectra of datasets: covariance eigenvalues, eigenvectors and mean in the eigenbasis.

- :class:`Spectrum`: the record handed to the theory and optimiser stages.
- :class:`StreamingCovariance`, :func:`spectrum_from_samples`: full covariance + eigh.
- :func:`load_spectrum`: any source (built-in name, spectrum file, eigenvalues, samples,
  image folder) to a :class:`Spectrum`.
"""

from specsched.spectrum.covariance import StreamingCovariance, spectrum_from_samples
from specsched.spectrum.resolve import load_spectrum
from specsched.spectrum.spectrum import Spectrum

__all__ = ["Spectrum", "StreamingCovariance", "load_spectrum", "spectrum_from_samples"]
