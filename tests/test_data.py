"""Tests of specsched.data: array and image loaders, built-in datasets."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io

from specsched.data import (
    BUILTIN_DATASETS,
    DEFAULT_DATASET,
    DataScalingWarning,
    cifar10_eigenvalues,
    digits,
    load_array,
    load_image_folder,
    load_samples,
    natural_patches,
)
from specsched.errors import InputError

# ---------------------------------------------------------------- arrays


def test_load_array_npy_returns_float64_values(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 7
    np.save(tmp_path / "x.npy", x)
    out = load_array(tmp_path / "x.npy")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x.astype(np.float64))  # floats: values as stored


def test_load_array_reads_integers_by_the_dtype_rule(tmp_path):
    u8 = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    np.save(tmp_path / "u8.npy", u8)
    with pytest.warns(DataScalingWarning, match=r"u8.npy: uint8 samples read as 8-bit pixel"):
        out = load_array(tmp_path / "u8.npy")
    np.testing.assert_allclose(out, u8 / 255.0 * 2 - 1, rtol=0, atol=1e-15)
    np.save(tmp_path / "i16.npy", np.arange(24, dtype=np.int16).reshape(4, 6))
    with pytest.raises(InputError, match="i16.npy: int16 samples have no standard scaling"):
        load_array(tmp_path / "i16.npy")


@pytest.mark.parametrize("key", ["x", "samples", "data"])
def test_load_array_npz_known_key_among_several(tmp_path, key):
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.savez(tmp_path / "a.npz", **{key: x, "labels": np.arange(5)})
    np.testing.assert_array_equal(load_array(tmp_path / "a.npz"), x)


def test_load_array_npz_single_array_any_key(tmp_path):
    x = np.ones((3, 2))
    np.savez(tmp_path / "a.npz", whatever=x)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npz"), x)


def test_load_array_npz_ambiguous_keys(tmp_path):
    path = tmp_path / "amb.npz"
    np.savez(path, foo=np.ones((2, 2)), bar=np.zeros((2, 2)))
    with pytest.raises(InputError, match="amb.npz") as info:
        load_array(path)
    assert "foo" in str(info.value) and "bar" in str(info.value)


def test_load_array_nan_reports_count_and_first_sample(tmp_path):
    x = np.zeros((6, 4))
    x[3, 1] = np.nan
    x[5, 0] = np.inf
    path = tmp_path / "bad.npy"
    np.save(path, x)
    with pytest.raises(InputError, match="bad.npy") as info:
        load_array(path)
    msg = str(info.value)
    assert "2 non-finite" in msg and "sample 3" in msg


def test_load_array_empty(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, 3)))
    with pytest.raises(InputError, match="empty.npy.*no samples"):
        load_array(path)


def test_load_array_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.npy: no such file"):
        load_array(tmp_path / "nope.npy")


def test_load_array_non_numeric(tmp_path):
    path = tmp_path / "str.npy"
    np.save(path, np.array(["a", "b"]))
    with pytest.raises(InputError, match="str.npy.*dtype"):
        load_array(path)


def test_load_array_garbage_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(InputError, match="junk.npz"):
        load_array(path)


# ---------------------------------------------------------------- images


def _write_png(path, image):
    skimage.io.imsave(path, image, check_contrast=False)


def test_load_image_folder_scaling_order_and_alpha(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(4, 5, 4), dtype=np.uint8)  # RGBA: alpha dropped
    _write_png(tmp_path / "b.PNG", b)
    _write_png(tmp_path / "a.png", a)
    (tmp_path / "notes.txt").write_text("ignored")
    x = load_image_folder(tmp_path)
    assert x.shape == (2, 4, 5, 3) and x.dtype == np.float64
    np.testing.assert_allclose(x[0], a / 255.0 * 2 - 1)  # sorted by name: a first
    np.testing.assert_allclose(x[1], b[..., :3] / 255.0 * 2 - 1)


def test_load_image_folder_16bit_and_gray(tmp_path):
    g = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    _write_png(tmp_path / "g.png", g)
    x = load_image_folder(tmp_path)
    assert x.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(x[0, ..., 0], g / 65535.0 * 2 - 1)


def test_load_image_folder_grayscale_conversion(tmp_path):
    rgb = np.zeros((3, 3, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green: luminance 0.7154 (BT.709)
    _write_png(tmp_path / "a.png", rgb)
    x = load_image_folder(tmp_path, grayscale=True)
    assert x.shape == (1, 3, 3, 1)
    np.testing.assert_allclose(x, 0.7154 * 2 - 1, atol=1e-4)


def test_load_image_folder_mixed_sizes(tmp_path):
    _write_png(tmp_path / "one.png", np.zeros((4, 4, 3), dtype=np.uint8))
    _write_png(tmp_path / "two.png", np.zeros((5, 4, 3), dtype=np.uint8))
    with pytest.raises(InputError) as info:
        load_image_folder(tmp_path)
    msg = str(info.value)
    assert "one.png" in msg and "two.png" in msg and "(4, 4, 3)" in msg and "(5, 4, 3)" in msg


def test_load_image_folder_empty_and_unreadable(tmp_path):
    with pytest.raises(InputError, match="no image files"):
        load_image_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        load_image_folder(tmp_path)


# ---------------------------------------------------------------- built-ins


def test_builtin_names():
    assert BUILTIN_DATASETS == ("natural-patches", "digits", "cifar10")
    assert DEFAULT_DATASET == "natural-patches"


def test_natural_patches_deterministic_range_shape():
    a = natural_patches(patch_size=8, n_patches=101, seed=3)
    b = natural_patches(patch_size=8, n_patches=101, seed=3)
    c = natural_patches(patch_size=8, n_patches=101, seed=4)
    assert a.shape == (101, 8, 8, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0
    # values are k / 255 * 2 - 1 for integer k
    k = (a + 1.0) / 2.0 * 255.0
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)


def test_natural_patches_come_from_the_photographs():
    import skimage.data

    x = natural_patches(patch_size=4, n_patches=10, seed=0)  # 2 per image, astronaut first
    img = skimage.data.astronaut() / 255.0 * 2 - 1
    windows = np.lib.stride_tricks.sliding_window_view(img, (4, 4), axis=(0, 1))
    windows = windows.transpose(0, 1, 3, 4, 2)  # (H-3, W-3, 4, 4, 3)
    hits = np.all(windows == x[0], axis=(2, 3, 4))
    assert hits.any()


def test_natural_patches_bad_arguments():
    with pytest.raises(InputError, match="patch_size"):
        natural_patches(patch_size=0)
    with pytest.raises(InputError, match="patch_size"):
        natural_patches(patch_size=1000, n_patches=5)
    with pytest.raises(InputError, match="n_patches"):
        natural_patches(n_patches=2.5)


def test_digits():
    x = digits()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float64
    assert x.min() == -1.0 and x.max() == 1.0


def test_cifar10_eigenvalues():
    lam = cifar10_eigenvalues()
    assert lam.shape == (3072,) and lam.dtype == np.float64
    assert (lam >= 0).all() and not np.signbit(lam).any()
    assert abs(lam.sum() - 761.6) < 0.1


def test_load_samples_sources(tmp_path):
    x, label = load_samples("digits")
    assert x.shape == (1797, 8, 8) and label == "digits"
    np.save(tmp_path / "s.npy", np.ones((3, 2)))
    x, label = load_samples(tmp_path / "s.npy")
    assert x.shape == (3, 2) and label.endswith("s.npy")
    (tmp_path / "imgs").mkdir()
    _write_png(tmp_path / "imgs" / "im.png", np.zeros((2, 3, 3), dtype=np.uint8))
    x, label = load_samples(tmp_path / "imgs")
    assert x.shape == (1, 2, 3, 3)
    with pytest.raises(InputError, match="eigenvalues only"):
        load_samples("cifar10")
    with pytest.raises(InputError, match="natural-patches, digits, cifar10"):
        load_samples("no-such-dataset")
