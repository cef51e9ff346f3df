"""The spectral analysis of ``specsched analyze``: a dataset's figures and tables.

Writes into ``--out DIR``: ``rapsd.png``/``rapsd.csv`` (RAPSD and its power-law fit),
``bands.png``/``bands.csv`` (normalised band powers), ``snr.png`` (log SNR over diffusion
time), ``fmax.png``/``fmax.csv`` (maximal detectable frequency for several schedules),
``eigenvalues.png``/``eigenvalues.csv``, ``transfer.png``/``transfer.csv`` (transfer function
of the optimised schedule per step count) and ``summary.json`` (all scalar results). Sources
given as eigenvalues only (``cifar10``, spectrum files) skip the image-space analyses
(RAPSD, band powers, Fourier model) with a note in ``summary.json``.

Under a coloured forward noise (``noise``, docs/theory.md section 9) the SNR and ``f_max`` maps
use ``ab lam / ((1 - ab) c(ab))``, per RAPSD ring the ratio of the signal's to the noise's
radially averaged spectra (:func:`specsched.analysis.snr.frequency_noise` gives the noise of
each frequency); the optimised schedules are optimised for that noise, and ``summary.json``
records its label as ``noise_spectrum``. White noise writes exactly what it always did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from specsched.analysis import plots
from specsched.analysis.bands import band_powers
from specsched.analysis.powerlaw import fit_power_law
from specsched.analysis.rapsd import rapsd
from specsched.analysis.snr import frequency_noise, max_detectable_frequency, snr_map
from specsched.data.arrays import read_array
from specsched.data.sources import open_source
from specsched.errors import InputError
from specsched.fileio import atomic_write, check_writable
from specsched.optimize import optimize_schedule
from specsched.schedules import TRAINING_FAMILIES, training_alphas_cumprod
from specsched.spectrum import estimate_spectrum, load_spectrum
from specsched.theory import closed_form, evaluate_schedule
from specsched.theory.noise import NoiseSpectrum, noise_spectrum

__all__ = ["FMAX_SCHEDULES", "FULL_MAX", "OUTPUT_FILES", "analyze"]

#: Training schedules compared in the f_max figure.
FMAX_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
#: Largest d for which the analysed spectrum is the full covariance (else the Fourier model).
FULL_MAX = 4096
OUTPUT_FILES = ("rapsd.png", "rapsd.csv", "bands.png", "bands.csv", "snr.png", "fmax.png",
          "fmax.csv", "eigenvalues.png", "eigenvalues.csv", "transfer.png", "transfer.csv",
          "summary.json")


def _eigenvalues_only(src) -> bool:
    from specsched.data.builtin import BUILTIN_DATASETS
    from specsched.data.sources import SYSTEM_DATASETS
    from specsched.spectrum import is_spectrum_file

    if isinstance(src, str) and src in BUILTIN_DATASETS + tuple(SYSTEM_DATASETS):
        return src == "cifar10"
    path = Path(src)
    if path.is_file() and is_spectrum_file(path):
        return True
    if path.is_file() and path.suffix.lower() == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 1
        except (OSError, ValueError, EOFError):
            return read_array(path).ndim == 1  # raises an InputError naming the file
    return False


def _write_csv(path, header: str, columns: dict, force: bool) -> None:
    with atomic_write(path, force=force) as fh:
        fh.write(f"# {header}\n")
        pd.DataFrame(columns).to_csv(fh, index=False, float_format="%.10g")


def _radial_noise(noise_f: NoiseSpectrum, shape) -> NoiseSpectrum:
    """The noise of each RAPSD ring: the radial average of the per-frequency variances (of
    FANS' shape at ``ab = 0``, whose anneal ``(1 - ab) c + ab`` commutes with the average)."""
    radial, _ = rapsd(noise_f.variances.reshape(shape))
    return NoiseSpectrum(noise_f.label, radial, noise_f.time_varying)


def analyze(src, out, *, steps=(10, 20), schedule="linear", tau=1.0, n_bands=8,
            chunk_size=4096, force=False, source_options=None, noise=None) -> dict:
    """Run every analysis of ``specsched analyze`` and write its files.

    Parameters
    ----------
    src : str or path-like
        Samples source (:func:`specsched.data.sources.open_source`) or eigenvalues
        (``cifar10``, spectrum ``.npz``, 1-D ``.npy``).
    out : path-like
        Output folder (created).
    steps : sequence of int
        Step counts of the optimised DDIM schedules (W2 loss) whose transfer functions
        ``H(lambda)`` are plotted.
    schedule : str
        Training family (:data:`specsched.schedules.TRAINING_FAMILIES`) of the SNR heatmap.
    tau : float
        SNR threshold of ``f_max(t)``.
    n_bands : int
        Number of radial bands of ``pi_b``.
    chunk_size : int
        Samples per chunk when reading data.
    force : bool
        Overwrite existing output files.
    source_options : dict, optional
        Passed to :func:`specsched.data.sources.open_source`.
    noise : str, NoiseSpectrum or None
        The forward noise spectrum (:func:`specsched.theory.noise.noise_spectrum`, for the
        analysed spectrum's eigenvalues; None is white): the SNR and ``f_max`` maps and the
        optimised schedules are those of that forward process (module docstring).

    Returns
    -------
    dict
        The content of ``summary.json``: source, kind, dimension, n_samples, power-law
        exponent and fit, band powers, Fourier-vs-full disagreement, optimised W2 per step
        count, notes, files written; ``noise_spectrum`` (its label) unless white.

    Raises
    ------
    InputError
        As the loaders and estimators; an unknown schedule; ``--out`` not a folder; a bad
        ``noise`` (before any file is written).
    OutputExistsError
        If an output file exists and ``force`` is false (checked before any work).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    if schedule not in TRAINING_FAMILIES:
        raise InputError(f"--schedule: expected one of {', '.join(TRAINING_FAMILIES)}, "
                         f"got {schedule!r}")
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise InputError(f"--steps: expected integers >= 1, got {steps}")
    for name in OUTPUT_FILES:
        check_writable(out / name, force)
    source_options = source_options or {}
    notes, written = [], []
    summary: dict = {"source": str(src)}
    T = 1000
    times = np.arange(1, T + 1)
    ab_train = {f: training_alphas_cumprod(f, T) for f in FMAX_SCHEDULES}
    if schedule not in ab_train:
        ab_train[schedule] = training_alphas_cumprod(schedule, T)

    power = None
    if _eigenvalues_only(src):
        spectrum = load_spectrum(src)
        summary["kind"] = "eigenvalues"
        notes.append("eigenvalues only: RAPSD, power law, band powers and the Fourier model "
                     "need samples on a grid and are skipped")
        spectra = {"eigenvalues": spectrum.eigenvalues}
    else:
        source = open_source(src, **source_options)
        summary["kind"] = source.kind
        d = source.dimension
        fourier, power = estimate_spectrum(source, "fourier", chunk_size=chunk_size,
                                           return_power=True)
        spectra = {"Fourier model": fourier.eigenvalues}
        if d <= FULL_MAX:
            spectrum = estimate_spectrum(source, "full", chunk_size=chunk_size)
            spectra = {"full covariance": spectrum.eigenvalues, **spectra}
            lf, lc = fourier.eigenvalues, spectrum.eigenvalues
            summary["fourier_vs_full"] = {
                "relative_l1": float(np.abs(lf - lc).sum() / lc.sum()),
                "max_relative_top10": float(np.max(np.abs(lf[:10] - lc[:10]) / lc[:10])),
                "trace_full": float(lc.sum()),
                "trace_fourier": float(lf.sum()),
                "w2_between_spectra": float(np.sqrt(((np.sqrt(lf) - np.sqrt(lc)) ** 2).sum())),
            }
        else:
            spectrum = fourier
            notes.append(f"d = {d} > {FULL_MAX}: the schedule analyses use the Fourier model")
    summary.update(dimension=spectrum.dimension, n_samples=spectrum.n_samples,
                   method=spectrum.method)
    title = f"{src} ({spectrum.method}, d = {spectrum.dimension})"
    noise = noise_spectrum(noise, spectrum.eigenvalues)  # refused here, before any file
    under = ""
    if not noise.is_white:
        summary["noise_spectrum"] = noise.label
        under = f" under forward noise {noise.label}"
        title += f", noise {noise.label}"

    if power is not None:
        rate = getattr(source, "sample_rate", None)
        unit = "cycles / sample" if power.ndim == 1 else "cycles / pixel"
        radial, freq = rapsd(power)
        fit = fit_power_law(freq, radial)
        summary["power_law"] = {"exponent": fit.exponent, "amplitude": fit.amplitude,
                                "r2": fit.r2, "fmin": float(fit.freq[0]),
                                "fmax": float(fit.freq[-1]), "unit": unit,
                                "n_points": int(fit.freq.size)}
        if rate:
            summary["sample_rate_hz"] = rate
        plots.plot_rapsd(freq, radial, fit, out / "rapsd.png", force=force, title=title,
                         unit=unit)
        _write_csv(out / "rapsd.csv", f"RAPSD of {src}; freq in {unit}; power law exponent "
                   f"{fit.exponent:.4f}", {"freq": freq, "power": radial}, force)
        edges, pi = band_powers(power, n_bands)
        summary["band_powers"] = {"edges": edges.tolist(), "pi": pi.tolist()}
        plots.plot_bands(edges, pi, out / "bands.png", force=force, title=title)
        _write_csv(out / "bands.csv", f"normalised band powers of {src}; edges in {unit}",
                   {"low": edges[:-1], "high": edges[1:], "pi": pi}, force)
        rings = None
        if not noise.is_white:
            rings = _radial_noise(frequency_noise(noise, power, fourier.eigenvalues),
                                  power.shape)
            notes.append(
                f"noise spectrum {noise.label}: the SNR and f_max maps divide by the noise's "
                "RAPSD, " + ("the file's variances (in the order of the eigenvalues) mapped "
                             "onto the frequencies by the rank of their power" if
                             noise.label.startswith("file:") else
                             "its shape made by the same rule from the per-frequency power")
                + " (docs/theory.md section 9)")
        snr = snr_map(radial, ab_train[schedule], rings)
        plots.plot_snr(times, freq[1:], snr[:, 1:], out / "snr.png",
                       xlabel=f"frequency ({unit}, RAPSD rings, DC left out)",
                       force=force, logx=True, coloured=not noise.is_white,
                       title=f"{title}, schedule {schedule}")
        curves = {f: max_detectable_frequency(freq, radial, ab, tau, rings)
                  for f, ab in ab_train.items()}
        ylabel = f"f_max ({unit})"
        written += ["rapsd.png", "rapsd.csv", "bands.png", "bands.csv"]
    else:
        lam = spectrum.eigenvalues
        snr = snr_map(lam, ab_train[schedule], noise)
        plots.plot_snr(times, np.arange(1, lam.size + 1), snr, out / "snr.png",
                       xlabel="eigen-direction rank k", force=force, logx=True,
                       coloured=not noise.is_white, title=f"{title}, schedule {schedule}")
        # without frequencies: the share of directions detectable at SNR >= tau
        curves = {f: (snr_map(lam, ab, noise) >= tau).mean(axis=1)
                  for f, ab in ab_train.items()}
        ylabel = "fraction of directions with SNR >= tau"
        notes.append("fmax: without frequencies, the fraction of eigen-directions with "
                     "SNR >= tau is shown instead of f_max")
    plots.plot_fmax(times, curves, out / "fmax.png", tau=tau, force=force, title=title,
                    ylabel=ylabel)
    _write_csv(out / "fmax.csv", f"{ylabel} at SNR threshold tau = {tau:g}, T = {T}{under}",
               {"t": times, **curves}, force)
    plots.plot_eigenvalues(spectra, out / "eigenvalues.png", force=force, title=title)
    _write_csv(out / "eigenvalues.csv", f"eigenvalues of {src}, descending",
               {k: v for k, v in spectra.items()}, force)

    transfers, w2 = {}, {}
    for S in steps:
        if noise.is_white:
            res = optimize_schedule(spectrum.eigenvalues, spectrum.mean, S, loss="w2")
            transfers[S] = closed_form(spectrum.eigenvalues, res.x).transfer
        else:
            res = optimize_schedule(spectrum.eigenvalues, spectrum.mean, S, loss="w2",
                                    noise=noise)
            transfers[S] = evaluate_schedule(spectrum.eigenvalues, spectrum.mean, res.x,
                                             noise=noise).transfer
        w2[str(S)] = {"optimized": res.w2, "success": bool(res.success),
                      **{k: v["w2"] for k, v in res.baselines.items()}}
    summary["w2"] = w2
    plots.plot_transfer(spectrum.eigenvalues, transfers, out / "transfer.png", force=force,
                        title=f"{title}: optimised DDIM (W2)")
    _write_csv(out / "transfer.csv", "transfer function H(lambda) of the optimised DDIM "
               f"schedule (W2) per step count S{under}",
               {"lambda": spectrum.eigenvalues, **{f"H_S{S}": H for S, H in transfers.items()}},
               force)
    written += ["snr.png", "fmax.png", "fmax.csv", "eigenvalues.png", "eigenvalues.csv",
                "transfer.png", "transfer.csv", "summary.json"]
    summary.update(notes=notes, files=written, tau=tau, schedule=schedule, steps=steps)
    with atomic_write(out / "summary.json", force=force) as fh:
        json.dump(summary, fh, indent=2)
    return summary
