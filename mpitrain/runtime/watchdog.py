"""``--stall-timeout``: report the ranks that never reach a collective, then abort.

A background thread per rank watches the main thread's collectives. When one has waited
longer than the timeout, the waiting ranks tell each other so on a private communicator;
whoever is not heard from within a grace period did not arrive. The lowest waiting rank
prints the report and aborts the job (exit status :data:`EXIT_STALLED`), so a rank stuck in
I/O, a deadlock or a livelock cannot keep the others waiting forever.

The abort goes to the communicator the watchdog was started for, not to its private
duplicate. For ``MPI_COMM_WORLD`` (the CLI's) MPICH then asks the process manager to end
the job, and ``mpiexec`` exits with exactly :data:`EXIT_STALLED`. ``MPI_Abort`` on any
other communicator (the duplicate included) only makes the ranks that take part in MPI
progress exit: the job then ends because hydra SIGKILLs the stuck rank, and ``mpiexec``
exits 124 or 9 depending on the order in which it happens to reap the processes.
"""

from __future__ import annotations

import array
import fcntl
import os
import stat
import sys
import termios
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from mpitrain.errors import UserError

EXIT_STALLED = 124
_TAG = 0x57A1
_FALLBACK = 30.0
"""Seconds a waiting rank other than the lowest waits for the lowest one's abort before
aborting the job itself (the lowest one normally ends the job within a second)."""
DRAIN_SECONDS = 10.0
"""Seconds a rank about to abort waits at most for its stderr pipe to be read."""
_JOIN = 60.0
"""Seconds :meth:`Watchdog.stop` waits at most for the watching thread to end: an idle one
wakes at once; one that has begun a stall report ends in an abort instead."""


@dataclass(kw_only=True)
class Watchdog:
    """Call ``enter(label)`` before and ``leave()`` after each watched collective."""

    comm: MPI.Comm  # a private duplicate: the stall protocol's messages
    timeout: float
    job: MPI.Comm | None = None  # aborted on a stall (default: ``comm``)
    entered: float | None = None
    count: int = 0
    label: str = ""
    thread: threading.Thread | None = None
    reporting: bool = False  # the thread runs the stall protocol (it ends in an abort)
    _stop: threading.Event = field(default_factory=threading.Event)

    def enter(self, label: str) -> None:
        """The main thread is about to wait in collective number ``count``."""
        self.count += 1
        self.label = label
        self.entered = time.monotonic()

    def leave(self) -> None:
        """The collective completed."""
        self.entered = None

    def stop(self) -> None:
        """End the watching thread and free the private communicator.

        Called on every rank from ``train()``'s ``finally:``, on every path; calling it again
        does nothing. The thread is told to stop and joined first, so it never touches the
        communicator afterwards; a thread that has begun a stall report is left to abort
        the job, and its communicator with it.

        ``Comm.Free`` is collective: calling it on some ranks only is erroneous, and an MPI
        may make it wait for the others. So the duplicate is freed only when every rank is
        known to get here together: no exception is propagating (the run ended or
        stopped), or the propagating one is a :class:`~mpitrain.errors.UserError` raised on
        every rank alike (``agreed``). Any other exception means some ranks failed while
        the others may still wait in a collective; the job is aborted next
        (``mpitrain.cli``), and the duplicate is left to that abort, so ``stop`` cannot
        delay it. (``train()`` called inside an ``except`` block also sees that block's
        exception: the duplicate then stays allocated until ``MPI_Finalize``.)
        """
        self._stop.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            if not self.reporting:
                thread.join(_JOIN)
            if thread.is_alive():
                return
        if self.comm == MPI.COMM_NULL or not _every_rank_is_here():
            return
        self.comm.Free()

    def run(self) -> None:
        """Thread body: poll, and run the stall protocol once a wait exceeds the timeout."""
        poll = min(1.0, self.timeout / 4)
        while not self._stop.wait(poll):
            entered = self.entered
            if entered is not None and time.monotonic() - entered > self.timeout:
                self.reporting = True
                self._report(self.count, self.label)
                return

    def _report(self, count: int, label: str) -> None:
        comm, rank, size = self.comm, self.comm.Get_rank(), self.comm.Get_size()
        mine = np.array([count], dtype=np.int64)
        requests = [comm.Isend(mine, dest=other, tag=_TAG) for other in range(size)
                    if other != rank]
        arrived = {rank}
        grace = max(2.0, min(self.timeout, 10.0))
        deadline = time.monotonic() + grace
        status = MPI.Status()
        theirs = np.zeros(1, dtype=np.int64)
        while time.monotonic() < deadline and len(arrived) < size:
            if comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG, status=status):
                comm.Recv(theirs, source=status.Get_source(), tag=_TAG)
                if theirs[0] == count:
                    arrived.add(status.Get_source())
            else:
                time.sleep(0.01)
        missing = sorted(set(range(size)) - arrived)
        if rank == min(arrived):
            names = ", ".join(map(str, missing)) or "none (all ranks wait: a deadlock?)"
            print(f"mpitrain: stall: rank(s) {names} did not reach {label} within "
                  f"{self.timeout:g} s (--stall-timeout); aborting the job", file=sys.stderr,
                  flush=True)
            wait_until_read(sys.stderr, DRAIN_SECONDS)
        else:  # leave the report and the abort to the lowest waiting rank
            time.sleep(max(_FALLBACK, grace))
        del requests
        (comm if self.job is None else self.job).Abort(EXIT_STALLED)


def wait_until_read(stream, limit: float) -> None:
    """When ``stream`` is a pipe (to mpiexec's proxy, under hydra), wait until its reader has
    read everything written to it, at most ``limit`` seconds.

    The proxy forwards what it reads at once, but it serves a rank's PMI socket before its
    output pipes: an abort sent while the report still sits in the pipe overtakes the
    report, and mpiexec exits on the abort before printing it.
    """
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        unread = array.array("i", [0])
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            fcntl.ioctl(fd, termios.FIONREAD, unread)
            if unread[0] <= 0:
                return
            time.sleep(0.005)
    except (AttributeError, OSError, ValueError):  # no file descriptor, closed, ...
        return


def _every_rank_is_here() -> bool:
    """In ``stop``: no exception propagates, or only one raised on every rank alike."""
    error = sys.exc_info()[1]
    return error is None or (isinstance(error, UserError) and error.agreed)


def start_watchdog(comm: MPI.Comm, *, timeout: float) -> Watchdog | None:
    """Collective: a running Watchdog for ``comm``, or None when ``timeout`` is 0.

    On a stall the watchdog aborts ``comm`` (see the module docstring); call
    :meth:`Watchdog.stop` on every rank when done.
    """
    if timeout <= 0:
        return None
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        raise UserError("--stall-timeout needs MPI initialised with MPI_THREAD_MULTIPLE "
                        "(mpi4py's default); check mpi4py.rc.thread_level")
    watchdog = Watchdog(comm=comm.Dup(), timeout=timeout, job=comm)
    watchdog.thread = threading.Thread(target=watchdog.run, name="mpitrain-watchdog",
                                       daemon=True)
    watchdog.thread.start()
    return watchdog
