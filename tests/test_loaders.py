"""Loaders: IDX, CIFAR-10 batches, image and audio folders, Debian datasets; bad input."""

import gzip
import pickle

import numpy as np
import pytest

from specsched.data.cifar import read_cifar10_batch
from specsched.data.idx import load_idx_images, read_idx
from specsched.data.sources import FASHION_MNIST_DIR, SONIC_PI_DIR, open_source
from specsched.errors import InputError


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_roundtrip(tmp_path, compressed):
    x = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    path = tmp_path / ("a-idx3-ubyte.gz" if compressed else "a-idx3-ubyte")
    data = _idx_bytes(x)
    path.write_bytes(gzip.compress(data) if compressed else data)
    np.testing.assert_array_equal(load_idx_images(path), x)
    src = open_source(path)
    assert src.sample_shape == (5, 4) and src.n_samples == 7
    np.testing.assert_allclose(src.load(), x / 255.0 * 2 - 1)


def test_idx_truncated_and_bad_magic(tmp_path):
    x = np.zeros((10, 3, 3), np.uint8)
    path = tmp_path / "t-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(x)[:-5]))
    with pytest.raises(InputError, match="t-idx3-ubyte.gz: truncated IDX file"):
        read_idx(path)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04" + b"\0" * 20)
    with pytest.raises(InputError, match="bad.idx: not an IDX file"):
        read_idx(bad)
    labels = tmp_path / "l-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.arange(5, dtype=np.uint8)))
    with pytest.raises(InputError, match="labels file"):
        load_idx_images(labels)


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    for name in ("data_batch_1", "test_batch"):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": [0] * 6}, fh)
    img = read_cifar10_batch(tmp_path / "data_batch_1")
    assert img.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(img[2, :, :, 1].ravel(), data[2, 1024:2048])  # green plane
    src = open_source(tmp_path)
    assert src.kind == "cifar10" and len(src.parts) == 2
    (tmp_path / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(InputError, match="data_batch_2"):
        open_source(tmp_path).load()


def test_image_folder_resize_crop_gray_and_bad_file(tmp_path):
    import skimage.io

    rng = np.random.default_rng(2)
    for i in range(3):
        skimage.io.imsave(tmp_path / f"im{i}.png",
                          rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8),
                          check_contrast=False)
    src = open_source(tmp_path, crop=18, size=(8, 8), grayscale=True, files_per_part=2)
    assert src.sample_shape == (8, 8, 1) and len(src.parts) == 2
    x = src.load()
    assert x.shape == (3, 8, 8, 1) and np.all(np.abs(x) <= 1)
    with pytest.raises(InputError, match=r"im1.png: image of shape \(21, 24, 3\)"):
        open_source(tmp_path).load()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a data file"):
        open_source(tmp_path)


def test_audio_folder_frames_and_unreadable(tmp_path):
    sf = pytest.importorskip("soundfile")
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "a.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.5, 8000)
    sf.write(tmp_path / "b.flac", 0.1 * np.sin(2 * np.pi * 100 * t), 8000)
    src = open_source(tmp_path, sample_rate=4000, frame_length=1000)
    assert src.sample_shape == (1000,) and src.n_samples == 8 and src.kind == "audio"
    x = src.load()
    assert x.shape == (8, 1000) and np.abs(x).max() <= 0.6
    (tmp_path / "c.wav").write_bytes(b"RIFF not really")
    with pytest.raises(InputError, match="c.wav: cannot read the audio file"):
        open_source(tmp_path, sample_rate=4000, frame_length=1000)


def test_system_datasets_missing_or_present():
    if FASHION_MNIST_DIR.is_dir():
        src = open_source("fashion-mnist")
        assert src.sample_shape == (28, 28) and src.n_samples == 70000
    else:
        with pytest.raises(InputError, match="apt-get install -y dataset-fashion-mnist"):
            open_source("fashion-mnist")
    if not SONIC_PI_DIR.is_dir():
        with pytest.raises(InputError, match="apt-get install -y sonic-pi-samples"):
            open_source("sonic-pi-samples")


def test_cifar10_builtin_is_eigenvalues_only():
    with pytest.raises(InputError, match="eigenvalues only"):
        open_source("cifar10")
