"""One chunked route from samples to a spectrum: chunk sizes honoured, memory and float64 range
checked before (or while) reading, cheap checks first, advice for other tools' spectrum files.

The CLI runs in-process (``specsched.cli.main``). Nothing here allocates more than a few MB:
the memory refusals use headers and a monkeypatched amount of available memory.
"""

import json
import os

import numpy as np
import pytest
from cli_helpers import refused, run
from skimage import io as skio

from specsched.data.sources import open_source
from specsched.errors import InputError
from specsched.spectrum import (
    FourierEstimator,
    StreamingCovariance,
    estimate_spectrum,
    load_spectrum,
    spectrum_from_samples,
)
from specsched.spectrum import memory as memory_module
from specsched.spectrum.memory import format_bytes


@pytest.fixture
def chunks_seen(monkeypatch):
    """Sizes of every chunk folded into any StreamingCovariance or FourierEstimator."""
    seen = []
    for cls in (StreamingCovariance, FourierEstimator):
        original = cls.partial_fit

        def spy(self, X, name="X", _original=original):
            seen.append(int(X.shape[0]))
            return _original(self, X, name)

        monkeypatch.setattr(cls, "partial_fit", spy)
    return seen


def _samples(tmp_path, n=50, shape=(8, 8), seed=0, name="x.npy"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + shape).cumsum(axis=1).astype(np.float32)
    np.save(tmp_path / name, x)
    return tmp_path / name, x


def _truncated_npy(path, shape, dtype="<f4"):
    """A .npy whose header announces ``shape`` but holds only a few bytes of data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 16)
    return path


# ---- one route, --chunk-size everywhere ----------------------------------------------------

def test_load_spectrum_default_full_goes_chunk_by_chunk(tmp_path, chunks_seen):
    path, x = _samples(tmp_path, n=50)
    s = load_spectrum(path, chunk_size=7)  # default method full, no options
    assert chunks_seen and max(chunks_seen) <= 7 and sum(chunks_seen) == 50
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.reshape(50, -1).astype(np.float64),
                                            rowvar=False)))[::-1]
    np.testing.assert_allclose(s.eigenvalues, np.maximum(ref, 0), rtol=1e-10, atol=1e-12)
    chunks_seen.clear()
    d = load_spectrum("digits", chunk_size=100)  # a built-in takes the same route
    assert max(chunks_seen) == 100 and sum(chunks_seen) == 1797 and d.n_samples == 1797


def test_spectrum_from_samples_is_the_estimator(tmp_path):
    _, x = _samples(tmp_path, n=40, shape=(3, 4))
    a = spectrum_from_samples(x, chunk_size=9, source="x")
    b = StreamingCovariance().fit(x, chunk_size=9).to_spectrum(source="x")
    c = estimate_spectrum(x, "full", chunk_size=9)
    assert a.eigenvalues.tobytes() == b.eigenvalues.tobytes()
    np.testing.assert_allclose(a.eigenvalues, c.eigenvalues, rtol=1e-13)


def test_chunk_size_is_honoured_by_every_command(tmp_path, capsys, chunks_seen):
    path, _ = _samples(tmp_path, n=50)
    commands = [
        ["spectrum", path, "--out", tmp_path / "s.npz"],
        ["optimize", "--data", path, "--steps", "3", "--out", tmp_path / "o"],
        ["sweep", "--data", path, "--steps", "3", "--samplers", "ddim", "--losses", "w2",
         "--jobs", "1", "--out", tmp_path / "sw"],
        ["evaluate", "--spectrum", path, "--schedule", "linear", "--steps", "5", "--json"],
        ["sample", "--schedule", tmp_path / "o" / "schedule_ddim_w2_S3.json", "--spectrum",
         path, "--n", "4", "--out", tmp_path / "samples.npy"],
        ["analyze", path, "--out", tmp_path / "an", "--steps", "3"],
    ]
    for argv in commands:
        chunks_seen.clear()
        code, _, err = run(argv + ["--chunk-size", "7"], capsys)
        assert code == 0, (argv[0], err)
        assert chunks_seen and max(chunks_seen) <= 7, (argv[0], chunks_seen)
        assert sum(chunks_seen) % 50 == 0, (argv[0], chunks_seen)  # whole passes


# ---- memory: refused before any allocation, with the numbers and a way out -------------------

def _patch_available(monkeypatch, nbytes):
    monkeypatch.setattr(memory_module, "available_memory", lambda: nbytes)


@pytest.mark.parametrize("gray, numbers", [
    (False, ("3,145,728 x 3,145,728 float64 covariance", "79.2 TB (72 TiB)")),
    (True, ("1,048,576 x 1,048,576 float64 covariance", "8.8 TB (8 TiB)")),
])
def test_megapixel_images_full_covariance_refused(tmp_path, capsys, monkeypatch, chunks_seen,
                                                  gray, numbers):
    _patch_available(monkeypatch, 16 * 2**30)
    folder = tmp_path / "photos"
    folder.mkdir()
    ramp = np.linspace(0, 255, 1024 * 1024 * 3).astype(np.uint8).reshape(1024, 1024, 3)
    for i in range(2):
        skio.imsave(folder / f"im{i}.png", ramp, check_contrast=False)
    argv = ["spectrum", folder, "--out", tmp_path / "s.npz"] + (["--grayscale"] if gray else [])
    code, _, err = run(argv, capsys)
    assert refused(code, err, "photos", *numbers, "17.2 GB (16 GiB) available", "--size HxW",
                   "--method pca --rank K", "--method fourier")
    assert not (tmp_path / "s.npz").exists() and chunks_seen == []


def test_memory_limits_of_each_method(tmp_path, monkeypatch, chunks_seen):
    path, _ = _samples(tmp_path, n=60, shape=(16, 16, 3))  # d = 768
    source = open_source(path)
    full_state = 5 * 8 * 768**2
    _patch_available(monkeypatch, 3 * 8 * 768**2)  # 80 % of it: below full and dense PCA
    with pytest.raises(InputError, match=r"x.npy: d = 768 values per sample: --method full "
                                         r"needs a 768 x 768 float64 covariance"):
        estimate_spectrum(source, "full")
    with pytest.raises(InputError, match=r"--method pca \(dense"):
        estimate_spectrum(source, "pca", rank=4)
    # randomized PCA and the Fourier model fit where the full covariance does not
    assert estimate_spectrum(source, "pca", rank=4, pca_solver="randomized").rank == 4
    assert estimate_spectrum(source, "fourier").method == "fourier"
    # the covariance fits, the chunk does not: the advice is a chunk size that fits
    per_sample = 768 * (4 + 8)  # float32 as read + its centred float64 copy
    _patch_available(monkeypatch, int((full_state + 10 * per_sample + 1000) / 0.8))
    chunks_seen.clear()
    with pytest.raises(InputError, match=r"one chunk of 60 samples.*pass --chunk-size 10 or "
                                         r"less"):
        estimate_spectrum(source, "full")
    assert chunks_seen == []
    assert estimate_spectrum(source, "full", chunk_size=10).n_samples == 60
    assert max(chunks_seen) == 10


def test_memory_refused_from_the_header_before_reading(tmp_path, capsys, monkeypatch):
    _patch_available(monkeypatch, 16 * 2**30)
    path = _truncated_npy(tmp_path / "huge.npy", (10, 100_000))  # data missing
    code, _, err = run(["spectrum", path, "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "huge.npy", "100,000 x 100,000 float64 covariance")


def test_format_bytes():
    assert format_bytes(8 * 3072**2) == "75.5 MB (72 MiB)"
    assert format_bytes(2**43) == "8.8 TB (8 TiB)"
    assert format_bytes(512) == "512 bytes"


# ---- cheap checks before expensive work --------------------------------------------------------

def test_cheap_checks_run_before_the_data_is_read(tmp_path, capsys):
    path = _truncated_npy(tmp_path / "t.npy", (10, 4))  # reading it would fail
    code, _, err = run(["spectrum", path, "--method", "pca", "--rank", "9", "--out",
                        tmp_path / "s.npz"], capsys)
    assert refused(code, err, "--rank: must be at most d = 4")
    (tmp_path / "taken.npz").write_bytes(b"mine")
    code, _, err = run(["spectrum", path, "--out", tmp_path / "taken.npz"], capsys)
    assert refused(code, err, "taken.npz: output file exists already")
    code, _, err = run(["spectrum", path, "--rank", "2", "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "--rank: only with --method pca")
    code, _, err = run(["optimize", "--data", path, "--ab-min", "0.5", "--ab-max", "0.4",
                        "--out", tmp_path / "o"], capsys)
    assert refused(code, err, "--ab-max: expected a level above the lower bound")
    code, _, err = run(["sweep", "--data", path, "--steps", "3", "--delta", "0.5", "--out",
                        tmp_path / "sw"], capsys)
    assert refused(code, err, "do not fit")
    code, _, err = run(["analyze", path, "--schedule", "nope", "--out", tmp_path / "an"],
                       capsys)
    assert refused(code, err, "--schedule")
    # and the data is read (and found truncated) only once everything else is fine
    code, _, err = run(["spectrum", path, "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "t.npy", "truncated")
    assert (tmp_path / "taken.npz").read_bytes() == b"mine"
    assert not any((tmp_path / n).exists() for n in ("s.npz", "o", "sw", "an"))



def test_a_named_pipe_as_data_is_refused(tmp_path, capsys):
    # chunks are read at their file offsets, which a pipe cannot give: refused before reading
    fifo = tmp_path / "in.npy"
    os.mkfifo(fifo)
    for argv in (["spectrum", fifo, "--out", tmp_path / "s.npz"],
                 ["analyze", fifo, "--out", tmp_path / "an"]):
        code, _, err = run(argv, capsys)
        assert refused(code, err, "in.npy: expected a regular .npy or .npz file",
                       "a named pipe")
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "an").exists()


# ---- extreme values -------------------------------------------------------------------------

def _scaled(scale, n=40, d=6):
    return np.random.default_rng(3).standard_normal((n, d)) * scale


@pytest.mark.parametrize("method, kw", [("full", {}), ("fourier", {}), ("pca", {"rank": 2}),
                                        ("pca", {"rank": 2, "pca_solver": "randomized"})])
def test_overflow_and_underflow_are_named_with_a_rescaling(method, kw):
    with pytest.raises(InputError, match=r"overflowed float64: samples reach \|x\| = .*e\+200"
                                         r".*divide it by 1e\+20[01]"):
        estimate_spectrum(_scaled(1e200), method, **kw)
    with pytest.raises(InputError, match=r"underflowed float64.*multiply it by 1e\+19[89]"):
        estimate_spectrum(_scaled(1e-200), method, **kw)
    # constant data really have no variance; large but representable data are fine
    with pytest.raises(InputError, match="no variance"):
        estimate_spectrum(np.full((10, 6), 1e-200), method, **kw)
    s = estimate_spectrum(_scaled(1e100), method, **kw)
    ref = estimate_spectrum(_scaled(1.0), method, **kw)
    np.testing.assert_allclose(s.eigenvalues, ref.eigenvalues * 1e200, rtol=1e-8)


def test_overflow_on_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "big.npy", _scaled(1e200))
    code, _, err = run(["spectrum", tmp_path / "big.npy", "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "big.npy: the second moments overflowed float64", "rescale")
    np.save(tmp_path / "tiny.npy", _scaled(1e-200))
    code, _, err = run(["optimize", "--data", tmp_path / "tiny.npy", "--out", tmp_path / "o"],
                       capsys)
    assert refused(code, err, "tiny.npy: the variances underflowed float64")
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "o").exists()


# ---- a spectrum .npz from another tool --------------------------------------------------------

@pytest.mark.parametrize("arrays, key, needle", [
    ({"eigenvalues": np.arange(1.0, 7.0), "U": np.eye(6)}, "eigenvalues", "no 'format' key"),
    ({"lam": np.arange(1.0, 7.0), "mean": np.zeros(6)}, "lam", "no 'format' key"),
    ({"format": np.array("other.tool"), "S": np.arange(1.0, 7.0)}, "S",
     "its 'format' key is not 'specsched.spectrum'"),
])
def test_foreign_spectrum_npz_gets_spectrum_advice(tmp_path, capsys, arrays, key, needle):
    np.savez(tmp_path / "theirs.npz", **arrays)
    code, _, err = run(["evaluate", "--spectrum", tmp_path / "theirs.npz", "--schedule",
                        "linear", "--steps", "5"], capsys)
    assert refused(code, err, "theirs.npz", needle, "--spectrum eig.npy",
                   f"np.load('theirs.npz')['{key}']", "s**2 / (N - 1)")
    # following the advice works
    np.save(tmp_path / "eig.npy", np.load(tmp_path / "theirs.npz")[key])
    code, out, err = run(["evaluate", "--spectrum", tmp_path / "eig.npy", "--schedule",
                          "linear", "--steps", "5", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["w2"] > 0


def test_npz_of_samples_keeps_the_samples_advice(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", a=np.ones((4, 3)), b=np.zeros((4, 3)))
    code, _, err = run(["spectrum", tmp_path / "two.npz", "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "two.npz: the .npz file holds several arrays",
                   "save the samples alone")
    assert "--spectrum" not in err
