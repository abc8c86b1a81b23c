"""How stale the applied gradients were: the number of updates applied to the model between
reading the parameters a gradient was computed at and applying that gradient (0 for
synchronous SGD). Counted per period (epoch) and reported as mean and max."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Staleness:
    """Per-period sums of staleness: ``add`` per applied gradient, ``take`` per period."""

    total: float = 0.0
    count: float = 0.0
    worst: float = 0.0

    def add(self, value: float, count: float = 1.0) -> None:
        """``count`` gradients applied with staleness ``value`` each."""
        self.total += value * count
        self.count += count
        self.worst = max(self.worst, value)

    def merge(self, total: float, count: float, worst: float) -> None:
        """Fold in sums observed elsewhere (e.g. reduced over the ranks)."""
        self.total += total
        self.count += count
        self.worst = max(self.worst, worst)

    def take(self) -> dict[str, Any]:
        """``staleness_mean``/``staleness_max`` of the period, then start a new one."""
        mean = self.total / self.count if self.count else 0.0
        out = {"staleness_mean": mean, "staleness_max": int(self.worst)}
        self.total = self.count = self.worst = 0.0
        return out

    def state(self) -> list[float]:
        """For checkpoints (JSON)."""
        return [self.total, self.count, self.worst]

    def restore(self, values: list[float]) -> None:
        self.total, self.count, self.worst = (float(v) for v in values)
