"""Run ``python -m mpitrain`` with faults injected, for the reliability tests.

    mpiexec -n 2 python tests/chaos.py train ARGS...
    mpiexec -n 2 python tests/chaos.py -m mpitrain train ARGS...   # as a stand-in python

Behaves exactly like ``python -m mpitrain`` (same ``main``), plus, from the environment:

- ``CHAOS_PIDS=DIR``: each rank writes its PID to ``DIR/rank-R.pid`` first thing, and the
  time (``time.time()``) at which it injects a fault to ``DIR/signal-R.time``,
  ``DIR/stall-R.time`` or ``DIR/hold-R.time``; with ``CHAOS_STALL``, every rank that
  reaches the collective of the stalled step writes ``DIR/collective-R.time`` just before
  it enters it. Tests wait for these files (events), not for a guessed number of seconds;
- ``CHAOS_SLEEP=S``: every rank sleeps S seconds per step (before its part of the step;
  slows a run down without changing a single bit of what it computes);
- ``CHAOS_SIGNAL=RANK:STEP:NAME``: rank RANK sends itself signal NAME (``USR1``,
  ``TERM``, ``KILL``, ...) while computing step STEP (0-based unit index: a step, or a
  round with ``--mode fedavg``);
- ``CHAOS_STALL=RANK:STEP:S``: rank RANK sleeps S seconds before the collective of step
  STEP (a stuck rank, for ``--stall-timeout``);
- ``CHAOS_WRITE_ERROR=PERIOD:ERRNO``: rank 0's write of metrics line PERIOD (an epoch or
  a round, 1-based) fails with OSError ``ERRNO`` (``EROFS``, ``ENOSPC``, ...), as on a file
  system that filled up or turned read-only during the run;
- ``CHAOS_HOLD=RANK:STEP``: rank RANK, before computing step STEP, waits until it has
  received a stop signal (SIGTERM/SIGUSR1 from outside; at most 120 s), so a run cannot
  finish before the test's signal arrives, however slow or fast the machine;
- ``CHAOS_RAISE=RANK:STEP``: rank RANK raises RuntimeError while computing step STEP (a
  bug on one rank: the job must end with that rank named).

Every strategy of the registry is patched (for the asynchronous modes a unit is a step,
or an epoch with ``--mode async-ps``); a strategy that calls its parent's patched method
gets the faults once.

The patches forward any further arguments of ``contribute`` and ``reduce`` unchanged.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

from mpitrain.runtime.launch import configure_threads

configure_threads()  # as python -m mpitrain does, before numpy and numba load

from mpi4py import MPI  # noqa: E402

from mpitrain.cli import main  # noqa: E402
from mpitrain.runtime import outputs, preemption  # noqa: E402
from mpitrain.strategies import MODES, strategy_class  # noqa: E402
from mpitrain.strategies.node_shared import NodeSharedStrategy  # noqa: E402

RANK = MPI.COMM_WORLD.Get_rank()
HOLD_LIMIT = 120.0  # seconds CHAOS_HOLD waits for the stop signal at most


def _parse(name: str) -> tuple[int, int, str] | None:
    value = os.environ.get(name)
    if not value:
        return None
    rank, step, *what = value.split(":")
    return int(rank), int(step), ":".join(what)


PIDS = Path(os.environ["CHAOS_PIDS"]) if os.environ.get("CHAOS_PIDS") else None


def _note(name: str, text: str) -> None:
    """Write ``PIDS/name`` atomically (readers never see a partial file)."""
    if PIDS is None:
        return
    PIDS.mkdir(parents=True, exist_ok=True)
    temp = PIDS / f".{name}.tmp"
    temp.write_text(text + "\n")
    temp.replace(PIDS / name)


_note(f"rank-{RANK}.pid", str(os.getpid()))

SLEEP = float(os.environ.get("CHAOS_SLEEP") or 0)
SIGNAL = _parse("CHAOS_SIGNAL")
STALL = _parse("CHAOS_STALL")
HOLD = _parse("CHAOS_HOLD")
RAISE = _parse("CHAOS_RAISE")
_inside = [False]  # a patched method is running (a subclass calling its parent's)


def _hold() -> None:
    """Wait until this rank's stop flag is set (a stop signal arrived), or HOLD_LIMIT."""
    _note(f"hold-{RANK}.time", repr(time.time()))
    deadline = time.monotonic() + HOLD_LIMIT
    while time.monotonic() < deadline:
        flag = preemption._active
        if flag is not None and flag():
            return
        time.sleep(0.01)


def patch(strategy: type) -> None:
    """Inject the faults into ``strategy.contribute`` (a step, or a federated round) and
    ``strategy.reduce`` (its collective)."""
    original_contribute = strategy.contribute
    original_reduce = strategy.reduce

    def contribute(self, unit, *args, **kwargs):
        if _inside[0]:
            return original_contribute(self, unit, *args, **kwargs)
        _inside[0] = True
        try:
            inject(self, unit, *args, **kwargs)
        finally:
            _inside[0] = False

    def inject(self, unit, *args, **kwargs):
        if RAISE is not None and (RANK, unit.index) == RAISE[:2]:
            raise RuntimeError(f"chaos: rank {RANK} fails in unit {unit.index}")
        if SLEEP:
            time.sleep(SLEEP)
        if HOLD is not None and (RANK, unit.index) == HOLD[:2]:
            _hold()
        if SIGNAL is not None and (RANK, unit.index) == SIGNAL[:2]:
            _note(f"signal-{RANK}.time", repr(time.time()))
            os.kill(os.getpid(), getattr(signal, "SIG" + SIGNAL[2]))
        original_contribute(self, unit, *args, **kwargs)
        if STALL is not None and (RANK, unit.index) == STALL[:2]:
            _note(f"stall-{RANK}.time", repr(time.time()))
            time.sleep(float(STALL[2]))

    def reduce(self, unit, *args, **kwargs):
        if STALL is not None and unit.index == STALL[1]:
            _note(f"collective-{RANK}.time", repr(time.time()))
        return original_reduce(self, unit, *args, **kwargs)

    strategy.contribute = contribute
    strategy.reduce = reduce


for mode in MODES:
    patch(strategy_class(mode))
patch(NodeSharedStrategy)  # (--reduce shared-update: its own contribute and reduce)

WRITE_ERROR = os.environ.get("CHAOS_WRITE_ERROR")
if WRITE_ERROR:
    _period, _name = WRITE_ERROR.split(":")
    _record = outputs.RunOutput.record

    def _failing_record(self, metrics, line):
        if self.directory is not None and metrics.get("epoch", metrics.get("round")) == int(
                _period):
            code = getattr(errno, _name)
            raise OSError(code, os.strerror(code))
        return _record(self, metrics, line)

    outputs.RunOutput.record = _failing_record

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:2] == ["-m", "mpitrain"]:  # standing in for python: `chaos.py -m mpitrain ...`
        args = args[2:]
    sys.exit(main(args))
