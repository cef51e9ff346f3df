r"""Feature extractors for Frechet distances: pixels, a project-trained classifier, Inception.

Images are NumPy arrays ``(n, H, W, C)`` (or ``(n, H, W)``) with pixels in [-1, 1].

- ``pixels``: the flattened image, ``d = H W C``. The Frechet distance of pixels is the
  W2^2 between Gaussian fits of the two sets, the quantity :mod:`specsched.theory` predicts.
- ``classifier``: the 128 penultimate activations (after global average pooling) of
  :class:`SmallCNN`, a 3-layer CNN trained by :func:`train_classifier` on the Fashion-MNIST
  training images at the same size (padded to 32 x 32 and average-pooled, as the U-Net's
  data); its test accuracy is stored in the weights file, which is cached at a path the user
  gives. No pretrained weights are needed. Needs torch.
- ``inception``: the 2048 pool features of torch-fidelity's InceptionV3 (the TF-FID port,
  ``inception-v3-compat``), from a local weights file only (no network access): the images
  are mapped to uint8 RGB (grey repeated) and resized by torch-fidelity to 299 x 299. Needs
  torch and torch-fidelity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from specsched.data.fashion_mnist import fashion_mnist_images
from specsched.errors import InputError
from specsched.fileio import atomic_torch_save
from specsched.unet import require_torch

__all__ = [
    "FEATURES",
    "INCEPTION_WEIGHTS_HELP",
    "classifier_features",
    "extract_features",
    "inception_features",
    "load_or_train_classifier",
    "pixel_features",
    "train_classifier",
]

#: Feature extractors by name.
FEATURES = ("pixels", "classifier", "inception")
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_FILE)
INCEPTION_WEIGHTS_HELP = (
    "Inception features need torch-fidelity's InceptionV3 weights file, which cannot be "
    f"downloaded here: on a machine with network access download {INCEPTION_WEIGHTS_URL} "
    "(95,628,359 bytes, sha256 6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb"
    "9129b2), copy it to this machine and pass its path with --inception-weights PATH "
    "(inception_weights=PATH in Python; torch-fidelity's feature_extractor_weights_path); "
    "or use --features pixels or --features classifier")
CLASSIFIER_FORMAT = "specsched.classifier"


def _images(x, name: str = "images") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"{name}: expected images (n, H, W) or (n, H, W, C), got shape "
                         f"{x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: contains NaN or infinite values")
    return x


def pixel_features(images) -> np.ndarray:
    """Flattened pixels (n, H W C), float64; any (n, ...) array is flattened likewise."""
    x = np.asarray(images, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------- classifier

def _small_cnn(image_channels: int = 1, width: int = 32):
    """The classifier network (built lazily: torch is imported here)."""
    from torch import nn

    class SmallCNN(nn.Module):
        """conv(w) - pool - conv(2w) - pool - conv(4w) - global average pool - linear(10).

        ``features(x)`` returns the ``4 w`` pooled activations (the FD features).
        """

        def __init__(self):
            super().__init__()

            def block(i, o):
                return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

            self.body = nn.Sequential(*block(image_channels, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * width, 10))

        def features(self, x):
            return self.body(x)

        def forward(self, x):
            return self.head(self.body(x))

    return SmallCNN()


def _to_nchw(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def train_classifier(size: int = 16, *, epochs: int = 3, batch_size: int = 256,
                     lr: float = 2e-3, seed: int = 0, n_train: int | None = None,
                     progress: bool | None = None):
    """Train :class:`SmallCNN` on Fashion-MNIST at ``size`` x ``size``; report test accuracy.

    Parameters
    ----------
    size : {32, 16, 8, 4}
        Image side (as :func:`specsched.data.fashion_mnist.fashion_mnist_images`).
    epochs, batch_size, lr, seed :
        Adam with a cosine learning-rate decay, seeded.
    n_train : int or None
        Use only the first ``n_train`` training images (tests); None: all 60,000.
    progress : bool or None
        tqdm bar; None only on a terminal.

    Returns
    -------
    model : torch.nn.Module (eval mode)
    test_accuracy : float
        On the 10,000 test images.
    """
    torch = require_torch()
    x, y = fashion_mnist_images(size, "train", labels=True)
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    xt, yt = fashion_mnist_images(size, "test", labels=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = _small_cnn()
    X, Y = _to_nchw(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_steps = epochs * -(-X.shape[0] // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_steps)
    with tqdm(total=n_steps, desc="classifier", unit="step",
              disable=(not progress) if progress is not None else None) as bar:
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(X.shape[0], generator=gen)
            for i in range(0, X.shape[0], batch_size):
                idx = perm[i:i + batch_size]
                loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                bar.update(1)
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(_to_nchw(xt[i:i + 1000])).argmax(1)
                          for i in range(0, xt.shape[0], 1000)]).numpy()
    return model, float((pred == yt).mean())


def load_or_train_classifier(path, size: int = 16, *, progress: bool | None = None, **train_kw):
    """The classifier cached at ``path``: loaded if the file exists, else trained and saved.

    Returns
    -------
    model : torch.nn.Module (eval mode)
    info : dict
        ``size``, ``test_accuracy``, ``epochs``, ``seed`` (as stored).

    Raises
    ------
    InputError
        ``path`` is not a classifier file, or was trained for another image size.
    """
    torch = require_torch()
    path = Path(path)
    if path.is_file():
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise InputError(f"{path}: not a readable classifier file ({exc})") from None
        if not isinstance(ck, dict) or ck.get("format") != CLASSIFIER_FORMAT:
            raise InputError(f"{path}: not a specsched classifier file")
        if ck["info"]["size"] != size:
            raise InputError(f"{path}: classifier trained on {ck['info']['size']} x "
                             f"{ck['info']['size']} images, these are {size} x {size}; give "
                             "another --classifier path")
        model = _small_cnn()
        model.load_state_dict(ck["model"])
        return model.eval(), ck["info"]
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected the classifier's file path")
    model, acc = train_classifier(size, progress=progress, **train_kw)
    info = {"size": size, "test_accuracy": acc, "data": "fashion-mnist",
            **{k: v for k, v in train_kw.items() if isinstance(v, (int, float))}}
    atomic_torch_save({"format": CLASSIFIER_FORMAT, "model": model.state_dict(),
                       "info": info}, path)
    return model, info


def classifier_features(images, model, batch_size: int = 1000) -> np.ndarray:
    """Penultimate activations (n, 128) of a classifier for images in [-1, 1], float64."""
    import torch

    x = _images(images)
    with torch.inference_mode():
        out = [model.features(_to_nchw(x[i:i + batch_size])).double().numpy()
               for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(out)


# ---------------------------------------------------------------------------- inception

def inception_features(images, weights_path, batch_size: int = 100) -> np.ndarray:
    """torch-fidelity InceptionV3 pool features (n, 2048), float64, from a local weights file.

    Raises
    ------
    InputError
        No ``weights_path`` or a missing file (the message says how to obtain the file and
        where to pass it), or torch / torch-fidelity not installed.
    """
    if weights_path is None:
        raise InputError(INCEPTION_WEIGHTS_HELP)
    if not Path(weights_path).is_file():
        raise InputError(f"--inception-weights: {weights_path} not found. "
                         + INCEPTION_WEIGHTS_HELP)
    torch = require_torch()
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise InputError("inception features need torch-fidelity and a torchvision built for "
                         "the installed torch: `pip install torch==2.14.1 torchvision==0.29.1` "
                         '(a matching pair; PyPI\'s torchvision does not import beside the CPU '
                         "torch 2.13.0), then `pip install 'specsched[inception]'`") from None
    x = _images(images)
    if x.shape[3] == 1:
        x = np.repeat(x, 3, axis=3)
    if x.shape[3] != 3:
        raise InputError(f"images: inception takes 1 or 3 channels, got {x.shape[3]}")
    u8 = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                     feature_extractor_weights_path=str(weights_path))
    fe.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, u8.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(u8[i:i + batch_size]
                                                          .transpose(0, 3, 1, 2)))
            out.append(fe(batch)[0].double().numpy())
    return np.concatenate(out)


def extract_features(images, kind: str, *, classifier=None, inception_weights=None,
                     progress: bool | None = None) -> np.ndarray:
    """Features (n, d) of ``images`` (n, H, W[, C]) in [-1, 1] by extractor name.

    Parameters
    ----------
    kind : {"pixels", "classifier", "inception"}
    classifier : torch.nn.Module or path-like or None
        A loaded classifier, or the path of its cached weights (trained there when absent;
        required for ``"classifier"``).
    inception_weights : path-like or None
        torch-fidelity's InceptionV3 weights file (required for ``"inception"``).

    Raises
    ------
    InputError
        Unknown ``kind``, a missing classifier path or Inception weights (saying how to get
        them), or bad images.
    """
    if kind not in FEATURES:
        raise InputError(f"features: expected one of {', '.join(FEATURES)}, got {kind!r}")
    if kind == "pixels":
        return pixel_features(_images(images))
    if kind == "inception":
        return inception_features(images, inception_weights)
    if classifier is None:
        raise InputError("classifier features: give the path of the classifier's weights "
                         "file with --classifier PATH (it is trained on Fashion-MNIST and "
                         "cached there when the file does not exist)")
    x = _images(images)
    model = classifier
    if isinstance(classifier, (str, Path)):
        model, _ = load_or_train_classifier(classifier, x.shape[1], progress=progress)
    return classifier_features(x, model)
