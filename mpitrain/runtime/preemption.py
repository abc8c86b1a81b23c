"""Stop requests: SIGTERM, SIGUSR1 or SIGINT on any rank stops every rank.

Slurm sends SIGTERM before killing a job and, with ``--signal=USR1@120``, SIGUSR1 ahead of a
time limit; MPICH's ``mpiexec`` passes Ctrl-C (SIGINT) on to every rank. The handler only
sets a flag; the loop carries the flag in the step message, so all ranks see it after the
same collective, write a checkpoint and exit with :data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL:
try again — the batch script requeues), or :data:`EXIT_INTERRUPTED` (130, the shell's
status for Ctrl-C) when the stop came from SIGINT, which a batch script should not requeue.

A stop can only be agreed on if every rank reaches the next step boundary. When a rank has
died (``srun --kill-on-bad-exit`` then sends SIGTERM to the others) or hangs, the others
would wait in the step's collective until SIGKILL, and a rank blocked inside MPI never even
runs its Python signal handler. So a small thread hears about the signal at once (through
:func:`signal.set_wakeup_fd`), and a rank that has not reached the boundary
:func:`stop_grace` seconds after the signal gives up: it says so and exits with 128 + the
signal's number, as if the signal had killed it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 128 + signal.SIGINT
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
STOP_GRACE = 20.0
"""Seconds from a stop signal to the next step boundary before a rank gives up. Below
Slurm's default KillWait (30 s), so a job with a dead rank ends before SIGKILL would end
it. ``MPITRAIN_STOP_GRACE`` overrides it; 0 waits forever."""


class StopFlag:
    """Set by a stop signal; read once per step by the loop."""

    def __init__(self, grace: float = 0.0,
                 signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signal: int | None = None
        self.grace = grace
        self.signals = signals
        self._reached = False
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()  # the main thread's handler may interrupt it

    def __call__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._note(signum)

    def _note(self, signum: int) -> None:
        """First stop signal (from the handler or the listening thread): set the flag and
        start the give-up timer."""
        with self._lock:
            if self.signal is not None:
                return
            self.signal = signum
            if self.grace > 0 and not self._reached:
                self._timer = threading.Timer(self.grace, self._give_up)
                self._timer.daemon = True
                self._timer.start()

    def _listen(self, fd: int) -> None:
        """Thread body: read signal numbers from the wakeup pipe (written even while the
        main thread is blocked in C code, e.g. an MPI collective)."""
        try:
            while data := os.read(fd, 64):
                for signum in data:
                    if signum in self.signals:
                        self._note(signum)
        except OSError:
            pass
        finally:
            os.close(fd)

    def reached(self) -> None:
        """The ranks agreed to stop, or finished: no reason to give up any more."""
        with self._lock:
            self._reached = True
            if self._timer is not None:
                self._timer.cancel()

    def _give_up(self) -> None:
        signum = self.signal or signal.SIGTERM
        try:
            from mpi4py import MPI

            rank = f"rank {MPI.COMM_WORLD.Get_rank()}"
        except Exception:  # only for the message
            rank = f"pid {os.getpid()}"
        print(f"mpitrain: {rank}: got {signal.Signals(signum).name} {self.grace:g} s ago "
              "but the ranks did not reach the next step boundary (a rank died or hangs?); "
              "exiting without a checkpoint", file=sys.stderr, flush=True)
        os._exit(128 + signum)


_active: StopFlag | None = None
_wakeup: int | None = None  # write end of the wakeup pipe


def stop_grace(env: dict[str, str] | None = None) -> float:
    """:data:`STOP_GRACE`, or ``MPITRAIN_STOP_GRACE`` when that is a number >= 0."""
    text = (os.environ if env is None else env).get("MPITRAIN_STOP_GRACE", "").strip()
    try:
        value = float(text) if text else STOP_GRACE
    except ValueError:
        return STOP_GRACE
    return value if value >= 0 else STOP_GRACE


def install_stop_handlers(signals: tuple[int, ...] = STOP_SIGNALS,
                          grace: float | None = None) -> StopFlag:
    """Route ``signals`` to a new :class:`StopFlag` (main thread only). ``grace``: seconds
    before a rank that cannot reach the next step boundary gives up (default
    :func:`stop_grace`; 0: never)."""
    global _active, _wakeup
    flag = StopFlag(stop_grace() if grace is None else grace, signals)
    for signum in signals:
        signal.signal(signum, flag._handle)
    if _wakeup is not None:  # a previous flag's pipe: its thread ends at end of file
        signal.set_wakeup_fd(-1)
        os.close(_wakeup)
        _wakeup = None
    if flag.grace > 0:
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        _wakeup = write
        threading.Thread(target=flag._listen, args=(read,), name="mpitrain-stop",
                         daemon=True).start()
    _active = flag
    return flag


def stop_status(flag: StopFlag, comm: Any) -> tuple[int, str]:
    """Collective, once the ranks have agreed to stop: the exit status and the signals'
    name, the same on every rank — Ctrl-C (SIGINT) on any rank wins over SIGTERM/SIGUSR1."""
    from mpi4py import MPI  # not at import: the module's handlers need no MPI

    if comm.allreduce(flag.signal == signal.SIGINT, op=MPI.LOR):
        return EXIT_INTERRUPTED, "SIGINT (Ctrl-C)"
    return EXIT_PREEMPTED, "SIGTERM/SIGUSR1"


def stop_reached() -> None:
    """Called where the ranks agree to stop, and when they finish: cancels the give-up
    timer of the installed :class:`StopFlag`."""
    if _active is not None:
        _active.reached()
