"""The parameter server's protocol over nonblocking point-to-point MPI messages.

Layout: ranks ``0 .. S-1`` are servers, the others workers. Server ``s`` owns the
contiguous range ``[lo_s, hi_s)`` of the flat parameter buffer and the optimizer state of
that range. One worker step is one round trip with every server:

- push (worker → each server): the gradient sum of its range, then
  ``rows | version | stop | kind`` (``version``: the server's update count, within the
  epoch, when this worker last read its range; ``kind``: :data:`PUSH` or :data:`FINISH`);
- reply (server → worker): the server's range of the parameters after applying the push,
  then ``version | done``.

A server keeps one ``Irecv`` posted per worker and serves whichever push arrives first
(``Waitany``: Hogwild-style, MXNet ``dist_async`` semantics), or, with a :class:`PushOrder`
(``--simulate-schedule``), the workers in a seeded order, so the run is reproducible. A
push's staleness is the server's update count minus the version the worker read. Once the
epoch's budget of pushes is applied, or a stop vote is seen, every further reply says
``done``; a worker that reads ``done`` from any server sends :data:`FINISH` to all of them,
and a server's epoch ends when every worker has finished. Every worker sends each push to
every server before it waits for any reply, so all servers apply the same pushes.

Why point-to-point and not MPI-3 RMA (``MPI_Accumulate`` on a window): the server has to
run an optimizer rule (momentum, Adam) on each gradient, not just add it, which RMA cannot
do at the target; passive-target RMA on MPICH's default ch4/shm also progresses only when
the target calls MPI, so a busy server would still have to poll. Measured on this machine
(docs/async.md): a round trip of a 100k-parameter range costs ~0.1 ms here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from mpitrain.data import block_range
from mpitrain.optimizers import Optimizer

from .schedule import PushOrder
from .staleness import Staleness

PUSH_TAG, REPLY_TAG = 0x5057, 0x5052
ROWS, VERSION, STOP, KIND = range(4)  # push tail
PUSH_TAIL = 4
PUSH, FINISH = 0.0, 1.0
DONE = 1  # reply tail: version, done
REPLY_TAIL = 2


SPIN_SECONDS = 200e-6
"""How long a waiting server or worker polls MPI before it starts napping between polls."""
NAP_SECONDS = 50e-6
"""A nap between polls after that: a waiting rank leaves its core to the ranks that
compute (MPICH's own waits poll without pause, which on a node with more ranks than
cores takes a core from a worker for every waiting rank)."""


def wait_any(requests: list[MPI.Request]) -> int:
    """``MPI_Waitany`` that polls, then naps (see :data:`NAP_SECONDS`)."""
    started = time.perf_counter()
    while True:
        index, done = MPI.Request.Testany(requests)
        if done:
            return index
        if time.perf_counter() - started > SPIN_SECONDS:
            time.sleep(NAP_SECONDS)


def wait_all(requests: list[MPI.Request]) -> None:
    """``MPI_Waitall`` that polls, then naps."""
    started = time.perf_counter()
    while not MPI.Request.Testall(requests):
        if time.perf_counter() - started > SPIN_SECONDS:
            time.sleep(NAP_SECONDS)


def server_ranges(n: int, servers: int) -> list[tuple[int, int]]:
    """[lo, hi) of the parameters each server owns (contiguous, sizes differ by <= 1)."""
    return [block_range(n, servers, s) for s in range(servers)]


@dataclass
class EpochLog:
    """What a server saw in one epoch."""

    pushes: int = 0
    per_worker: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    staleness: Staleness = field(default_factory=Staleness)
    stop: bool = False


@dataclass(kw_only=True)
class ShardServer:
    """Server rank: applies pushes to ``params[lo:hi]`` with ``optimizer`` (whose state
    covers that range)."""

    comm: MPI.Comm
    params: np.ndarray  # the full flat buffer; this server owns [lo, hi)
    lo: int
    hi: int
    workers: list[int]  # ranks of the workers
    optimizer: Optimizer

    def __post_init__(self) -> None:
        width, dtype = self.hi - self.lo, self.params.dtype
        self._inbox = [np.zeros(width + PUSH_TAIL, dtype=dtype) for _ in self.workers]
        self._outbox = [np.zeros(width + REPLY_TAIL, dtype=dtype) for _ in self.workers]
        self._sent: list[MPI.Request] = [MPI.REQUEST_NULL for _ in self.workers]

    def serve_epoch(self, *, budget: int, order: PushOrder | None,
                    stop_requested: Callable[[], bool],
                    lr_of: Callable[[int, float], float]) -> EpochLog:
        """Apply pushes until ``budget`` of them (or a stop) and every worker finished.
        ``lr_of(push_index, rows)`` is the learning rate of a push."""
        count = len(self.workers)
        log = EpochLog(per_worker=np.zeros(count, dtype=np.int64))
        recv = [self.comm.Irecv(self._inbox[w], source=rank, tag=PUSH_TAG)
                for w, rank in enumerate(self.workers)]
        finished = 0
        mine = self.params[self.lo:self.hi]
        while finished < count:
            if order is not None:  # the seeded interleaving; in worker order at the end
                w = next(order) if log.pushes < budget and not log.stop else \
                    next(i for i, request in enumerate(recv) if request != MPI.REQUEST_NULL)
                wait_all([recv[w]])
                recv[w] = MPI.REQUEST_NULL
            else:
                w = wait_any(recv)
            message = self._inbox[w]
            tail = message[-PUSH_TAIL:]
            if tail[KIND] == FINISH:
                finished += 1
                recv[w] = MPI.REQUEST_NULL
                continue
            rows = float(tail[ROWS])
            if rows > 0:
                self.optimizer.apply(mine, message, scale=1.0 / rows,
                                     lr=lr_of(log.pushes, rows))
            log.staleness.add(float(log.pushes - int(tail[VERSION])))
            log.pushes += 1
            log.per_worker[w] += 1
            log.stop = log.stop or bool(tail[STOP]) or stop_requested()
            self._sent[w].Wait()  # the previous reply to w has left its buffer
            reply = self._outbox[w]
            reply[:-REPLY_TAIL] = mine
            reply[-REPLY_TAIL] = log.pushes
            reply[-REPLY_TAIL + DONE] = 1.0 if (log.pushes >= budget or log.stop) else 0.0
            self._sent[w] = self.comm.Isend(reply, dest=self.workers[w], tag=REPLY_TAG)
            recv[w] = self.comm.Irecv(self._inbox[w], source=self.workers[w], tag=PUSH_TAG)
        MPI.Request.Waitall(self._sent)
        return log


@dataclass(kw_only=True)
class WorkerClient:
    """Worker rank: pushes gradients to every server and pulls the new parameters."""

    comm: MPI.Comm
    params: np.ndarray
    ranges: list[tuple[int, int]]  # server s (rank s) owns [lo, hi)

    def __post_init__(self) -> None:
        dtype = self.params.dtype
        self._outbox = [np.zeros(hi - lo + PUSH_TAIL, dtype=dtype) for lo, hi in self.ranges]
        self._inbox = [np.zeros(hi - lo + REPLY_TAIL, dtype=dtype) for lo, hi in self.ranges]
        self.versions = np.zeros(len(self.ranges), dtype=np.int64)

    def start_epoch(self) -> None:
        """Versions count updates within an epoch; the epoch starts from one model."""
        self.versions[:] = 0

    def push_pull(self, gradient: np.ndarray, rows: int, stop: bool) -> bool:
        """Send ``gradient`` (flat, the parameters' layout) to the servers, wait for their
        new parameters (into ``params``); True when a server says the epoch is done."""
        requests = []
        for s, (lo, hi) in enumerate(self.ranges):
            out = self._outbox[s]
            out[:hi - lo] = gradient[lo:hi]
            out[-PUSH_TAIL:] = (rows, self.versions[s], 1.0 if stop else 0.0, PUSH)
            requests.append(self.comm.Isend(out, dest=s, tag=PUSH_TAG))
        requests += [self.comm.Irecv(self._inbox[s], source=s, tag=REPLY_TAG)
                     for s in range(len(self.ranges))]
        wait_all(requests)
        done = False
        for s, (lo, hi) in enumerate(self.ranges):
            reply = self._inbox[s]
            self.params[lo:hi] = reply[:-REPLY_TAIL]
            self.versions[s] = int(reply[-REPLY_TAIL])
            done = done or bool(reply[-REPLY_TAIL + DONE])
        return done

    def finish(self) -> None:
        """Tell every server this worker is done for the epoch."""
        requests = []
        for s, out in enumerate(self._outbox):
            out[-PUSH_TAIL:] = (0.0, 0.0, 0.0, FINISH)
            requests.append(self.comm.Isend(out, dest=s, tag=PUSH_TAG))
        MPI.Request.Waitall(requests)
