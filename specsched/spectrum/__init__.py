"""Spectra of datasets: covariance eigenvalues, eigenvectors and mean in the eigenbasis.

- :class:`Spectrum`: the record handed to the theory and optimiser stages.
- :func:`estimate_spectrum`: the one chunked route from any
  :class:`specsched.data.sources.DataSource` to a spectrum (full / PCA / Fourier; CuPy, dask).
- :class:`StreamingCovariance` (full covariance, the one such estimator) and
  :func:`spectrum_from_samples` (its pure-function front); :class:`FourierEstimator` (the
  shift-invariant model), scikit-learn shaped (``partial_fit`` / ``fit`` / ``merge``).
- :func:`load_spectrum`: any source (built-in name, spectrum file, eigenvalues, samples,
  image folder) to a :class:`Spectrum`; :func:`is_spectrum_file`.
"""

from specsched.spectrum.covariance import StreamingCovariance, spectrum_from_samples
from specsched.spectrum.estimators import (
    METHODS,
    check_estimate,
    estimate_spectrum,
    randomized_eigh,
)
from specsched.spectrum.fourier import DiagonalVariance, FourierEstimator, fourier_power
from specsched.spectrum.resolve import is_spectrum_file, load_spectrum
from specsched.spectrum.spectrum import Spectrum

__all__ = [
    "METHODS",
    "DiagonalVariance",
    "FourierEstimator",
    "Spectrum",
    "StreamingCovariance",
    "check_estimate",
    "estimate_spectrum",
    "fourier_power",
    "is_spectrum_file",
    "load_spectrum",
    "randomized_eigh",
    "spectrum_from_samples",
]
