"""Spectra of datasets: covariance eigenvalues, eigenvectors and mean in the eigenbasis.

- :class:`Spectrum`: the record handed to the theory and optimiser stages.
- :class:`StreamingCovariance`, :func:`spectrum_from_samples`: full covariance + eigh.
- :func:`estimate_spectrum`, :class:`SpectrumEstimator`: chunked full / PCA / Fourier
  estimators over any :class:`specsched.data.sources.DataSource` (CuPy, dask).
- :func:`load_spectrum`: any source (built-in name, spectrum file, eigenvalues, samples,
  image folder) to a :class:`Spectrum`.
"""

from specsched.spectrum.covariance import StreamingCovariance, spectrum_from_samples
from specsched.spectrum.estimators import (
    METHODS,
    SpectrumEstimator,
    estimate_spectrum,
    fourier_power,
    randomized_eigh,
)
from specsched.spectrum.resolve import load_spectrum
from specsched.spectrum.spectrum import Spectrum

__all__ = [
    "METHODS",
    "Spectrum",
    "SpectrumEstimator",
    "StreamingCovariance",
    "estimate_spectrum",
    "fourier_power",
    "load_spectrum",
    "randomized_eigh",
    "spectrum_from_samples",
]
