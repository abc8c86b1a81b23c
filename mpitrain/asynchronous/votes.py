"""Stop votes that do not make every step wait for every rank.

:class:`LaggedVote` reduces each step's vote (a one-element sum) with a nonblocking
allreduce and reads it ``lag`` steps later, so ranks agree to stop at the same step while
a rank may run up to ``lag`` steps ahead of the slowest one.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import AllreduceHandle, start_allreduce


class LaggedVote:
    """Collective: ``cast`` once per step on every rank, in step order."""

    def __init__(self, comm: MPI.Comm, *, lag: int) -> None:
        self.comm = comm
        self.lag = lag
        self._slots = [np.zeros(1, dtype=np.float64) for _ in range(lag + 1)]
        self._pending: deque[AllreduceHandle] = deque()
        self._cast = 0

    def cast(self, vote: bool) -> bool:
        """Start this step's vote; True when the vote of ``lag`` steps ago stops the run."""
        slot = self._slots[self._cast % len(self._slots)]
        self._cast += 1
        slot[0] = 1.0 if vote else 0.0
        self._pending.append(start_allreduce(slot, self.comm, algorithm="mpi", op="sum"))
        if len(self._pending) > self.lag:
            return bool(self._pending.popleft().wait()[0] > 0)
        return False

    def test(self) -> None:
        """Let the pending reductions progress (MPICH progresses only inside MPI calls)."""
        for handle in self._pending:
            handle.test()

    def drain(self) -> bool:
        """Collective: finish every pending vote; True when any of them was a stop."""
        stop = False
        while self._pending:
            stop |= bool(self._pending.popleft().wait()[0] > 0)
        return stop
