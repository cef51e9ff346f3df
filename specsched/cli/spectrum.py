"""``specsched spectrum``: estimate a dataset's spectrum into a spectrum ``.npz`` file."""

from __future__ import annotations

from specsched.cli.common import add_source_args, dask_address, positive_int, source_options


def add_parser(sub):
    """Register the ``spectrum`` subcommand on an argparse subparsers object."""
    p = sub.add_parser("spectrum", help="estimate a dataset's spectrum into a .npz file",
                       description="Chunked estimate of a dataset's spectrum (full "
                       "covariance, PCA or the shift-invariant Fourier model), saved as a "
                       "spectrum .npz.")
    p.add_argument("src", metavar="SRC",
                   help=".npy / .npz samples, IDX (.gz) file, folder of images / audio / "
                   ".npy shards / CIFAR-10 batches, a zarr array (extra zarr), or a built-in "
                   "dataset (natural-patches, digits, fashion-mnist, sonic-pi-samples); read "
                   "--chunk-size samples at a time, integer pixels mapped to [-1, 1] "
                   "(docs/formats.md)")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--method", choices=["full", "pca", "fourier"], default="full",
                   help="full covariance + eigh; pca: top --rank eigenpairs, tail as its "
                   "mean variance; fourier: per-frequency power (stationary model)")
    p.add_argument("--rank", type=positive_int, default=None, metavar="K",
                   help="exact eigenpairs of --method pca")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the sums are accumulated and the covariance eigendecomposed "
                   "(full, pca): the CPU, or a GPU with CuPy (pip install 'specsched[gpu]')")
    p.add_argument("--dask", nargs="?", const=True, default=None, metavar="ADDR", type=dask_address,
                   help="accumulate on a dask cluster: a scheduler address (each worker "
                   "reads its own parts of SRC at the same path and sends back only their "
                   "moments; in-memory built-ins are sent once; timeouts in docs/spectra.md), "
                   "or none for a local 2-worker cluster")
    add_source_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Estimate the spectrum of ``args.src`` and save it to ``args.out``; exit code.

    Cheap checks first: the output, ``--rank`` against ``--method`` here, then (in
    :func:`specsched.spectrum.estimate_spectrum`, from the headers) ``--rank`` against ``d``
    and the memory the estimate needs, before any sample is read.
    """
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
