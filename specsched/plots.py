"""Matplotlib figures of specsched (Agg backend; files written atomically)."""

from __future__ import annotations

import numpy as np

from specsched.fileio import atomic_write


def plot_schedules(panels, path, *, force=False, title=None, param="vp"):
    """Plot logSNR (or flow-matching time) against step for optimised schedules beside their
    baselines.

    Parameters
    ----------
    panels : list of (num_steps, optimised, baselines)
        ``optimised`` is an ndarray of shape (num_steps,) of alphas_cumprod (step 1 first);
        ``baselines`` maps a name to such an array.
    path : path-like
        PNG file to write (atomically; refused if it exists and ``force`` is false).
    title : str, optional
        Figure title.
    param : {"vp", "ve", "fm"}
        "fm" plots the times ``t = sigma / (1 + sigma)`` (docs/theory.md section 10), whose last
        level may be pure noise (``t = 1``, logSNR ``-inf``); the others plot logSNR.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specsched.schedules import fm_times_from_alphas_cumprod, logsnr_from_alphas_cumprod

    view = fm_times_from_alphas_cumprod if param == "fm" else logsnr_from_alphas_cumprod
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, (num_steps, optimised, baselines) in zip(axes[0], panels, strict=True):
        steps = np.arange(1, num_steps + 1)
        for name, ab in baselines.items():
            ax.plot(steps, view(ab), lw=1, alpha=0.7, label=name)
        ax.plot(steps, view(optimised), "k-o", lw=2.2, ms=3, label="optimised")
        ax.set_title(f"S = {num_steps}")
        ax.set_xlabel("step s (1 = least noisy)")
        ax.set_ylabel("t (flow matching; 1 = pure noise)" if param == "fm"
                      else "logSNR = log(ab / (1 - ab))")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, force=force, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def save_grid(images, path, *, force: bool = False, columns: int = 8) -> None:
    """Write up to ``columns^2`` images (n, H, W, C) in [-1, 1] as one PNG grid, atomically."""
    import io

    import numpy as np
    from matplotlib import image as mimage

    x = np.clip((np.asarray(images, dtype=np.float64)[: columns * columns] + 1) / 2, 0, 1)
    n, h, w, c = x.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c))
    for i in range(n):
        r, k = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = x[i]
    buf = io.BytesIO()
    kw = {"cmap": "gray", "vmin": 0, "vmax": 1} if c == 1 else {}
    mimage.imsave(buf, grid[..., 0] if c == 1 else grid, format="png", **kw)
    with atomic_write(path, force=force, mode="wb") as fh:
        fh.write(buf.getvalue())
