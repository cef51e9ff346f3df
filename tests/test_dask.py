"""dask where the data lives: workers read their own shards, failures are plain and early.

One LocalCluster of 2 worker processes (threads_per_worker=1) serves the module; its
scheduler gives up on a task at the first worker death (allowed-failures 0).
"""

import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.data.sources import DataSource, open_source
from specsched.errors import InputError, ResourceError
from specsched.spectrum import Spectrum, estimate_spectrum
from specsched.spectrum import cluster as cluster_module

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None,
                                  scheduler_kwargs={"allowed_failures": 0}) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _write_shards(folder, n_files=3, n=70, shape=(6, 5, 2), seed=3):
    """``n_files`` float32 shards of correlated samples; returns all rows as float64."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    rows = []
    for i in range(n_files):
        x = (rng.standard_normal((n,) + shape).cumsum(axis=1) + 5.0).astype(np.float32)
        np.save(folder / f"shard{i:02d}.npy", x)
        rows.append(x)
    return np.concatenate(rows).astype(np.float64)


def _data_mean(s: Spectrum) -> np.ndarray:
    """The mean in data coordinates, ``U m`` (independent of the eigenvectors' signs)."""
    return s.eigenvectors @ s.mean


def _assert_same(got: Spectrum, ref: Spectrum):
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-10,
                               atol=1e-10 * ref.eigenvalues[0])
    np.testing.assert_allclose(_data_mean(got), _data_mean(ref), rtol=1e-10, atol=0)
    assert got.n_samples == ref.n_samples


def test_shards_and_zarr_on_two_worker_processes_equal_numpy(tmp_path, client):
    X = _write_shards(tmp_path / "shards")
    flat = X.reshape(len(X), -1)
    src = open_source(tmp_path / "shards", part_size=30)  # 9 parts: 3 rows ranges per shard
    assert len(src.parts) == 9 and all(p.path.endswith(".npy") for p in src.parts)
    # the independent reference: numpy's covariance of all rows at once
    ref_lam = np.linalg.eigvalsh(np.cov(flat, rowvar=False))[::-1]
    got = estimate_spectrum(src, "full", chunk_size=16, dask=client)
    np.testing.assert_allclose(got.eigenvalues, ref_lam, rtol=1e-10, atol=1e-12 * ref_lam[0])
    np.testing.assert_allclose(_data_mean(got), flat.mean(axis=0), rtol=1e-10)
    _assert_same(got, estimate_spectrum(src, "full", chunk_size=16))
    fourier = estimate_spectrum(src, "fourier", chunk_size=16, dask=client)
    np.testing.assert_allclose(fourier.eigenvalues,
                               estimate_spectrum(src, "fourier", chunk_size=16).eigenvalues,
                               rtol=1e-10)
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape, chunks=(40, 6, 5, 2),
                          dtype="float32")
    z[:] = X.astype(np.float32)
    zsrc = open_source(tmp_path / "x.zarr", part_size=100)  # parts of 80 rows: 2 zarr chunks
    assert [p.n for p in zsrc.parts] == [80, 80, 50]
    _assert_same(estimate_spectrum(zsrc, "full", chunk_size=16, dask=client), got)


def test_cli_spectrum_on_a_scheduler_address_equals_in_process(tmp_path, capsys, client):
    _write_shards(tmp_path / "shards")
    code, _, err = run(["spectrum", tmp_path / "shards", "--out", tmp_path / "d.npz",
                        "--dask", client.scheduler.address, "--chunk-size", "20"], capsys)
    assert code == 0, err
    assert "warning" not in err  # no large graph, nothing scattered
    code, _, err = run(["spectrum", tmp_path / "shards", "--out", tmp_path / "p.npz",
                        "--chunk-size", "20"], capsys)
    assert code == 0, err
    _assert_same(Spectrum.load(tmp_path / "d.npz"), Spectrum.load(tmp_path / "p.npz"))
    # what only a read shows (a NaN) is the loader's message, saying which worker read it
    bad = np.load(tmp_path / "shards" / "shard01.npy")
    bad[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "shards" / "shard01.npy", bad)
    code, _, err = run(["spectrum", tmp_path / "shards", "--out", tmp_path / "n.npz",
                        "--dask", client.scheduler.address], capsys)
    assert refused(code, err, "shard01.npy: 1 non-finite values (NaN or Inf); first in sample "
                   "3 (on dask worker tcp://")
    assert not (tmp_path / "n.npz").exists()


def test_in_memory_samples_are_scattered_once_with_a_warning(client):
    X = np.random.default_rng(4).standard_normal((90, 12)).cumsum(axis=1)
    with pytest.warns(UserWarning, match=r"array: .* of in-memory samples sent to the dask "
                                         r"workers once \(scattered, 2 blocks\)"):
        got = estimate_spectrum(X, "pca", rank=3, pca_solver="randomized", dask=client)
    ref = estimate_spectrum(X, "pca", rank=3, pca_solver="randomized")
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-10)


@pytest.mark.parametrize("bad, needle", [
    ("shape", "shard09.npy: samples of shape (6, 5, 1), but shard00.npy has (6, 5, 2)"),
    ("dtype", "shard09.npy: samples stored as uint8, but shard00.npy as float32"),
    ("empty", "shard09.npy: the array holds no samples (shape (0, 6, 5, 2))"),
    ("garbage", "shard09.npy: not a readable .npy file"),
    ("truncated", "shard09.npy: truncated file: its header announces shape (7, 6, 5, 2)"),
])
def test_mismatched_shards_are_refused_on_the_client_and_nothing_is_written(
        tmp_path, capsys, bad, needle):
    folder = tmp_path / "shards"
    _write_shards(folder)
    f = folder / "shard09.npy"
    if bad == "shape":
        np.save(f, np.zeros((7, 6, 5, 1), np.float32))
    elif bad == "dtype":
        np.save(f, np.zeros((7, 6, 5, 2), np.uint8))
    elif bad == "empty":
        np.save(f, np.zeros((0, 6, 5, 2), np.float32))
    elif bad == "garbage":
        f.write_bytes(b"not a numpy file at all")
    else:
        np.save(f, np.zeros((7, 6, 5, 2), np.float32))
        f.write_bytes(f.read_bytes()[:-50])
    # the refusal comes from the headers, before any connection: the address below has no
    # scheduler, so an error naming the shard proves nothing was submitted
    kept = tmp_path / "kept.npz"
    kept.write_bytes(b"an earlier result")
    for out, extra in ((tmp_path / "new.npz", []), (kept, ["--force"])):
        code, _, err = run(["spectrum", folder, "--out", out, "--dask", "tcp://127.0.0.1:9",
                            *extra], capsys)
        assert refused(code, err, needle)
    assert not (tmp_path / "new.npz").exists()
    assert kept.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.npz", "shards"]


def test_unreachable_scheduler_is_refused_stating_the_timeout(tmp_path, capsys):
    assert 1 <= cluster_module.CONNECT_TIMEOUT <= 30
    import socket

    with socket.socket() as s:  # a free port: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _write_shards(tmp_path / "shards")
    code, _, err = run(["spectrum", tmp_path / "shards", "--out", tmp_path / "s.npz", "--dask",
                        f"tcp://127.0.0.1:{port}"], capsys)
    assert refused(code, err, f"--dask: cannot reach the scheduler 'tcp://127.0.0.1:{port}'",
                   f"waited at most {cluster_module.CONNECT_TIMEOUT:g} s")
    assert not (tmp_path / "s.npz").exists()


def test_scheduler_without_workers_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 0.5)
    _write_shards(tmp_path / "shards")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp",
                                  dashboard_address=None) as lc:
        with pytest.raises(InputError, match=r"--dask: the scheduler tcp://.* has no worker "
                                             r"\(waited 0.5 s\); start workers"):
            estimate_spectrum(open_source(tmp_path / "shards"), dask=lc.scheduler_address)


def test_a_file_that_a_worker_does_not_see_is_named_before_any_task(tmp_path, client,
                                                                     monkeypatch):
    _write_shards(tmp_path / "shards")
    monkeypatch.chdir(tmp_path)
    src = open_source("shards")  # relative paths: the workers run in another folder
    workers_cwd = client.run(os.getcwd)
    client.run(os.chdir, "/")
    try:
        with pytest.raises(InputError, match=r"shards/shard00.npy: not found on dask worker "
                                             r"tcp://.*every worker must see the data.*"
                                             r"give an absolute path"):
            estimate_spectrum(src, dask=client)
    finally:
        for cwd in set(workers_cwd.values()):
            client.run(os.chdir, cwd)


@dataclass(frozen=True)
class _DyingPart:
    """A part whose worker process dies (SIGKILL, as the OOM killer does) when it reads."""

    path: str
    label: str = "doomed.npy rows 0:5"
    n: int = 5

    def iter_chunks(self, chunk_size):
        os.kill(os.getpid(), signal.SIGKILL)
        yield np.zeros((5, 4))


def test_worker_killed_mid_run_names_the_part(tmp_path, client):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this module
    _write_shards(tmp_path / "shards", shape=(4,))
    good = open_source(tmp_path / "shards").parts
    src = DataSource("doomed", (4,), 215, (_DyingPart(str(tmp_path / "shards")),) + good)
    try:
        # the worker may also hold a good part or a merge queued behind the doomed part
        with pytest.raises(ResourceError, match=r"^doomed.npy rows 0:5: the dask worker "
                                                r"tcp://\S+ died \(killed, or out of memory\) "
                                                r"while running or holding it.*; the scheduler "
                                                r"gave up after 1 worker deaths"):
            estimate_spectrum(src, dask=client)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead one


@dataclass(frozen=True)
class _DyingOncePart:
    """A shard whose first reader dies (SIGKILL); the next attempt reads it."""

    part: object
    marker: str

    @property
    def path(self):
        return self.part.path

    @property
    def label(self):
        return self.part.label

    @property
    def n(self):
        return self.part.n

    def iter_chunks(self, chunk_size):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        yield from self.part.iter_chunks(chunk_size)


def test_a_worker_death_is_survived_under_dasks_default_retries(tmp_path):
    # the scheduler's default allowed-failures (3): the part is recomputed on a live worker
    # and the result is exact, since a task only reads its rows
    import cloudpickle

    _write_shards(tmp_path / "shards", shape=(4,))
    src = open_source(tmp_path / "shards")
    once = DataSource("once", (4,), src.n_samples,
                      (_DyingOncePart(src.parts[0], str(tmp_path / "died")),) + src.parts[1:])
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as lc, \
                distributed.Client(lc) as c:
            assert c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) \
                == 3
            got = estimate_spectrum(once, "full", chunk_size=16, dask=c)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (tmp_path / "died").exists()  # a worker did die
    _assert_same(got, estimate_spectrum(src, "full", chunk_size=16))


def test_no_worker_left_is_an_error_after_the_stated_time(monkeypatch):
    # every worker gone (a batch job's time ran out): the wait ends after NO_WORKER_TIMEOUT
    monkeypatch.setattr(cluster_module, "NO_WORKER_TIMEOUT", 0.02)
    monkeypatch.setattr(cluster_module, "_POLL", 0.01)

    class Lost:
        class scheduler:  # noqa: N801
            address = "tcp://127.0.0.1:8786"

        @staticmethod
        def nthreads():
            return {}

    def pending(future, timeout):  # distributed.wait on a task that never ends
        raise TimeoutError

    monkeypatch.setattr(distributed, "wait", pending)
    ex = cluster_module.Executor()
    ex.client = Lost()
    with pytest.raises(ResourceError, match=r"--dask: the cluster tcp://127.0.0.1:8786 has had "
                                            r"no worker for 0.02 s"):
        ex._result(object(), [], {})


def test_a_dask_argument_of_another_type_is_refused():
    with pytest.raises(InputError, match=r"^dask: expected None, True, 'local', a scheduler "
                                         r"address or a distributed.Client, got 3"):
        estimate_spectrum(np.zeros((4, 2)), dask=3)
