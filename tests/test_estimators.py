"""Chunked spectrum estimators: full, PCA, Fourier; array API; dask; bad chunks."""

import re

import array_api_strict
import numpy as np
import pytest

from specsched.data.sources import open_source, source_from_array
from specsched.errors import InputError
from specsched.spectrum import (
    FourierEstimator,
    Spectrum,
    StreamingCovariance,
    estimate_spectrum,
    fourier_power,
    load_spectrum,
    randomized_eigh,
    spectrum_from_samples,
)


def _circulant_data(rng, shape=(6, 5, 2), n_base=12):
    """Samples with an exactly (block-)circulant empirical covariance: every cyclic shift."""
    base = rng.standard_normal((n_base,) + shape).cumsum(axis=1) + 0.3
    H, W = shape[:2]
    return np.concatenate([np.roll(base, (i, j), axis=(1, 2)) for i in range(H)
                           for j in range(W)])


@pytest.mark.parametrize("shape", [(6, 5, 2), (4, 4), (12,)])
def test_fourier_equals_full_on_circulant_data(shape):
    rng = np.random.default_rng(0)
    if len(shape) == 1:  # 1-D signals: all cyclic shifts
        base = rng.standard_normal((15, shape[0])).cumsum(axis=1)
        X = np.concatenate([np.roll(base, i, axis=1) for i in range(shape[0])])
    else:
        X = _circulant_data(rng, shape if len(shape) == 3 else shape + (1,))
        X = X.reshape((X.shape[0],) + shape)
    full = estimate_spectrum(X, "full", chunk_size=37)
    four = estimate_spectrum(X, "fourier", chunk_size=37)
    assert four.dimension == full.dimension == int(np.prod(shape))
    np.testing.assert_allclose(four.eigenvalues, full.eigenvalues, rtol=0,
                               atol=1e-12 * full.eigenvalues[0])
    # the mean is carried by the DC term: same squared norm, same magnitudes per eigenvalue
    np.testing.assert_allclose(np.sum(four.mean**2), np.sum(full.mean**2), rtol=1e-12)
    assert four.method == "fourier" and four.eigenvectors is None


def test_full_matches_numpy_cov_and_existing_path():
    X = np.random.default_rng(1).standard_normal((300, 4, 3)) * np.arange(1, 13).reshape(4, 3)
    s = estimate_spectrum(X, "full", chunk_size=64)
    ref = np.sort(np.linalg.eigvalsh(np.cov(X.reshape(300, -1), rowvar=False)))[::-1]
    np.testing.assert_allclose(s.eigenvalues, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.eigenvalues, spectrum_from_samples(X).eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(np.abs(s.mean), np.abs(s.eigenvectors.T @ X.reshape(300, -1)
                                                      .mean(0)), atol=1e-12)


def test_fourier_power_is_parseval_and_dc_carries_the_mean():
    X = np.random.default_rng(2).standard_normal((200, 8, 8, 3)) + np.array([1.0, -2.0, 0.5])
    est = FourierEstimator().partial_fit(X[:77]).partial_fit(X[77:])
    spec = est.to_spectrum()
    P = fourier_power(est.moments_, (8, 8, 3))
    assert P.shape == (8, 8)
    np.testing.assert_allclose(P.sum(), np.trace(np.cov(X.reshape(200, -1), rowvar=False)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.sum(spec.mean**2), np.sum(X.mean(0) ** 2), rtol=1e-12)
    dc = np.abs(est.moments_.mean[0])  # DC of each channel: sqrt(H W) x channel mean
    np.testing.assert_allclose(dc, 8 * np.abs(X.mean(axis=(0, 1, 2))), rtol=1e-12)


@pytest.mark.parametrize("solver", ["dense", "randomized"])
def test_pca_top_k_and_tail_mean(solver):
    rng = np.random.default_rng(3)
    d, k = 40, 6
    scales = 2.0 ** -np.arange(d)
    X = rng.standard_normal((500, d)) * np.sqrt(scales) @ np.linalg.qr(
        rng.standard_normal((d, d)))[0] + 0.7
    full = estimate_spectrum(X, "full")
    pca = estimate_spectrum(X, "pca", rank=k, pca_solver=solver, chunk_size=128,
                            rng=np.random.default_rng(0))
    np.testing.assert_allclose(pca.eigenvalues[:k], full.eigenvalues[:k], rtol=1e-8)
    tail = (full.eigenvalues.sum() - full.eigenvalues[:k].sum()) / (d - k)
    np.testing.assert_allclose(pca.eigenvalues[k:], tail, rtol=1e-8)
    np.testing.assert_allclose(pca.eigenvalues.sum(), full.eigenvalues.sum(), rtol=1e-10)
    np.testing.assert_allclose(np.sum(pca.mean**2), np.sum(full.mean**2), rtol=1e-8)
    assert pca.provenance()["method"] == "pca" and pca.provenance()["rank"] == k


def test_pca_rank_saved_and_loaded(tmp_path):
    s = estimate_spectrum(np.random.default_rng(4).standard_normal((50, 10)), "pca", rank=3)
    s.save(tmp_path / "s.npz")
    t = Spectrum.load(tmp_path / "s.npz")
    assert t.rank == 3 and t.method == "pca" and t.sha256() == s.sha256()


def test_randomized_eigh_matches_eigh():
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    C = Q @ np.diag(3.0 ** -np.arange(30)) @ Q.T
    w, V = randomized_eigh(lambda M: C @ M, 30, 5, rng=rng)
    np.testing.assert_allclose(w, 3.0 ** -np.arange(5), rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(V * Q[:, :5], axis=0)), 1.0, rtol=1e-8)


@pytest.mark.parametrize("method", ["full", "fourier"])
def test_array_api_strict_same_as_numpy(method):
    X = np.random.default_rng(6).standard_normal((90, 6, 6, 3))
    ref = estimate_spectrum(X, method, chunk_size=40)
    strict = estimate_spectrum(X, method, chunk_size=40, xp=array_api_strict)
    np.testing.assert_allclose(strict.eigenvalues, ref.eigenvalues, rtol=1e-12, atol=1e-14)
    est = {"full": StreamingCovariance, "fourier": FourierEstimator}[method](xp=array_api_strict)
    est.partial_fit(array_api_strict.asarray(X))  # arrays of the namespace itself
    np.testing.assert_allclose(est.to_spectrum().eigenvalues, ref.eigenvalues, rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("method, rank", [("full", None), ("pca", 5)])
def test_array_api_eigh_runs_in_the_namespace(monkeypatch, method, rank):
    # the --device cuda route on the CPU: accumulation AND eigh in the array namespace
    import scipy.linalg

    rng = np.random.default_rng(8)
    X = 1e3 + rng.standard_normal((200, 4, 5)) @ rng.standard_normal((5, 5))
    ref = estimate_spectrum(X, method, rank=rank, chunk_size=64)  # NumPy + scipy.linalg.eigh
    calls = []
    eigh = array_api_strict.linalg.eigh
    monkeypatch.setattr(array_api_strict.linalg, "eigh", lambda a: calls.append(a) or eigh(a))
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **k: pytest.fail("scipy eigh called"))
    got = estimate_spectrum(X, method, rank=rank, chunk_size=64, xp=array_api_strict)
    assert len(calls) == 1 and type(calls[0]).__module__.startswith("array_api_strict")
    top = ref.eigenvalues[0]
    assert np.abs(got.eigenvalues - ref.eigenvalues).max() <= 1e-10 * top
    # the mean in the eigenbasis: signs of eigenvectors are the solver's, magnitudes are not
    k = rank or 20
    np.testing.assert_allclose(np.abs(got.mean[:k]), np.abs(ref.mean[:k]), rtol=1e-10,
                               atol=1e-10 * np.abs(ref.mean).max())
    if method == "full":  # the same covariance from both eigendecompositions
        C = [s.eigenvectors @ np.diag(s.eigenvalues) @ s.eigenvectors.T for s in (got, ref)]
        assert np.abs(C[0] - C[1]).max() <= 1e-10 * np.abs(C[1]).max()


def test_cuda_absent_is_a_clear_error():
    pytest.importorskip  # noqa: B018 - no GPU on CI: CuPy missing or no device
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="--device cuda: CuPy is not installed"):
        estimate_spectrum(np.zeros((3, 2)), "full", device="cuda")


def _shards(tmp_path, n_files=4, n=60, shape=(8, 8, 3)):
    rng = np.random.default_rng(7)
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(n_files):
        x = rng.standard_normal((n,) + shape).cumsum(axis=1).astype(np.float32)
        np.save(folder / f"part{i:02d}.npy", x)
    return folder


def test_chunked_multi_file_equals_in_memory(tmp_path):
    folder = _shards(tmp_path)
    src = open_source(folder)
    assert src.n_samples == 240 and src.sample_shape == (8, 8, 3) and len(src.parts) == 4
    X = np.concatenate([np.load(f) for f in sorted(folder.iterdir())]).astype(np.float64)
    for method in ("full", "fourier"):
        a = estimate_spectrum(src, method, chunk_size=25)
        b = estimate_spectrum(X, method)
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10, atol=1e-13)


def test_dask_local_cluster_matches_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    folder = _shards(tmp_path)
    src = open_source(folder)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for method, kw in (("full", {}), ("fourier", {}), ("pca", {"rank": 5}),
                           ("pca", {"rank": 5, "pca_solver": "randomized"})):
            ref = estimate_spectrum(src, method, chunk_size=25,
                                    rng=np.random.default_rng(0), **kw)
            got = estimate_spectrum(src, method, chunk_size=25, dask=client,
                                    rng=np.random.default_rng(0), **kw)
            np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-10, atol=0)
            assert got.n_samples == ref.n_samples == 240


def test_dimension_mismatch_across_files_names_the_file(tmp_path):
    folder = _shards(tmp_path, n_files=2)
    np.save(folder / "part99.npy", np.zeros((5, 8, 8, 1), np.float32))
    with pytest.raises(InputError, match="part99.npy"):
        open_source(folder)


def test_dimension_mismatch_between_chunks_names_the_part():
    from specsched.data.sources import ArrayPart, DataSource

    src = DataSource("two", (4,), 10, (ArrayPart(np.zeros((5, 4)), "a.npy"),
                                       ArrayPart(np.ones((5, 3)), "b.npy")))
    with pytest.raises(InputError, match="b.npy"):
        estimate_spectrum(src, "full")
    est = StreamingCovariance().partial_fit(np.zeros((3, 4)), "a.npy")
    with pytest.raises(InputError, match="c.npy"):
        est.partial_fit(np.zeros((3, 5)), "c.npy")


def test_memmap_npy_source_and_load_spectrum_options(tmp_path):
    X = np.random.default_rng(8).standard_normal((130, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    src = open_source(tmp_path / "x.npy", part_size=50)
    assert [p.n for p in src.parts] == [50, 50, 30]
    a = load_spectrum(tmp_path / "x.npy", as_data=True, method="full", chunk_size=17,
                      dask=None, grayscale=False)
    b = load_spectrum(tmp_path / "x.npy", as_data=True)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12)
    c = load_spectrum(tmp_path / "x.npy", method="pca", rank=4)
    assert c.rank == 4


def test_bad_arguments():
    X = np.zeros((4, 3, 3))
    with pytest.raises(InputError, match="--rank: required"):
        estimate_spectrum(X, "pca")
    with pytest.raises(InputError, match="at most d = 9"):
        estimate_spectrum(X, "pca", rank=10)
    with pytest.raises(InputError, match="--method"):
        estimate_spectrum(X, "svd")
    with pytest.raises(InputError, match="Fourier model"):
        estimate_spectrum(np.zeros((4, 2, 2, 2, 2)), "fourier")
    with pytest.raises(InputError, match="at least 2 samples"):
        estimate_spectrum(source_from_array(np.zeros((1, 3))), "full")


def _server(greeting: bytes | None):
    """A one-connection TCP server on loopback that sends ``greeting`` (None: stays silent;
    empty: hangs up at once)."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = srv.accept()
        with srv, conn:
            if greeting:
                conn.sendall(greeting)
            if greeting != b"":
                conn.recv(1)  # until the client goes away

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}"


@pytest.mark.parametrize("greeting, needle", [
    (None, "does not answer as a dask scheduler (no greeting within 0.5 s)"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "answers, but not as a dask scheduler"),
    (b"", "answers, but not as a dask scheduler"),
])
def test_dask_address_of_a_server_that_is_not_a_scheduler(greeting, needle):
    # distributed.Client waits for ever on the first and tries to allocate exabytes on the
    # second; the probe refuses both within its timeout, naming --dask and the address
    from specsched.spectrum.cluster import probe_scheduler

    address = _server(greeting)
    with pytest.raises(InputError, match="--dask: " + re.escape(address)) as info:
        probe_scheduler(address, timeout=0.5)
    assert needle in str(info.value)


def test_dask_probe_accepts_a_real_scheduler():
    distributed = pytest.importorskip("distributed")
    from specsched.spectrum.cluster import probe_scheduler

    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        probe_scheduler(cluster.scheduler_address, timeout=5)  # no error
