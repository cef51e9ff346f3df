"""Tests of specsched.spectrum: streaming covariance, the Spectrum record, load_spectrum."""

from __future__ import annotations

import copy
import pickle
import warnings

import array_api_strict
import numpy as np
import pytest
import skimage.io

from specsched.data import cifar10_eigenvalues
from specsched.errors import InputError, OutputExistsError
from specsched.spectrum import (
    DiagonalVariance,
    FourierEstimator,
    Spectrum,
    StreamingCovariance,
    load_spectrum,
    spectrum_from_samples,
)


def _relclose(a, b, rtol):
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


def _data(n=500, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    A = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ A + rng.normal(size=d) * 3).reshape((n,) + shape)


# ---------------------------------------------------------------- StreamingCovariance


def test_streaming_matches_numpy_over_random_chunks():
    X = _data()
    flat = X.reshape(len(X), -1)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, len(X)), size=12, replace=False))
    est = StreamingCovariance()
    for chunk in np.split(X, cuts):  # varying sizes, some of 1 sample
        assert est.partial_fit(chunk) is est
    est.partial_fit(X[:0])  # empty chunk: no change
    assert est.n_samples_seen_ == len(X)
    _relclose(est.mean_, flat.mean(axis=0), 1e-12)
    _relclose(est.covariance_, np.cov(flat, rowvar=False), 1e-12)


def test_fit_resets_and_chunks():
    X = _data(n=103)
    est = StreamingCovariance().partial_fit(_data(n=50, seed=5))
    est.fit(X, chunk_size=10)
    assert est.n_samples_seen_ == 103
    _relclose(est.covariance_, np.cov(X.reshape(103, -1), rowvar=False), 1e-12)


def test_merge_of_halves_equals_fit_on_all():
    X = _data(n=301)
    a = StreamingCovariance().fit(X[:120], chunk_size=7)
    b = StreamingCovariance().fit(X[120:], chunk_size=50)
    whole = StreamingCovariance().fit(X)
    assert a.merge(b) is a
    assert a.n_samples_seen_ == 301
    _relclose(a.mean_, whole.mean_, 1e-12)
    _relclose(a.covariance_, whole.covariance_, 1e-12)
    assert b.n_samples_seen_ == 181  # other unchanged


def test_merge_into_empty_estimator():
    X = _data(n=40)
    b = StreamingCovariance().fit(X)
    a = StreamingCovariance().merge(b)
    np.testing.assert_array_equal(a.covariance_, b.covariance_)


@pytest.mark.parametrize("xp", [None, array_api_strict], ids=["blas", "array-api-strict"])
def test_huge_offset_is_stable(xp):
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(4000, 3)) @ np.array([[1.0, 0.5, 0], [0, 1.0, 0.2], [0, 0, 0.1]])
    X = 1e8 + noise  # float64 with ~1.5e-8 absolute resolution
    ref = np.cov(X - 1e8, rowvar=False)  # X - 1e8 is exact: the data actually represented
    est = StreamingCovariance(xp=xp).fit(X, chunk_size=333)
    # limit: chunk means are rounded to ulp(1e8) ~ 1.5e-8, so ~1e-9 relative is inherent
    _relclose(np.asarray(est.covariance_), ref, 1e-7)
    # the naive sum of squares loses every digit here: the test above is not vacuous
    naive = (X.T @ X - len(X) * np.outer(X.mean(0), X.mean(0))) / (len(X) - 1)
    assert np.abs(naive - ref).max() > 1e-1 * np.abs(ref).max()


#: What StreamingCovariance meets at a 1e6 offset, float64 or float32 samples, chunks of 1 to
#: N samples (max |error| / max |cov|; measured 2e-11 at chunks of 1 sample, the running mean
#: rounded to ulp(1e6) at every step, 4e-16 in one chunk): the code before the compiled
#: two-pass update met the same bound.
OFFSET_RTOL = 1e-10


@pytest.mark.parametrize("xp", [None, array_api_strict], ids=["blas", "array-api-strict"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_offset_1e6_matches_numpy_cov_at_every_chunk_size(dtype, xp):
    rng = np.random.default_rng(11)
    noise = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6))
    X = (1e6 + noise).astype(dtype)  # float32: steps of 1/16 at 1e6, still ~N(0, 1) spread
    exact = X.astype(np.float64) - 1e6  # exact (Sterbenz): the data actually represented
    ref, ref_mean = np.cov(exact, rowvar=False), exact.mean(axis=0)
    fits = {}
    for chunk_size in (1, 7, 333, 3000):
        est = StreamingCovariance(xp=xp).fit(X, chunk_size=chunk_size)
        fits[chunk_size] = cov = np.asarray(est.covariance_)
        _relclose(cov, ref, OFFSET_RTOL)
        assert np.abs(np.asarray(est.mean_) - 1e6 - ref_mean).max() <= 1e-8  # 1e-14 relative
    for cov in fits.values():  # chunk-size invariance, to the same bound
        _relclose(cov, fits[3000], 2 * OFFSET_RTOL)
    # the float64 product of the raw samples, what BLAS alone would give, is far off
    Y = X.astype(np.float64)
    naive = (Y.T @ Y - len(Y) * np.outer(Y.mean(0), Y.mean(0))) / (len(Y) - 1)
    assert np.abs(naive - ref).max() > 1e3 * OFFSET_RTOL * np.abs(ref).max()


def test_chunks_far_apart_merge_to_round_off():
    # the Chan term, through the centre of each chunk, carries the 1e6 between the chunks
    rng = np.random.default_rng(12)
    parts = [rng.normal(size=(50, 4)) + shift for shift in (0.0, 1e6, -1e6, 3.0)]
    X = np.concatenate(parts)
    est = StreamingCovariance()
    for part in parts:
        est.partial_fit(part)
    _relclose(est.covariance_, np.cov(X, rowvar=False), 1e-13)
    assert np.abs(est.mean_ - X.mean(axis=0)).max() <= 1e-9  # a few ulp(1e6)


def test_column_stats_against_numpy():
    from specsched.spectrum.colstats import column_stats

    rng = np.random.default_rng(13)
    for n in (1, 2, 3, 4, 5, 9):  # the 4-row main loop and its tail
        for dtype in (np.float32, np.float64, np.float16, ">f8"):
            X = (rng.normal(size=(n, 7)) * 10 + 1e3).astype(dtype)
            s = column_stats(X)
            Y = X.astype(np.float64)
            np.testing.assert_array_equal(s.low, Y.min(axis=0))
            np.testing.assert_array_equal(s.high, Y.max(axis=0))
            np.testing.assert_array_equal(s.first, Y[0])
            np.testing.assert_allclose(s.sums, (Y - Y[0]).sum(axis=0), rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(s.mean, Y.mean(axis=0), rtol=1e-15)
    X = rng.normal(size=(9, 5))[:, ::2]  # not C-ordered: converted
    np.testing.assert_array_equal(column_stats(X).high, X.max(axis=0))
    for i, j, bad in [(0, 0, np.nan), (0, 1, np.inf), (4, 2, -np.inf), (8, 3, np.nan)]:
        Y = rng.normal(size=(9, 5))
        Y[i, j] = bad
        assert np.flatnonzero(~np.isfinite(column_stats(Y).sums)).tolist() == [j]


def test_non_finite_chunk_found_by_the_one_pass_leaves_the_state():
    X = _data(n=40, shape=(4,))
    est = StreamingCovariance().partial_fit(X)
    before = est.covariance_
    for i, value in [(0, np.nan), (13, np.inf), (39, -np.inf)]:
        Y = X.copy()
        Y[i, 2] = value
        with pytest.raises(InputError, match=rf"chunk: 1 non-finite values .* sample {i}"):
            est.partial_fit(Y, "chunk")
    assert est.n_samples_seen_ == 40
    np.testing.assert_array_equal(est.covariance_, before)
    np.testing.assert_array_equal(est.data_max_, X.max(axis=0))
    # finite values whose sums overflow are not called non-finite: an overflow, with advice
    huge = np.array([[1.5e308, 1.0], [-1.5e308, 2.0], [1e308, 3.0]])
    with pytest.raises(InputError, match="overflowed float64: samples reach"):
        StreamingCovariance().partial_fit(huge, "huge")


@pytest.mark.parametrize("make", [
    StreamingCovariance, lambda: StreamingCovariance(xp=array_api_strict),
    FourierEstimator, DiagonalVariance,
], ids=["blas", "array-api-strict", "fourier", "diagonal"])
def test_one_finiteness_check_per_chunk_names_the_sample(make):
    # every estimator checks a chunk once (no separate scan before it), with the full message
    X = _data(n=8, shape=(3, 4))
    X[3, 1, 2] = np.nan
    est = make()
    with pytest.raises(InputError, match=r"x.npy: 1 non-finite values \(NaN or Inf\); first in "
                                         r"sample 3"):
        est.partial_fit(X, "x.npy")
    assert est.sample_shape_ is None and est.n_samples_seen_ == 0  # nothing fixed by it
    est.partial_fit(_data(n=8, shape=(2, 6)))  # another shape is still welcome
    assert est.n_samples_seen_ == 8


def test_chunk_buffer_is_reused_and_never_shipped():
    X = _data(n=64, shape=(5,))
    est = StreamingCovariance().partial_fit(X[:32])
    buf = est._chunk_buffer
    est.partial_fit(X[32:])
    assert est._chunk_buffer is buf  # room for 32 samples, kept
    assert "_chunk_buffer" not in pickle.loads(pickle.dumps(est)).__dict__
    assert "_chunk_buffer" not in copy.deepcopy(est).__dict__
    assert "_chunk_buffer" not in StreamingCovariance().fit(X, chunk_size=8).__dict__
    _relclose(est.covariance_, np.cov(X.reshape(64, -1), rowvar=False), 1e-12)


def test_estimator_is_shaped_like_scikit_learn():
    X = _data(n=90, shape=(2, 3))
    est = StreamingCovariance()
    assert est.fit(X, chunk_size=20) is est and est.partial_fit(X[:5]) is est
    assert est.n_samples_seen_ == 95 and est.n_features_in_ == 6
    assert est.sample_shape_ == (2, 3) and est.mean_.shape == (6,)
    np.testing.assert_array_equal(est.data_min_, np.concatenate([X, X[:5]]).reshape(95, 6)
                                  .min(axis=0))
    flat = np.concatenate([X, X[:5]]).reshape(95, -1)
    _relclose(est.covariance_, np.cov(flat, rowvar=False), 1e-12)
    np.testing.assert_array_equal(est.covariance_, est.covariance_.T)  # both triangles
    clone = pickle.loads(pickle.dumps(est))  # what a dask worker sends back
    np.testing.assert_array_equal(clone.covariance_, est.covariance_)


def test_merge_across_namespaces_and_float32_chunks():
    X = _data(n=120, shape=(5,))
    host = StreamingCovariance().fit(X[:70], chunk_size=16)
    strict = StreamingCovariance(xp=array_api_strict).fit(array_api_strict.asarray(X[70:]),
                                                          chunk_size=16)
    ref = np.cov(X, rowvar=False)
    _relclose(copy.deepcopy(host).merge(strict).covariance_, ref, 1e-12)
    _relclose(np.asarray(copy.deepcopy(strict).merge(host).covariance_), ref, 1e-12)
    X32 = X.astype(np.float32)  # converted to float64 one chunk at a time
    est = StreamingCovariance().fit(X32, chunk_size=7)
    _relclose(est.covariance_, np.cov(X32.astype(np.float64), rowvar=False), 1e-12)


def test_mismatched_dimension_between_chunks():
    est = StreamingCovariance().partial_fit(np.zeros((3, 4)))
    with pytest.raises(InputError, match="5 values"):
        est.partial_fit(np.zeros((3, 5)))
    other = StreamingCovariance().partial_fit(np.ones((2, 6)))
    with pytest.raises(InputError, match="other"):
        est.merge(other)


def test_covariance_needs_two_samples_and_finite_data():
    est = StreamingCovariance().partial_fit(np.ones((1, 3)))
    with pytest.raises(InputError, match="at least 2"):
        _ = est.covariance_
    with pytest.raises(InputError, match="non-finite"):
        StreamingCovariance().partial_fit(np.array([[1.0, np.nan]]))


# ---------------------------------------------------------------- to_spectrum


def test_to_spectrum_reproduces_covariance():
    X = _data(n=400, shape=(2, 3, 2))
    flat = X.reshape(400, -1)
    cov = np.cov(flat, rowvar=False)
    s = StreamingCovariance().fit(X, chunk_size=64).to_spectrum(source="test")
    lam, U = s.eigenvalues, s.eigenvectors
    assert s.method == "full" and s.n_samples == 400 and s.sample_shape == (2, 3, 2)
    assert s.source == "test" and s.dimension == 12
    assert np.all(np.diff(lam) <= 0)
    np.testing.assert_allclose(lam.sum(), np.trace(cov), rtol=1e-12)
    _relclose(U @ np.diag(lam) @ U.T, cov, 1e-12)
    _relclose(U.T @ U, np.eye(12), 1e-12)
    _relclose(s.mean, U.T @ flat.mean(axis=0), 1e-12)
    # each column is an eigenvector of its eigenvalue
    _relclose(cov @ U, U * lam, 1e-11)


def test_spectrum_from_samples_matches_estimator_and_rank_deficiency():
    X = _data(n=50, shape=(4,))
    X = np.concatenate([X, np.full((50, 2), 0.5)], axis=1)  # two constant coordinates
    s = spectrum_from_samples(X, chunk_size=3, source="x")  # 17 chunks: progress bar path
    assert s.dimension == 6 and s.sample_shape == (6,)
    assert (s.eigenvalues >= 0).all()
    np.testing.assert_allclose(s.eigenvalues[-2:], 0.0, atol=1e-12)
    np.testing.assert_allclose(s.eigenvalues.sum(), np.trace(np.cov(X, rowvar=False)), rtol=1e-12)
    with pytest.raises(InputError, match="at least 2"):
        spectrum_from_samples(X[:1])


# ---------------------------------------------------------------- Spectrum


def test_from_eigenvalues_sorts_and_permutes_mean():
    s = Spectrum.from_eigenvalues([1.0, 3.0, 2.0], mean=[10.0, 30.0, 20.0], source="t")
    np.testing.assert_array_equal(s.eigenvalues, [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(s.mean, [30.0, 20.0, 10.0])
    assert s.method == "eigenvalues" and s.eigenvectors is None and s.n_samples is None
    with pytest.raises(ValueError):
        s.eigenvalues[0] = 5.0  # read-only


def test_constructor_permutes_eigenvector_columns():
    U = np.eye(3)
    s = Spectrum(eigenvalues=np.array([1.0, 3.0, 2.0]), eigenvectors=U)
    np.testing.assert_array_equal(s.eigenvectors, U[:, [1, 2, 0]])
    assert not s.eigenvectors.flags.writeable


def test_from_eigenvalues_clips_tiny_negatives_with_warning():
    with pytest.warns(UserWarning, match="2 slightly negative"):
        s = Spectrum.from_eigenvalues([1.0, -1e-9, -2e-9, 0.5])
    np.testing.assert_array_equal(s.eigenvalues, [1.0, 0.5, 0.0, 0.0])
    assert not np.signbit(s.eigenvalues).any()


@pytest.mark.parametrize(
    "values, match",
    [
        ([1.0, -0.1], "negative"),
        ([0.0, 0.0], "all 2 eigenvalues are zero"),
        ([], "empty"),
        ([[1.0, 2.0]], "1-D"),
        ([1.0, np.nan], "non-finite"),
        (np.array([1 + 1j]), "real"),
    ],
)
def test_from_eigenvalues_rejects(values, match):
    with pytest.raises(InputError, match=match):
        Spectrum.from_eigenvalues(values)


def test_constructor_rejects_bad_fields():
    with pytest.raises(InputError, match="mean"):
        Spectrum(eigenvalues=np.ones(3), mean=np.ones(2))
    with pytest.raises(InputError, match="eigenvectors"):
        Spectrum(eigenvalues=np.ones(3), eigenvectors=np.eye(2))
    with pytest.raises(InputError, match="sample_shape"):
        Spectrum(eigenvalues=np.ones(3), sample_shape=(2, 2))
    with pytest.raises(InputError, match="n_samples"):
        Spectrum(eigenvalues=np.ones(3), n_samples=0)


def test_cifar10_spectrum():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the packaged file needs no clipping warning
        s = Spectrum.from_eigenvalues(cifar10_eigenvalues(), source="cifar10")
    assert s.dimension == 3072
    assert abs(s.eigenvalues.sum() - 761.6) < 0.1
    assert np.all(np.diff(s.eigenvalues) <= 0) and (s.eigenvalues >= 0).all()


def test_sha256_and_provenance():
    s = Spectrum.from_eigenvalues([2.0, 1.0], source="src")
    import hashlib

    expected = hashlib.sha256(np.array([2.0, 1.0], dtype="<f8").tobytes()).hexdigest()
    assert s.sha256() == expected
    assert s.provenance() == {
        "source": "src",
        "method": "eigenvalues",
        "n_samples": None,
        "dimension": 2,
        "sha256": expected,
    }
    # -0.0 and +0.0 give the same spectrum hash
    a = Spectrum.from_eigenvalues([1.0, -0.0]).sha256()
    assert a == Spectrum.from_eigenvalues([1.0, 0.0]).sha256()


def test_save_load_round_trip_bit_identical(tmp_path):
    s = spectrum_from_samples(_data(n=60, shape=(2, 3)), source="round trip")
    path = tmp_path / "s.npz"
    s.save(path)
    t = Spectrum.load(path)
    for name in ("eigenvalues", "mean", "eigenvectors"):
        a, b = getattr(s, name), getattr(t, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert (t.n_samples, t.source, t.method, t.sample_shape) == (60, "round trip", "full", (2, 3))
    assert t.sha256() == s.sha256()
    with pytest.raises(OutputExistsError):
        s.save(path)
    e = Spectrum.from_eigenvalues([3.0, 1.0])
    e.save(path, force=True)
    u = Spectrum.load(path)
    assert u.eigenvectors is None and u.n_samples is None and u.sample_shape is None
    assert u.eigenvalues.tobytes() == e.eigenvalues.tobytes()


def test_load_truncated_or_garbage(tmp_path):
    good = tmp_path / "good.npz"
    spectrum_from_samples(_data(n=30), source="x").save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.npz"):
        Spectrum.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(InputError, match="garbage.npz"):
        Spectrum.load(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.ones(3))
    with pytest.raises(InputError, match="other.npz: not a spectrum file"):
        Spectrum.load(other)


def test_load_bad_field_named(tmp_path):
    path = tmp_path / "bad.npz"
    Spectrum.from_eigenvalues([2.0, 1.0]).save(path)
    fields = dict(np.load(path))
    fields["mean"] = np.ones(5)
    np.savez(path, **fields)
    with pytest.raises(InputError, match="bad.npz: field mean"):
        Spectrum.load(path)


# ---------------------------------------------------------------- load_spectrum


def test_load_spectrum_builtins():
    c = load_spectrum("cifar10")
    assert c.dimension == 3072 and c.source == "cifar10" and c.method == "eigenvalues"
    d = load_spectrum("digits")
    assert d.dimension == 64 and d.n_samples == 1797 and d.sample_shape == (8, 8)
    p = load_spectrum("natural-patches")
    assert p.dimension == 16 * 16 * 3 and p.n_samples == 20000 and p.method == "full"
    assert load_spectrum("natural-patches") is p  # cached in-process


def test_load_spectrum_files(tmp_path):
    X = _data(n=80, shape=(2, 2))
    np.save(tmp_path / "samples.npy", X)
    s = load_spectrum(tmp_path / "samples.npy")
    ref = spectrum_from_samples(X)
    np.testing.assert_allclose(s.eigenvalues, ref.eigenvalues, rtol=1e-12)
    assert s.source.endswith("samples.npy") and s.sample_shape == (2, 2)

    np.savez(tmp_path / "samples.npz", x=X, y=np.arange(80))
    assert load_spectrum(tmp_path / "samples.npz", as_data=True).n_samples == 80

    np.save(tmp_path / "eig.npy", np.array([1.0, 4.0, 2.0], dtype=np.float32))
    e = load_spectrum(tmp_path / "eig.npy")
    np.testing.assert_array_equal(e.eigenvalues, [4.0, 2.0, 1.0])
    with pytest.raises(InputError, match="eig.npy.*--spectrum"):
        load_spectrum(tmp_path / "eig.npy", as_data=True)

    ref.save(tmp_path / "spec.npz")
    for as_data in (False, True):
        t = load_spectrum(tmp_path / "spec.npz", as_data=as_data)
        assert t.eigenvalues.tobytes() == ref.eigenvalues.tobytes()

    np.save(tmp_path / "one.npy", X[:1])
    with pytest.raises(InputError, match="one.npy.*at least 2"):
        load_spectrum(tmp_path / "one.npy")


def test_load_spectrum_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 2, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        skimage.io.imsave(tmp_path / f"im{i}.png", im, check_contrast=False)
    s = load_spectrum(tmp_path)
    assert s.dimension == 18 and s.n_samples == 5 and s.sample_shape == (3, 2, 3)
    x = images.reshape(5, -1) / 255.0 * 2 - 1
    np.testing.assert_allclose(s.eigenvalues.sum(), np.trace(np.cov(x, rowvar=False)), rtol=1e-12)


def test_load_spectrum_unknown_name():
    with pytest.raises(InputError, match="natural-patches, digits, cifar10"):
        load_spectrum("imagenet")
