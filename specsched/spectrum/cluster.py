"""The chunked estimators on a dask cluster, run where the data lives.

A :class:`~specsched.data.sources.DataSource` is a tuple of parts that carry paths and row
ranges (a ``.npy`` shard's header and rows, a zarr array's rows, a group of image files),
never samples. :class:`Executor` submits one task per part; the task opens its part on the
worker, reads it chunk by chunk and returns only the estimator's state (the per-part moments:
count, mean, the d x d sum of centred products; docs/theory.md section 6), and the states
are merged pairwise on the cluster (Chan et al.'s merge, exact). The client sends the parts
(a few hundred bytes each) and the estimator's class, and receives one merged state.

In-memory samples (an array, a built-in dataset such as ``natural-patches``) have no file
for a worker to open: they are cut into one block per worker and *scattered* once, with a
warning that says how much; data too big for the client must be files every worker sees.

Failures, each a clear error within a stated time (docs/spectra.md, docs/reliability.md):

- an address that does not answer: :func:`probe_scheduler`, ``CONNECT_TIMEOUT`` seconds;
- a scheduler without workers: ``CONNECT_TIMEOUT`` seconds;
- a file a worker does not see (another mount point): checked on every worker before any
  task is submitted;
- a worker that dies while it runs a part (killed, out of memory): dask's
  :class:`~distributed.KilledWorker` once the scheduler gives up (after
  ``distributed.scheduler.allowed-failures`` deaths, a setting of the scheduler; 0 stops at
  the first), raised as :class:`~specsched.errors.ResourceError` naming the part;
- every worker gone (a batch job's time ran out): ``NO_WORKER_TIMEOUT`` seconds.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings

import numpy as np

from specsched.data.sources import DataSource
from specsched.errors import InputError, ResourceError
from specsched.spectrum.memory import format_bytes

__all__ = ["CONNECT_TIMEOUT", "NO_WORKER_TIMEOUT", "Executor", "probe_scheduler"]

#: Seconds to wait for a dask scheduler to accept a connection, to greet it, and to have at
#: least one worker (each). A TCP connect that is refused fails at once; one whose packets are
#: dropped (a firewall) takes this long. Linux resends a SYN after 1, 3 and 7 s, so 10 s
#: covers three resends.
CONNECT_TIMEOUT = 10.0
#: Seconds a run waits with no worker left in the cluster before it gives up.
NO_WORKER_TIMEOUT = 20.0
#: Seconds between two looks at the cluster while a result is awaited.
_POLL = 0.5
#: Largest first frame a dask scheduler's greeting can announce (its handshake is ~60 bytes).
_HANDSHAKE_MAX = 1 << 20


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Check that a TCP address answers as a dask scheduler before a Client is made.

    ``distributed.Client`` can wait for ever on a server that is not a scheduler (an HTTP
    server never answers its handshake) or try to allocate whatever a stranger's first
    bytes announce. A scheduler greets every connection at once with a frame whose 8-byte
    little-endian length prefix is small (distributed's TCP comm); this reads those 8 bytes.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT`` or ``HOST:PORT``; other protocols (``tls``, ``ws``, ``ucx``) are
        not probed.
    timeout : float
        Seconds for the connection and for the greeting, each.

    Raises
    ------
    InputError
        Naming ``--dask`` and the address: refused or unreachable within ``timeout``, no
        greeting within ``timeout``, or a greeting that is not a dask frame.
    """
    import socket
    import struct

    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme != "tcp":
        return
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError) as exc:  # refused at once, or no answer within timeout
        raise InputError(f"--dask: cannot reach the scheduler {address!r} "
                         f"({getattr(exc, 'strerror', None) or exc}; waited at most "
                         f"{timeout:g} s)") from None
    head = b""
    try:
        with sock:
            sock.settimeout(timeout)
            while len(head) < 8:
                got = sock.recv(8 - len(head))
                if not got:
                    break
                head += got
    except TimeoutError:
        raise InputError(f"--dask: {address} does not answer as a dask scheduler (no greeting "
                         f"within {timeout:g} s); check the address and port") from None
    except OSError:
        pass  # reset by the peer: judged by what came
    if len(head) < 8 or struct.unpack("<Q", head)[0] > _HANDSHAKE_MAX:
        raise InputError(f"--dask: {address} answers, but not as a dask scheduler (its first "
                         "bytes are not a dask handshake); check the address and port")


def _missing_paths(paths):
    """The paths this process cannot see (runs on every worker)."""
    return [p for p in paths if not os.path.exists(p)]


def _on_worker(fn, prev, part, *args):
    """``fn(prev, part, *args)`` on a worker; an InputError says which worker read the
    part."""
    try:
        return fn(prev, part, *args)
    except InputError as exc:
        from distributed import get_worker

        raise InputError(f"{exc} (on dask worker {get_worker().address})",
                         param=exc.param) from None


def _killed(exc, every: list, described: dict) -> ResourceError:
    """The error for a worker that died holding tasks: dask names one of them, but every
    task the worker was given (running or queued there) failed with it, and each failure
    reaches the end of its chain (in ``every``); the parts come first, in order, then the
    merges."""
    from distributed import KilledWorker

    keys = {exc.task}
    for f in every:
        if f.status == "error":
            other = f.exception(timeout=1)
            if isinstance(other, KilledWorker):
                keys.add(other.task)
    held = [what for key, what in described.items() if key in keys] or [str(exc.task)]
    worker = getattr(exc.last_worker, "address", exc.last_worker)
    also = f"; it also held {', '.join(held[1:])}" if held[1:] else ""
    n = exc.allowed_failures
    return ResourceError(
        f"{held[0]}: the dask worker {worker} died (killed, or out of memory) while running or "
        f"holding it{also}; the scheduler gave up after {n + 1} worker deaths "
        f"(distributed.scheduler.allowed-failures = {n})")


def _describe(part) -> str:
    start = getattr(part, "start", None)
    return part.label if start is None else f"{part.label} rows {start}:{part.stop}"


class Executor:
    """Map a function over a source's parts and reduce the results, in-process or on dask.

    Parameters
    ----------
    dask : None, False, True, "local", str or distributed.Client
        None/False: in-process. True/"local": a local in-process cluster of 2 thread
        workers. A string: a scheduler address (probed first, :func:`probe_scheduler`). A
        Client: used as is, not closed.

    Raises
    ------
    InputError
        dask.distributed missing (naming the extra ``distributed``), an address that does
        not answer as a scheduler within ``CONNECT_TIMEOUT`` s, a scheduler with no worker
        after ``CONNECT_TIMEOUT`` s, a ``dask`` of another type.
    """

    def __init__(self, dask=None):
        self.client = None
        self._own = []
        self._inputs = {}
        self._run = uuid.uuid4().hex[:12]
        self._count = 0
        if dask is None or dask is False:
            return
        address = isinstance(dask, str) and dask != "local"
        if address:
            probe_scheduler(dask)  # before importing distributed: a bad address fails at once
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise InputError(
                "--dask: dask.distributed is not installed; pip install 'specsched[distributed]'"
            ) from exc
        if isinstance(dask, Client):
            self.client = dask
        elif dask is True or dask == "local":
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                   dashboard_address=":0")  # any free port: 8787 may be taken
            self.client = Client(cluster)
            self._own = [self.client, cluster]
            return
        elif address:
            try:
                self.client = Client(dask, timeout=f"{CONNECT_TIMEOUT:g}s")
            except (OSError, TimeoutError, ValueError, MemoryError) as exc:
                raise InputError(f"--dask: cannot reach the scheduler {dask!r} ({exc})") from exc
            self._own = [self.client]
        else:
            raise InputError(f"dask: expected None, True, 'local', a scheduler address or a "
                             f"distributed.Client, got {dask!r}", param="dask")
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            where = self.client.scheduler.address
            self.close()
            raise InputError(f"--dask: the scheduler {where} has no worker (waited "
                             f"{CONNECT_TIMEOUT:g} s); start workers on machines that see "
                             f"the data: dask worker {where}") from None

    # ------------------------------------------------------------------ placing the parts

    def _placed(self, source: DataSource) -> list[tuple[object, str]]:
        """``(task input, description)`` per part, prepared once per source: file parts as
        they are, after checking that every worker sees their files; in-memory parts cut
        into one block per worker and scattered."""
        key = id(source)
        if key not in self._inputs:
            self._check_visible(source)
            n_workers = max(len(self.client.nthreads()), 1)
            inputs = []
            for part in source.parts:
                if part.path is not None:
                    inputs.append((part, _describe(part)))
                    continue
                blocks = part.blocks(n_workers)
                warnings.warn(
                    f"{part.label}: {format_bytes(part.array.nbytes)} of in-memory samples "
                    f"sent to the dask workers once (scattered, {len(blocks)} blocks); to keep "
                    "the data off the client, give files that every worker reads at the same "
                    "path (a folder of .npy shards, a zarr array, images)", stacklevel=4)
                futures = self.client.scatter(list(blocks), hash=False)
                inputs += [(f, b.label) for f, b in zip(futures, blocks, strict=True)]
            self._inputs[key] = (source, inputs)  # the source is kept: its id stays unique
        return self._inputs[key][1]

    def _check_visible(self, source: DataSource) -> None:
        paths = sorted({p.path for p in source.parts if p.path is not None})
        if not paths:
            return
        missing = self.client.run(_missing_paths, paths)
        for worker, gone in sorted(missing.items()):
            if gone:
                relative = "" if os.path.isabs(gone[0]) else "; give an absolute path"
                raise InputError(
                    f"{gone[0]}: not found on dask worker {worker} ({len(gone)} of the "
                    f"{len(paths)} files of {source.name}); every worker must see the data "
                    "at the path the client gives (a shared file system, mounted at the same "
                    f"path){relative}")

    # ------------------------------------------------------------------ map and reduce

    def map_reduce(self, fn, source: DataSource, combine, *args):
        """Fold the parts of ``source`` with ``fn`` and reduce the folds with ``combine``.

        ``fn(prev, part, *args)`` returns ``prev`` (None for the first part) updated with
        one part, as a new value; ``combine(a, b)`` merges two such values. In process:
        one fold over every part. On dask: one task per part, in as many chains as the
        cluster has threads (parts ``c, c + T, c + 2T, ...`` in chain ``c``; each task takes
        the previous one's value, so a worker holds about two estimator states, not one
        per part), then a pairwise tree of ``combine`` over the chains' ends. NumPy arrays
        among ``args`` are broadcast to every worker once per call. Returns the reduced
        value (on the client).

        Raises
        ------
        InputError
            From a task (naming the part's file and the worker), or a file a worker does not
            see.
        ResourceError
            A worker died while it ran a part (naming the part and the worker), or no worker
            was left for ``NO_WORKER_TIMEOUT`` s.
        """
        if self.client is None:
            out = None
            for part in source.parts:
                out = fn(out, part, *args)
            return out
        c = self.client
        inputs = self._placed(source)
        self._count += 1
        prefix = f"specsched-{fn.__name__}-{self._run}-{self._count}"
        described = {}
        shared = [c.scatter(a, broadcast=True, hash=False) if isinstance(a, np.ndarray) else a
                  for a in args]
        n_chains = min(len(inputs), max(sum(c.nthreads().values()), 1))
        futures, covered = [], {}
        for chain in range(n_chains):
            prev = None  # only the chain's end is held here: a link's value is released
            for i in range(chain, len(inputs), n_chains):  # once the next link has it
                inp, what = inputs[i]
                key = f"{prefix}-{i}"
                described[key] = what
                prev = c.submit(_on_worker, fn, prev, inp, *shared, key=key)
            futures.append(prev)
            covered[prev.key] = list(range(chain, len(inputs), n_chains))
        every = list(futures)  # the chains' ends: a failed link's error reaches them
        level = 0
        while len(futures) > 1:  # pairwise tree reduction on the cluster
            level += 1
            nxt = []
            for j, (a, b) in enumerate(zip(futures[::2], futures[1::2], strict=False)):
                key = f"{prefix}-merge{level}-{j}"
                parts = sorted(covered[a.key] + covered[b.key])
                covered[key] = parts
                described[key] = (f"the merge of the moments of {len(parts)} parts "
                                  f"({inputs[parts[0]][1]}, ...)")
                nxt.append(c.submit(combine, a, b, key=key))
            if len(futures) % 2:
                nxt.append(futures[-1])
            futures = nxt
        every.append(futures[0])
        try:
            return self._result(futures[0], every, described)
        except BaseException:
            c.cancel(every)
            raise

    def _result(self, future, every: list, described: dict):
        """The value of ``future`` (the root of the merges; ``every``: the futures held),
        watching the cluster; dask's failures made plain."""
        from distributed import KilledWorker, wait

        idle = 0.0
        while True:
            try:
                wait(future, timeout=_POLL)  # only the state: the value is fetched once
                return future.result()  # (a timed result would restart its transfer)
            except TimeoutError:
                pass
            except KilledWorker as exc:
                raise _killed(exc, every, described) from None
            idle = 0.0 if self.client.nthreads() else idle + _POLL
            if idle >= NO_WORKER_TIMEOUT:
                raise ResourceError(
                    f"--dask: the cluster {self.client.scheduler.address} has had no worker "
                    f"for {NO_WORKER_TIMEOUT:g} s while parts were pending (its workers died "
                    "or were stopped)")

    def close(self):
        """Close what this executor started (a local cluster, a Client it made).

        Distributed's INFO logs are silenced meanwhile: closing an in-process cluster may log
        a worker's comm closed under it ("Batched Comm Closed", with a CommClosedError
        traceback) on stderr after a run that succeeded. (The logger's level, not its
        handler's: the cluster restores the handler's level as it closes.)"""
        self._inputs.clear()
        logger = logging.getLogger("distributed")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            for obj in self._own:
                obj.close()
        finally:
            logger.setLevel(level)
        self._own = []
