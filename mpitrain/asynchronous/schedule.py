"""Seeded schedules of the asynchronous modes: who gossips with whom, and in which order a
parameter server applies pushes under ``--simulate-schedule``.

Both are keyed by (seed, epoch, step or push) so a run can be replayed; both depend on the
number of ranks (a different number of ranks is a different schedule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GOSSIP_STREAM = 0x6055
PUSH_STREAM = 0x9054


def gossip_partners(*, seed: int, epoch: int, step: int, ranks: int) -> np.ndarray:
    """``partner[r]``: the rank ``r`` averages with at this step, or -1 (an odd one out).

    A seeded random perfect matching: a fresh permutation pairs its entries 0-1, 2-3, ...
    """
    order = np.random.default_rng([seed, GOSSIP_STREAM, epoch, step]).permutation(ranks)
    partner = np.full(ranks, -1, dtype=np.int64)
    for i in range(0, ranks - 1, 2):
        a, b = int(order[i]), int(order[i + 1])
        partner[a], partner[b] = b, a
    return partner


class PushOrder:
    """The fixed interleaving of ``--simulate-schedule``: which worker's push a server
    applies next. Worker ``w`` is drawn with probability proportional to ``speeds[w]``
    (1 / its ``--straggler`` factor), so a slow worker's pushes come less often, as they
    would in real time, but in an order that only depends on the seed."""

    def __init__(self, *, seed: int, epoch: int, speeds: Sequence[float]) -> None:
        weights = np.asarray(speeds, dtype=np.float64)
        self._p = weights / weights.sum()
        self._rng = np.random.default_rng([seed, PUSH_STREAM, epoch])
        self._buffer = np.empty(0, dtype=np.int64)
        self._next = 0

    def __next__(self) -> int:
        if self._next == len(self._buffer):
            self._buffer = self._rng.choice(len(self._p), size=256, p=self._p)
            self._next = 0
        worker = int(self._buffer[self._next])
        self._next += 1
        return worker

    def __iter__(self) -> PushOrder:
        return self
