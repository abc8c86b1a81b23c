"""A deterministic test set held out of one source, independent of the number of ranks.

The test set is a random subset of exactly ``round(fraction * n)`` rows drawn from a
Generator keyed by ``(seed, HOLDOUT)``; the training rows are the others, in their original
order. Only the sorted test indices are stored; the source row of any training position
is found by binary search, so no rank builds an index of all training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Stream tag of the holdout generator (distinct from the synthetic data's tags).
HOLDOUT = 2


@dataclass(frozen=True, eq=False)
class Holdout:
    """Which rows of an ``n_rows`` source are test rows (the rest are training rows)."""

    n_rows: int
    test: np.ndarray  # sorted source indices of the test rows

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def n_train(self) -> int:
        return self.n_rows - len(self.test)

    def train_rows(self, start: int, stop: int) -> np.ndarray:
        """Source indices of training positions ``start..stop-1``.

        ``test[i] - i`` training rows precede test row ``i``, so training position ``p``
        is source row ``p + #{i : test[i] - i <= p}``.
        """
        positions = np.arange(start, stop, dtype=np.int64)
        before = self.test - np.arange(len(self.test), dtype=np.int64)
        return positions + np.searchsorted(before, positions, side="right")

    def test_rows(self, start: int, stop: int) -> np.ndarray:
        """Source indices of test positions ``start..stop-1``."""
        return self.test[start:stop]


def make_holdout(n_rows: int, fraction: float, seed: int) -> Holdout:
    """Hold out ``round(fraction * n_rows)`` rows chosen by ``(seed, HOLDOUT)``."""
    n_test = round(fraction * n_rows)
    if n_test == 0:
        return no_holdout(n_rows)
    rng = np.random.default_rng([seed, HOLDOUT])
    test = rng.choice(n_rows, size=n_test, replace=False, shuffle=False)
    return Holdout(n_rows, np.sort(test).astype(np.int64))


def no_holdout(n_rows: int) -> Holdout:
    """All rows are training rows (the test set comes from elsewhere)."""
    return Holdout(n_rows, np.empty(0, dtype=np.int64))
