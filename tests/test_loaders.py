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


# ---- one dtype rule for every loader (specsched.data.scaling) --------------------------------

def _images(n=12, shape=(6, 5, 3), seed=4):
    return np.random.default_rng(seed).integers(0, 256, size=(n,) + shape, dtype=np.uint8)


def _png_folder(folder, images):
    import skimage.io

    folder.mkdir()
    for i, im in enumerate(images):
        skimage.io.imsave(folder / f"im{i:03d}.png", im, check_contrast=False)
    return folder


def test_same_images_give_the_same_spectrum_in_every_format(tmp_path):
    from specsched.spectrum import estimate_spectrum

    rgb = _images(n=12, shape=(6, 5, 3))
    np.save(tmp_path / "u8.npy", rgb)
    np.savez_compressed(tmp_path / "u8.npz", x=rgb, labels=np.arange(12))
    (tmp_path / "shards").mkdir()
    for i in range(3):
        np.save(tmp_path / "shards" / f"s{i}.npy", rgb[4 * i : 4 * i + 4])
    sources = {"png": _png_folder(tmp_path / "png", rgb), "npy": tmp_path / "u8.npy",
               "npz": tmp_path / "u8.npz", "shards": tmp_path / "shards"}
    ref = np.cov(rgb.reshape(12, -1) / 255.0 * 2 - 1, rowvar=False)
    ref = np.sort(np.linalg.eigvalsh(ref))[::-1]
    with pytest.warns(UserWarning):  # the .npy / .npz guesses say so (tested below)
        spectra = {k: estimate_spectrum(open_source(v), "full", chunk_size=5)
                   for k, v in sources.items()}
    for name, s in spectra.items():
        assert s.n_samples == 12, name
        np.testing.assert_allclose(s.eigenvalues, np.maximum(ref, 0), rtol=0, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_array_equal(spectra["npy"].eigenvalues, spectra["png"].eigenvalues)


def test_cifar_batch_reads_the_same_samples_as_pngs(tmp_path):
    from specsched.data.cifar import CIFAR10_BATCHES

    rgb = _images(n=4, shape=(32, 32, 3))
    (tmp_path / "cifar").mkdir()
    flat = rgb.transpose(0, 3, 1, 2).reshape(4, 3072)  # CIFAR's planar layout
    with open(tmp_path / "cifar" / CIFAR10_BATCHES[0], "wb") as fh:
        pickle.dump({b"data": flat, b"labels": [0] * 4}, fh)
    a = open_source(tmp_path / "cifar").load()
    b = open_source(_png_folder(tmp_path / "png", rgb)).load()
    np.testing.assert_array_equal(a, b)


def test_same_gray_images_as_png_idx_and_npy(tmp_path):
    from specsched.spectrum import estimate_spectrum

    gray = _images(n=9, shape=(7, 6))
    png = _png_folder(tmp_path / "png", gray)
    (tmp_path / "g-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(gray)))
    np.save(tmp_path / "g.npy", gray)
    got = [estimate_spectrum(open_source(p), "full", chunk_size=4).eigenvalues
           for p in (png, tmp_path / "g-idx3-ubyte.gz")]
    with pytest.warns(UserWarning, match="uint8 samples read as 8-bit pixel values"):
        got.append(estimate_spectrum(open_source(tmp_path / "g.npy"), "full").eigenvalues)
    for lam in got[1:]:
        np.testing.assert_allclose(lam, got[0], rtol=0, atol=1e-13)


def test_uint16_and_bool_arrays_read_as_pixels(tmp_path):
    import skimage.io

    u16 = np.random.default_rng(5).integers(0, 65536, size=(3, 4, 4), dtype=np.uint16)
    (tmp_path / "png").mkdir()
    for i, im in enumerate(u16):
        skimage.io.imsave(tmp_path / "png" / f"{i}.png", im, check_contrast=False)
    np.save(tmp_path / "u16.npy", u16)
    with pytest.warns(UserWarning, match="uint16 samples read as 16-bit pixel values"):
        a = open_source(tmp_path / "u16.npy").load()
    b = open_source(tmp_path / "png").load()
    np.testing.assert_array_equal(a, b[..., 0])
    np.testing.assert_allclose(a, u16 / 65535.0 * 2 - 1, rtol=0, atol=1e-15)
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, False]]))
    with pytest.warns(UserWarning, match=r"bool samples read as binary pixel values \(False "
                                         r"-> -1, True -> 1\)"):
        np.testing.assert_array_equal(open_source(tmp_path / "b.npy").load(),
                                      [[1.0, -1.0], [-1.0, -1.0]])


def test_float_arrays_are_read_as_stored_without_warning(tmp_path):
    import warnings

    x = np.random.default_rng(6).normal(size=(5, 3)).astype(np.float32) * 300
    np.save(tmp_path / "f.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunks = list(open_source(tmp_path / "f.npy").iter_chunks(2))
    assert all(c.dtype == np.float32 for c in chunks)  # converted one chunk at a time later
    np.testing.assert_array_equal(np.concatenate(chunks), x)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_integers_without_a_standard_scaling_are_refused(tmp_path, capsys, dtype):
    from specsched.cli import main

    np.save(tmp_path / "i.npy", np.arange(12).reshape(4, 3).astype(dtype))
    with pytest.raises(InputError, match=f"i.npy: {np.dtype(dtype)} samples have no standard "
                                         "scaling.*convert them to floating point"):
        open_source(tmp_path / "i.npy")
    assert main(["spectrum", str(tmp_path / "i.npy"), "--out", str(tmp_path / "s.npz")]) == 2
    assert "no standard scaling" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


def test_shards_warn_once_and_must_share_a_scaling(tmp_path, capsys):
    from specsched.cli import main

    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"s{i}.npy", _images(n=5, shape=(3, 3), seed=i))
    assert main(["spectrum", str(folder), "--out", str(tmp_path / "s.npz")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "uint8 samples read as 8-bit pixel values" in err
    np.save(folder / "s3.npy", np.zeros((5, 3, 3), np.float32))
    with pytest.raises(InputError, match="s3.npy: samples stored as float32, but s0.npy as "
                                         "uint8, which is read with another scaling"):
        open_source(folder)


def test_fortran_npy_compressed_npz_and_truncated_files(tmp_path):
    x = np.random.default_rng(7).normal(size=(11, 4, 3))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    np.savez_compressed(tmp_path / "c.npz", samples=x, other=np.ones(2))
    np.savez(tmp_path / "fz.npz", np.asfortranarray(x))
    for name in ("f.npy", "c.npz", "fz.npz"):
        src = open_source(tmp_path / name, part_size=4)
        assert [p.n for p in src.parts] == [4, 4, 3], name
        np.testing.assert_array_equal(np.concatenate(list(src.iter_chunks(3))), x,
                                      err_msg=name)
    with open(tmp_path / "t.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (11, 12)})
        fh.write(x.tobytes()[: 8 * 12 * 5 + 3])
    src = open_source(tmp_path / "t.npy")
    with pytest.raises(InputError, match=r"t.npy: truncated file: its header announces shape "
                                         r"\(11, 12\), rows from 4 are missing"):
        list(src.iter_chunks(4))


def test_idx_is_read_chunk_by_chunk(tmp_path):
    from specsched.data.idx import iter_idx_rows, read_idx_header

    x = np.random.default_rng(8).integers(0, 256, size=(10, 3, 2), dtype=np.uint8)
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(x)))
    assert read_idx_header(path)[0] == (10, 3, 2)
    chunks = list(iter_idx_rows(path, 4))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), x)
