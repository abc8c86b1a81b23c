"""Which slice of the flat model each rank owns under ``--shard``, and what that saves.

``--shard optimizer`` (ZeRO stage 1) and ``--shard gradients`` (stage 2) cut the flat
buffer of ``n`` parameters the way :func:`mpitrain.collectives.reduce_scatter` does
(:func:`mpitrain.collectives.ring.chunk_offsets`: rank ``r`` owns chunk ``r``, the first
``n % P`` chunks one element longer). Kept free of MPI and of the training modules so the
configuration can read :data:`SHARDS` cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpitrain.collectives.ring import chunk_offsets

SHARDS = ("none", "optimizer", "gradients")
# optimizer state buffers per parameter, by update rule (mpitrain.optimizers.rules)
STATE_BUFFERS = {"sgd": 0, "momentum": 1, "adam": 2}


@dataclass(frozen=True)
class Slice:
    """``[start, stop)`` of ``n`` elements: what rank ``rank`` of ``ranks`` owns."""

    n: int
    ranks: int
    rank: int

    @property
    def start(self) -> int:
        return chunk_offsets(self.n, self.ranks)[self.rank]

    @property
    def stop(self) -> int:
        return chunk_offsets(self.n, self.ranks)[self.rank + 1]

    @property
    def largest(self) -> int:
        """Elements of the largest slice of any rank (rank 0's)."""
        return -(-self.n // self.ranks) if self.ranks else 0


def memory_report(*, shard: str, optimizer: str, n: int, itemsize: int,
                  state_bytes: int, message_bytes: int, reduced_bytes: int) -> dict[str, Any]:
    """The ``memory`` section of summary.json: bytes per rank of what training keeps
    between steps, measured on the arrays themselves (``state_bytes``: the optimizer state
    buffers; ``message_bytes``: the working message the model's kernels write a step's
    gradient into, full length in every mode; ``reduced_bytes``: where the reduced gradient
    lives), each the largest over the ranks, next to the unsharded figure."""
    unsharded = STATE_BUFFERS[optimizer] * n * itemsize
    return {
        "shard": shard,
        "parameter_bytes": n * itemsize,
        "optimizer_state_bytes_per_rank": state_bytes,
        "optimizer_state_bytes_unsharded": unsharded,
        "optimizer_state_fraction": state_bytes / unsharded if unsharded else 1.0,
        "gradient_message_bytes": message_bytes,
        "reduced_gradient_bytes_per_rank": reduced_bytes,
    }
