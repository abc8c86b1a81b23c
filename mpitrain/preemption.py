"""Stop requests from the scheduler: SIGTERM or SIGUSR1 on any rank stops every rank.

Slurm sends SIGTERM before killing a job and, with ``--signal=USR1@120``, SIGUSR1 ahead of a
time limit. The handler only sets a flag; the loop carries the flag in the step message, so
all ranks see it after the same collective, write a checkpoint and exit with
:data:`EXIT_PREEMPTED` (75, EX_TEMPFAIL: try again — the batch script requeues).
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopFlag:
    """Set by a stop signal; read once per step by the loop."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


def install_stop_handlers(signals: tuple[int, ...] = STOP_SIGNALS) -> StopFlag:
    """Route ``signals`` to a new :class:`StopFlag` (main thread only)."""
    flag = StopFlag()
    for signum in signals:
        signal.signal(signum, flag._handle)
    return flag
