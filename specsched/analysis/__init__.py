"""Spectral analysis of datasets around the schedule design (docs/theory.md section 6).

- :mod:`~specsched.analysis.rapsd`: radially averaged power spectral density (pysteps);
- :mod:`~specsched.analysis.powerlaw`: power-law exponent in log-log space (Dieleman 2024);
- :mod:`~specsched.analysis.bands`: normalised band powers ``pi_b``;
- :mod:`~specsched.analysis.snr`: per-frequency SNR ``ab lam / (1 - ab)`` (Falck et al.
  2025) and the maximal detectable frequency ``f_max(t)`` (Dieleman 2024);
- :mod:`~specsched.analysis.report`: every analysis of ``specsched analyze``.
"""

from specsched.analysis.bands import band_powers, radial_frequency
from specsched.analysis.powerlaw import PowerLawFit, fit_power_law
from specsched.analysis.rapsd import rapsd, rapsd_of_field
from specsched.analysis.snr import max_detectable_frequency, snr_map

__all__ = [
    "PowerLawFit",
    "band_powers",
    "fit_power_law",
    "max_detectable_frequency",
    "radial_frequency",
    "rapsd",
    "rapsd_of_field",
    "snr_map",
]
