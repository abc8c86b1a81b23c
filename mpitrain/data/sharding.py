"""Contiguous block split of ``n`` rows over ``size`` ranks.

The first ``n % size`` ranks get one extra row, so block sizes differ by at most one and
rank ``r``'s rows follow rank ``r - 1``'s: concatenating the blocks in rank order gives the
rows in their original order, whatever the number of ranks.
"""

from __future__ import annotations


def block_range(n: int, size: int, rank: int) -> tuple[int, int]:
    """Return ``(start, stop)`` of ``rank``'s block of ``n`` rows split over ``size`` ranks."""
    if n < 0 or size < 1 or not 0 <= rank < size:
        raise ValueError(f"block_range needs n >= 0 and 0 <= rank < size (got {n}, {size}, {rank})")
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)
