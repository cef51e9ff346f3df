"""``specsched fid``: Frechet distance (and optionally KID) between samples and a reference.

``--features pixels`` needs NumPy only; ``classifier`` needs torch (the classifier is trained
on Fashion-MNIST once and cached at ``--classifier PATH``); ``inception`` needs torch,
torch-fidelity and a local InceptionV3 weights file (``--inception-weights PATH``).
"""

from __future__ import annotations

import json

from specsched.cli.common import positive_int


def add_parser(sub):
    """Register the ``fid`` subcommand on an argparse subparsers object."""
    from specsched.metrics.features import FEATURES

    p = sub.add_parser(
        "fid", help="Frechet distance / KID between samples and a reference",
        description="Frechet distance between Gaussian fits of the features of two image "
        "sets (pixels: exactly the W2^2 the theory predicts; classifier: a small CNN trained "
        "on Fashion-MNIST; inception: torch-fidelity's InceptionV3 from a local weights "
        "file), optionally KID. Images are (n, H, W[, C]) arrays with pixels in [-1, 1].")
    p.add_argument("--samples", required=True, metavar="A.npy", help="generated images")
    p.add_argument("--reference", required=True, metavar="B.npy|fashion-mnist",
                   help="reference images, or fashion-mnist (downsampled to the samples' "
                   "size: padded to 32 x 32 and average-pooled)")
    p.add_argument("--reference-split", choices=["test", "train", "all"], default="test",
                   help="fashion-mnist split (default test: 10,000 images)")
    p.add_argument("--n-reference", type=positive_int, default=None,
                   help="use only the first N reference images")
    p.add_argument("--features", choices=list(FEATURES), default="pixels",
                   help="feature extractor (default pixels)")
    p.add_argument("--classifier", metavar="PATH", default=None,
                   help="classifier weights file (with --features classifier); trained on "
                   "Fashion-MNIST (a minute or two) and saved there when absent")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (with "
                   "--features inception; no download is attempted)")
    p.add_argument("--kid", action="store_true", help="also compute KID")
    p.add_argument("--kid-subsets", type=positive_int, default=100,
                   help="KID subsets (default 100)")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000,
                   help="KID subset size (default 1000, reduced to the smaller set)")
    p.add_argument("--seed", type=int, default=0, help="seed of the KID subsets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)
    return p


def load_images(src, name: str):
    """Images (n, H, W, C) from an array file, as float64."""
    import numpy as np

    from specsched.data import load_samples
    from specsched.errors import InputError

    x, _ = load_samples(src)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"{name} {src}: expected images (n, H, W) or (n, H, W, C), got "
                         f"shape {x.shape}")
    return np.asarray(x, dtype=np.float64)


def run(args) -> int:
    """Compute the distances and print them; exit code."""
    import numpy as np

    from specsched.errors import InputError
    from specsched.metrics.features import extract_features
    from specsched.metrics.frechet import frechet_distance_features, kernel_distance

    if args.features == "inception" and args.inception_weights is None:
        from specsched.metrics.features import INCEPTION_WEIGHTS_HELP

        raise InputError(INCEPTION_WEIGHTS_HELP)
    samples = load_images(args.samples, "--samples")
    if args.reference == "fashion-mnist":
        from specsched.data.fashion_mnist import fashion_mnist_images

        size = samples.shape[1]
        if samples.shape[1] != samples.shape[2] or samples.shape[3] != 1:
            raise InputError(f"--samples: shape {samples.shape[1:]} is not a square grey "
                             "image; fashion-mnist is (size, size, 1)")
        reference = fashion_mnist_images(size, args.reference_split)
    else:
        reference = load_images(args.reference, "--reference")
    if args.n_reference is not None:
        reference = reference[:args.n_reference]
    if samples.shape[1:] != reference.shape[1:]:
        raise InputError(f"--samples have shape {samples.shape[1:]}, --reference "
                         f"{reference.shape[1:]}")
    kw = {"classifier": args.classifier, "inception_weights": args.inception_weights}
    fa = extract_features(samples, args.features, **kw)
    fb = extract_features(reference, args.features, **kw)
    record = {"fd": frechet_distance_features(fa, fb), "features": args.features,
              "dimension": int(fa.shape[1]), "n_samples": int(fa.shape[0]),
              "n_reference": int(fb.shape[0]), "samples": str(args.samples),
              "reference": str(args.reference)}
    if args.features == "classifier":
        from specsched.metrics.features import load_or_train_classifier

        record["classifier_test_accuracy"] = load_or_train_classifier(
            args.classifier, samples.shape[1])[1]["test_accuracy"]
    if args.kid:
        k = kernel_distance(fa, fb, rng=np.random.default_rng(args.seed),
                            n_subsets=args.kid_subsets, subset_size=args.kid_subset_size)
        record.update(kid=k.mean, kid_std=k.std, kid_std_error=k.std_error,
                      kid_subsets=k.n_subsets, kid_subset_size=k.subset_size)
    if args.json:
        print(json.dumps(record))
    else:
        text = (f"FD ({args.features}, d = {record['dimension']}) = {record['fd']:.6g} "
                f"between {record['n_samples']} samples and {record['n_reference']} reference "
                "images")
        if args.kid:
            text += f"; KID = {record['kid']:.4g} +/- {record['kid_std_error']:.2g} (s.e.)"
        print(text)
    return 0
