"""Frechet distance and KID against closed forms and independent implementations; feature
extractors and the ``fid`` command."""

import argparse
import importlib.util
import sys

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import ortho_group

from specsched.errors import InputError
from specsched.metrics import (
    extract_features,
    frechet_distance,
    frechet_distance_features,
    gaussian_fit,
    kernel_distance,
    polynomial_mmd2_unbiased,
)
from specsched.metrics.features import INCEPTION_WEIGHTS_HELP
from specsched.theory.losses import w2_terms

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (optional extra unet)")


def _fid_args(argv):
    from specsched.cli import fid as command

    parser = argparse.ArgumentParser(prog="specsched")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fid", *argv])


def _random_psd(rng, d, rank=None):
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d


def test_commuting_covariances_closed_form():
    """S_a = U diag(a) U^T, S_b = U diag(b) U^T: FD = |dmu|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(0)
    d = 12
    U = ortho_group.rvs(d, random_state=1)
    a, b = rng.uniform(0.01, 4, d), rng.uniform(0.01, 4, d)
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    fd = frechet_distance(mu_a, (U * a) @ U.T, mu_b, (U * b) @ U.T)
    assert fd == pytest.approx(expected, rel=1e-10)


def test_diagonal_case_equals_theory_w2_squared():
    """Pixel FD of diagonal Gaussians is the theory's W2^2 (sum of w2_terms)."""
    rng = np.random.default_rng(2)
    lam = np.exp(rng.uniform(-5, 2, 30))  # data variances
    var = lam * rng.uniform(0.3, 2.0, 30)  # generated variances
    err = rng.normal(0, 0.1, 30)  # mean error
    mean = rng.standard_normal(30)
    fd = frechet_distance(mean, np.diag(lam), mean + err, np.diag(var))
    assert fd == pytest.approx(w2_terms(lam, var, err).sum(), rel=1e-10)


def test_general_case_against_scipy_sqrtm_and_symmetry():
    rng = np.random.default_rng(3)
    d = 20
    S_a, S_b = _random_psd(rng, d), _random_psd(rng, d)
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    cross = np.trace(scipy.linalg.sqrtm(S_a @ S_b)).real  # the usual (non-symmetric) form
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(S_a) + np.trace(S_b) - 2 * cross
    assert frechet_distance(mu_a, S_a, mu_b, S_b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu_b, S_b, mu_a, S_a) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_and_identity():
    rng = np.random.default_rng(4)
    S = _random_psd(rng, 30, rank=5)  # fewer samples than features
    mu = rng.standard_normal(30)
    assert frechet_distance(mu, S, mu, S) == pytest.approx(0.0, abs=1e-9)
    T = _random_psd(rng, 30, rank=3)
    fd = frechet_distance(mu, S, mu, T)
    assert np.isfinite(fd) and fd > 0
    with pytest.raises(InputError, match="shapes"):
        frechet_distance(mu, S, mu[:3], T)


def test_features_fd_converges_to_closed_form():
    rng = np.random.default_rng(5)
    d, n = 4, 200_000
    lam_a, lam_b = np.array([2.0, 1.0, 0.5, 0.1]), np.array([1.0, 1.0, 0.2, 0.3])
    A = rng.standard_normal((n, d)) * np.sqrt(lam_a)
    B = rng.standard_normal((n, d)) * np.sqrt(lam_b) + 0.1
    expected = d * 0.01 + np.sum((np.sqrt(lam_a) - np.sqrt(lam_b)) ** 2)
    assert frechet_distance_features(A, B) == pytest.approx(expected, rel=0.02)
    fit = gaussian_fit(A)
    np.testing.assert_allclose(fit.covariance, np.cov(A, rowvar=False), rtol=1e-10)


def test_mmd_unbiased_against_naive_loops():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((9, 3)) + 0.5

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    m, n = len(a), len(b)
    kaa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kbb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kab = sum(k(x, y) for x in a for y in b) / (m * n)
    assert polynomial_mmd2_unbiased(a, b) == pytest.approx(kaa + kbb - 2 * kab, rel=1e-12)


def test_kid_unbiased_near_zero_and_detects_shift():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    same = kernel_distance(a, b, rng=np.random.default_rng(0), n_subsets=50, subset_size=200)
    assert abs(same.mean) < 4 * same.std_error + 1e-12
    assert same.values.shape == (50,) and same.subset_size == 200
    assert same.std_error == pytest.approx(same.std / np.sqrt(50))
    shifted = kernel_distance(a, b + 0.5, rng=np.random.default_rng(0), n_subsets=50,
                              subset_size=200)
    assert shifted.mean > 10 * shifted.std_error


def test_feature_extractor_errors():
    x = np.zeros((4, 8, 8, 1))
    assert extract_features(x, "pixels").shape == (4, 64)
    with pytest.raises(InputError, match="features"):
        extract_features(x, "lpips")
    with pytest.raises(InputError) as exc:
        extract_features(x, "inception")
    msg = str(exc.value)
    assert "--inception-weights PATH" in msg and "weights-inception-2015-12-05" in msg
    assert "https://github.com/toshas/torch-fidelity/releases" in msg
    with pytest.raises(InputError, match="--classifier PATH"):
        extract_features(x, "classifier")


def test_inception_without_torch_fidelity_says_how_to_install(tmp_path, monkeypatch):
    """torch-fidelity absent (None in sys.modules blocks the import): the message names the
    matching torch/torchvision pair and the extra, not a traceback."""
    pytest.importorskip("torch")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(InputError, match=r"torchvision==0\.29\.1.*specsched\[inception\]"):
        extract_features(np.zeros((2, 8, 8, 1)), "inception", inception_weights=weights)


def test_fid_command_pixels(tmp_path, capsys):
    rng = np.random.default_rng(8)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, rng.uniform(-1, 1, (300, 4, 4, 1)))
    np.save(b, rng.uniform(-1, 1, (400, 4, 4)))
    args = _fid_args(["--samples", str(a), "--reference", str(b), "--json"])
    assert args.run(args) == 0
    import json

    record = json.loads(capsys.readouterr().out)
    assert record["dimension"] == 16 and record["n_reference"] == 400
    expected = frechet_distance_features(np.load(a).reshape(300, -1),
                                         np.load(b).reshape(400, -1))
    assert record["fd"] == pytest.approx(expected)
    args = _fid_args(["--samples", str(a), "--reference", str(b), "--features", "inception"])
    with pytest.raises(InputError, match="--inception-weights"):
        args.run(args)


def test_fid_command_fashion_mnist_reference(tmp_path, capsys):
    from specsched.data.sources import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    from specsched.data.fashion_mnist import fashion_mnist_images

    a = tmp_path / "a.npy"
    np.save(a, fashion_mnist_images(8, "train")[:2000])
    args = _fid_args(["--samples", str(a), "--reference", "fashion-mnist", "--json"])
    assert args.run(args) == 0
    import json

    fd = json.loads(capsys.readouterr().out)["fd"]
    assert 0 < fd < 0.5  # train vs test split of the same data: small


@needs_torch
def test_classifier_trains_caches_and_reloads(tmp_path):
    import torch

    from specsched.data.sources import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed")
    from specsched.metrics.features import classifier_features, load_or_train_classifier

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path / "clf.pt"
        model, info = load_or_train_classifier(path, 8, epochs=2, n_train=4000,
                                               batch_size=64, progress=False)
        assert info["test_accuracy"] > 0.5 and path.is_file()
        again, info2 = load_or_train_classifier(path, 8)
        assert info2["test_accuracy"] == info["test_accuracy"]
        x = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 1))
        np.testing.assert_array_equal(classifier_features(x, model),
                                      classifier_features(x, again))
        assert extract_features(x, "classifier", classifier=path).shape == (5, 128)
        with pytest.raises(InputError, match="8 x 8"):
            load_or_train_classifier(path, 16)
    finally:
        torch.set_num_threads(old)


def test_inception_help_names_the_file():
    assert "95,628,359 bytes" in INCEPTION_WEIGHTS_HELP
