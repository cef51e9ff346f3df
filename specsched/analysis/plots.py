"""Figures of ``specsched analyze`` (matplotlib Agg; every file written atomically)."""

from __future__ import annotations

import numpy as np

from specsched.fileio import atomic_write

__all__ = ["plot_rapsd", "plot_snr", "plot_fmax", "plot_eigenvalues", "plot_transfer",
           "plot_bands"]


def _figure(*args, **kwargs):
    # matplotlib is heavy and its backend must be chosen before pyplot loads: at first use.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*args, **kwargs)


def save_figure(fig, path, force: bool = False, metadata: dict | None = None) -> None:
    """Lay out, write as PNG (110 dpi) through :func:`specsched.fileio.atomic_write` (no
    partial file on failure) and close a matplotlib figure. ``metadata``: PNG text chunks
    (e.g. :func:`specsched.provenance.png_metadata`), passed to ``savefig``.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``force`` is false.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path, force=force, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110, metadata=metadata)
    plt.close(fig)


def plot_rapsd(freq, radial, fit, path, *, force=False, title=None, unit="cycles / pixel"):
    """Log-log RAPSD with the fitted power law ``A f^-alpha`` and its resampled points.

    Parameters
    ----------
    freq, radial : ndarray of shape (n,)
        Ring frequencies (``unit``) and mean power.
    fit : PowerLawFit or None
    path : path-like
        PNG file.
    """
    plt, fig, ax = _figure(figsize=(5, 3.8))
    keep = freq > 0
    ax.loglog(freq[keep], radial[keep], "k-", lw=1.5, label="RAPSD")
    if fit is not None:
        ax.loglog(fit.freq, fit.power, "o", ms=3, color="tab:orange", label="log-spaced points")
        ax.loglog(fit.freq, fit.predict(fit.freq), "--", color="tab:red",
                  label=f"fit: alpha = {fit.exponent:.2f} (R2 {fit.r2:.3f})")
    ax.set_xlabel(f"frequency ({unit})")
    ax.set_ylabel("power (variance per frequency)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, force)


def plot_bands(edges, pi, path, *, force=False, title=None):
    """Bar chart of the normalised band powers ``pi_b`` (log scale)."""
    plt, fig, ax = _figure(figsize=(5, 3.4))
    centres = 0.5 * (edges[1:] + edges[:-1])
    ax.bar(centres, pi, width=np.diff(edges) * 0.9, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("radial frequency band (cycles / pixel)")
    ax.set_ylabel("pi_b (share of variance)")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, force)


def plot_snr(times, xvalues, snr, path, *, xlabel, force=False, title=None, logx=False,
             coloured=False):
    """Heatmap of ``log10 SNR`` over diffusion time (rows) and frequency or direction;
    ``coloured``: the SNR of a coloured forward noise, ``ab lam / ((1 - ab) c)``
    (docs/theory.md section 9)."""
    plt, fig, ax = _figure(figsize=(5.5, 4))
    with np.errstate(divide="ignore"):
        z = np.log10(snr)
    z = np.clip(z, -6, 6)
    mesh = ax.pcolormesh(xvalues, times, z, shading="nearest", cmap="viridis")
    ax.contour(xvalues, times, z, levels=[0.0], colors="w", linewidths=1)
    noise = "(1 - ab) c" if coloured else "(1 - ab)"
    fig.colorbar(mesh, ax=ax, label=f"log10 SNR = log10(ab lam / {noise})")
    if logx:
        import matplotlib.ticker as mticker  # loaded by _figure already

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training timestep t (T = 1000)")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, force)


def plot_fmax(times, curves, path, *, tau, force=False, title=None, ylabel="f_max"):
    """``f_max(t)`` for several schedules (``curves``: name -> ndarray (n_times,))."""
    plt, fig, ax = _figure(figsize=(5, 3.8))
    for name, fm in curves.items():
        ax.plot(times, fm, lw=1.5, label=name)
    ax.set_xlabel("training timestep t (T = 1000)")
    ax.set_ylabel(ylabel)
    ax.set_title((title + "\n" if title else "") + f"SNR threshold tau = {tau:g}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, force)


def plot_eigenvalues(spectra, path, *, force=False, title=None):
    """Eigenvalues against rank, log-log (``spectra``: label -> descending ndarray)."""
    plt, fig, ax = _figure(figsize=(5, 3.8))
    for label, lam in spectra.items():
        k = np.arange(1, lam.size + 1)
        ax.loglog(k, np.maximum(lam, 1e-300), lw=1.3, label=label)
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue lambda_k (variance)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, force)


def plot_transfer(lam, transfers, path, *, force=False, title=None):
    """Transfer function ``H(lambda)`` of optimised schedules (``transfers``: S -> (d,))."""
    plt, fig, ax = _figure(figsize=(5, 3.8))
    order = np.argsort(lam)
    x = np.maximum(lam[order], 1e-12)
    for S, H in transfers.items():
        ax.semilogx(x, H[order], lw=1.4, label=f"S = {S}")
    ax.set_xlabel("eigenvalue lambda (variance)")
    ax.set_ylabel("transfer function H(lambda)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, force)
