"""``--straggler RANK:FACTOR[:JITTER]``: make a rank slower, to study stragglers on one machine.

After each step's compute, a straggling rank sleeps ``(FACTOR - 1)`` times the compute time
it just measured, times ``1 + JITTER * u`` with ``u`` uniform in [-1, 1] from a seeded
stream; so the rank is FACTOR times slower on average whatever the model and data. The
sleep changes no number the rank computes: only when its messages leave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mpitrain.errors import UserError

STRAGGLER_STREAM = 0x57A6


@dataclass(frozen=True)
class StragglerSpec:
    """One slow rank: compute takes ``factor`` times as long, +- ``jitter`` (relative)."""

    rank: int
    factor: float
    jitter: float = 0.0


def parse_stragglers(text: str) -> tuple[StragglerSpec, ...]:
    """``"1:3"`` or ``"1:3:0.5,2:2"`` → specs; UserError naming the bad part otherwise."""
    specs: list[StragglerSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        pieces = part.split(":")
        bad = UserError(f"--straggler expects RANK:FACTOR or RANK:FACTOR:JITTER with RANK "
                        f">= 0, FACTOR >= 1 and JITTER in [0, 1] (got {part!r})")
        if len(pieces) not in (2, 3):
            raise bad
        try:
            rank, factor = int(pieces[0]), float(pieces[1])
            jitter = float(pieces[2]) if len(pieces) == 3 else 0.0
        except ValueError:
            raise bad from None
        if rank < 0 or not 1.0 <= factor < float("inf") or not 0.0 <= jitter <= 1.0:
            raise bad
        if any(spec.rank == rank for spec in specs):
            raise UserError(f"--straggler names rank {rank} twice (got {text!r})")
        specs.append(StragglerSpec(rank, factor, jitter))
    return tuple(specs)


def check_stragglers(text: str, ranks: int) -> str | None:
    """Why ``--straggler`` cannot apply to a run on ``ranks`` ranks, or None."""
    for spec in parse_stragglers(text):
        if spec.rank >= ranks:
            return (f"--straggler names rank {spec.rank} but the job has {ranks} ranks "
                    f"(0..{ranks - 1})")
    return None


@dataclass
class Straggler:
    """This rank's slowdown (a no-op for ranks not named by ``--straggler``)."""

    factor: float = 1.0
    jitter: float = 0.0
    seed: int = 0
    rank: int = 0
    slept: float = 0.0  # seconds slept so far
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.seed, STRAGGLER_STREAM, self.rank])

    @classmethod
    def for_rank(cls, text: str, *, rank: int, seed: int) -> Straggler:
        """The slowdown ``--straggler text`` gives ``rank``."""
        for spec in parse_stragglers(text):
            if spec.rank == rank:
                return cls(spec.factor, spec.jitter, seed, rank)
        return cls(1.0, 0.0, seed, rank)

    @property
    def active(self) -> bool:
        return self.factor > 1.0

    def slow_down(self, started: float) -> None:
        """Sleep in proportion to the compute that began at ``started``
        (``time.perf_counter()``)."""
        if self.factor <= 1.0:
            return
        spent = time.perf_counter() - started
        scale = 1.0 + (self.jitter * self._rng.uniform(-1.0, 1.0) if self.jitter else 0.0)
        pause = (self.factor - 1.0) * spent * scale
        if pause > 0:
            time.sleep(pause)
            self.slept += pause
