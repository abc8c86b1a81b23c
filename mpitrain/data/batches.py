"""Which of this rank's rows go into each step of an epoch.

``--batch-size`` is the global batch. With ``shuffle="global"`` the sequence of global batches
is one seeded permutation of all training rows keyed by (seed, epoch), so every row lands in
the same step whatever the number of ranks; a rank simply keeps the rows of each batch that
fall in its block. ``"none"`` is the same with the identity permutation. ``"local"`` shuffles
within the rank's block and splits it evenly over the steps (balanced work, but the model then
depends on the number of ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHUFFLE_STREAM = 0x5F1E
SHUFFLES = ("global", "local", "none")


@dataclass(frozen=True)
class EpochPlan:
    """Local row indices of every step of one epoch: ``rows(step)`` is a view, no copy."""

    local_rows: np.ndarray  # int64, this rank's rows in the order they are used
    bounds: np.ndarray  # int64, steps + 1 offsets into local_rows

    @property
    def steps(self) -> int:
        """Number of steps in the epoch (the same on every rank)."""
        return len(self.bounds) - 1

    def rows(self, step: int) -> np.ndarray:
        """This rank's rows of ``step``."""
        return self.local_rows[self.bounds[step]:self.bounds[step + 1]]


def steps_per_epoch(n_total: int, batch_size: int) -> int:
    """ceil(n_total / batch_size): the last batch may be smaller."""
    return -(-n_total // batch_size)


def epoch_plan(*, shuffle: str, seed: int, epoch: int, n_total: int, start: int, count: int,
               batch_size: int) -> EpochPlan:
    """The plan of ``epoch`` for the rank holding global rows ``[start, start + count)``."""
    steps = steps_per_epoch(n_total, batch_size)
    if shuffle == "local":
        rng = np.random.default_rng([seed, SHUFFLE_STREAM, epoch, start])
        local = rng.permutation(count).astype(np.int64)
        bounds = (np.arange(steps + 1, dtype=np.int64) * count) // steps
        return EpochPlan(local, bounds)
    if shuffle == "global":
        order = np.random.default_rng([seed, SHUFFLE_STREAM, epoch]).permutation(n_total)
    else:
        order = np.arange(n_total)
    mine = (order >= start) & (order < start + count)
    local = (order[mine] - start).astype(np.int64)
    batch_of = np.flatnonzero(mine) // batch_size
    bounds = np.searchsorted(batch_of, np.arange(steps + 1), side="left").astype(np.int64)
    return EpochPlan(local, bounds)
