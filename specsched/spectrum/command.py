"""``specsched spectrum``: estimate a dataset's spectrum into a spectrum ``.npz`` file."""

from __future__ import annotations


def add_parser(sub):
    """Register the ``spectrum`` subcommand on an argparse subparsers object."""
    p = sub.add_parser("spectrum", help="estimate a dataset's spectrum into a .npz file",
                       description="Streaming covariance and eigendecomposition of a "
                       "dataset, saved as a spectrum .npz.")
    p.add_argument("src", metavar="SRC",
                   help=".npy/.npz samples, image folder or built-in dataset")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--method", choices=["full"], default="full",
                   help="full covariance + eigh")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Estimate the spectrum of ``args.src`` and save it to ``args.out``; exit code."""
    from specsched.fileio import check_writable
    from specsched.spectrum import load_spectrum

    check_writable(args.out, args.force)
    spectrum = load_spectrum(args.src, as_data=True)
    spectrum.save(args.out, force=args.force)
    lam = spectrum.eigenvalues
    print(f"{spectrum.source}: d = {spectrum.dimension}, n_samples = {spectrum.n_samples}, "
          f"total variance {lam.sum():.6g}, largest eigenvalue {lam[0]:.6g} -> {args.out}")
    return 0
