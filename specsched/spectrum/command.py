"""``specsched spectrum``: estimate a dataset's spectrum into a spectrum ``.npz`` file."""

from __future__ import annotations

import argparse

from specsched.argtypes import positive_int as _positive_int


def _size(text):
    try:
        h, _, w = text.lower().partition("x")
        size = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels (e.g. 64x64), got {text!r}") \
            from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return size


def add_source_args(p):
    """Options shared by commands that read samples (image and audio options, chunking)."""
    p.add_argument("--chunk-size", type=_positive_int, default=4096, metavar="N",
                   help="samples per chunk (memory ~ N x d); default 4096")
    p.add_argument("--grayscale", action="store_true", help="images: convert RGB to luminance")
    p.add_argument("--crop", type=_positive_int, default=None, metavar="PX",
                   help="images: centred square crop of PX pixels, before --size")
    p.add_argument("--size", type=_size, default=None, metavar="HxW",
                   help="images: resize to H x W pixels (anti-aliased)")
    p.add_argument("--sample-rate", type=_positive_int, default=16000, metavar="HZ",
                   help="audio: resample to HZ (default 16000)")
    p.add_argument("--frame-length", type=_positive_int, default=16384, metavar="N",
                   help="audio: samples per frame, one frame = one sample (default 16384)")


def source_options(args) -> dict:
    """The :func:`specsched.data.sources.open_source` options given on the command line."""
    opts = {}
    if args.grayscale:
        opts["grayscale"] = True
    if args.crop is not None:
        opts["crop"] = args.crop
    if args.size is not None:
        opts["size"] = args.size
    if args.sample_rate != 16000:
        opts["sample_rate"] = args.sample_rate
    if args.frame_length != 16384:
        opts["frame_length"] = args.frame_length
    return opts


def add_parser(sub):
    """Register the ``spectrum`` subcommand on an argparse subparsers object."""
    p = sub.add_parser("spectrum", help="estimate a dataset's spectrum into a .npz file",
                       description="Chunked estimate of a dataset's spectrum (full "
                       "covariance, PCA or the shift-invariant Fourier model), saved as a "
                       "spectrum .npz.")
    p.add_argument("src", metavar="SRC",
                   help=".npy (memory-mapped) / .npz samples, IDX (.gz) file, folder of "
                   "images / audio / .npy shards / CIFAR-10 batches, or a built-in dataset "
                   "(natural-patches, digits, fashion-mnist, sonic-pi-samples)")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--method", choices=["full", "pca", "fourier"], default="full",
                   help="full covariance + eigh; pca: top --rank eigenpairs, tail as its "
                   "mean variance; fourier: per-frequency power (stationary model)")
    p.add_argument("--rank", type=_positive_int, default=None, metavar="K",
                   help="exact eigenpairs of --method pca")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="accumulate on the CPU or on a GPU with CuPy")
    p.add_argument("--dask", nargs="?", const=True, default=None, metavar="ADDR",
                   help="accumulate on a dask cluster: a scheduler address, or none for a "
                   "local 2-worker cluster")
    add_source_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Estimate the spectrum of ``args.src`` and save it to ``args.out``; exit code."""
    from specsched.errors import InputError
    from specsched.fileio import check_writable
    from specsched.spectrum import load_spectrum

    check_writable(args.out, args.force)
    if args.rank is not None and args.method != "pca":
        raise InputError("--rank: only with --method pca")
    spectrum = load_spectrum(args.src, as_data=True, method=args.method, rank=args.rank,
                             chunk_size=args.chunk_size, device=args.device, dask=args.dask,
                             **source_options(args))
    spectrum.save(args.out, force=args.force)
    lam = spectrum.eigenvalues
    print(f"{spectrum.source} ({spectrum.method}"
          + (f", rank {spectrum.rank}" if spectrum.rank else "")
          + f"): d = {spectrum.dimension}, n_samples = {spectrum.n_samples}, "
          f"total variance {lam.sum():.6g}, largest eigenvalue {lam[0]:.6g} -> {args.out}")
    return 0
