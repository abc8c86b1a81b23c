"""Robust aggregation of individual client updates: coordinate-wise median, trimmed mean,
and Krum (Blanchard et al. 2017).

These rules need every sampled client's update, not just their sum. Gathering all m updates
of n parameters on every rank would cost m·n memory per rank, so the exchange is a
distributed transpose with bounded memory (:class:`RobustReducer`):

1. Coordinates are split into P slices (rank r owns slice r), each processed in ``chunks``
   pieces so a receive buffer holds at most ``budget`` numbers.
2. Per chunk, one ``Alltoallv`` sends each rank's own clients' values for every slice to the
   slice's owner; the owner now holds all m clients' values on its chunk and either
   aggregates them (median / trimmed mean) into its slice of the result or adds the chunk's
   contribution to the m×m squared-distance matrix (Krum).
3. One ``Allreduce`` sums the message tail (and Krum's distance matrix).
4. Median / trimmed mean: one ``Allgatherv`` assembles the result slices on every rank.
   Krum: the owner of the winning client ``Bcast``s that client's update.

Cost per round (n parameters, m sampled clients of which m_r on rank r, ``b`` bytes each):
memory m_r·n (its own updates, needed anyway) + min(m·n/P, budget) per rank; traffic per
rank about m_r·n·b (transpose) + n·b (result), against ~2n·b for the plain mean's allreduce;
``chunks`` + 2 collectives instead of one.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from ..data import block_range

AGGREGATES = ("mean", "median", "trimmed-mean", "krum")
BUDGET = 1 << 22  # numbers in one rank's receive buffer per chunk (32 MiB of float64)


def coordinate_median(updates: np.ndarray, out: np.ndarray) -> None:
    """Median over clients (rows) of every coordinate (column)."""
    np.median(updates, axis=0, out=out)


def trimmed_mean(updates: np.ndarray, fraction: float, out: np.ndarray) -> None:
    """Mean of every coordinate after dropping the floor(fraction·m) lowest and highest."""
    m = updates.shape[0]
    cut = int(np.floor(fraction * m))
    ordered = np.sort(updates, axis=0)
    np.mean(ordered[cut:m - cut], axis=0, out=out)


def add_squared_distances(updates: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] += ||u_i - u_j||²`` over these columns (Gram-matrix form)."""
    u = updates.astype(np.float64, copy=False)
    gram = u @ u.T
    norms = np.diag(gram).copy()
    out += norms[:, None] + norms[None, :] - 2.0 * gram


def krum_index(distances: np.ndarray, byzantine: int) -> int:
    """Krum: the client whose m - f - 2 nearest neighbours are closest (sum of squared
    distances); ties go to the lowest index."""
    m = distances.shape[0]
    keep = m - byzantine - 2
    if keep < 1:
        raise ValueError(f"krum needs m >= 2f + 3 clients (got m={m}, f={byzantine})")
    scores = np.empty(m)
    for i in range(m):
        others = np.delete(np.maximum(distances[i], 0.0), i)
        scores[i] = np.sort(others)[:keep].sum()
    return int(np.argmin(scores))


class RobustReducer:
    """The distributed transpose described in the module docstring, for one rule."""

    def __init__(self, comm: MPI.Comm, *, rule: str, n: int, dtype: np.dtype,
                 trim_fraction: float = 0.1, byzantine: int = 0,
                 budget: int = BUDGET) -> None:
        self.comm, self.rule, self.n = comm, rule, n
        self.trim_fraction, self.byzantine, self.budget = trim_fraction, byzantine, budget
        self.dtype = np.dtype(dtype)
        self.mpi_type = from_numpy_dtype(self.dtype)
        size, rank = comm.Get_size(), comm.Get_rank()
        self.slices = [block_range(n, size, r) for r in range(size)]
        self.rank = rank

    def chunks(self, m: int) -> int:
        """Chunks per slice for m clients (the same on every rank)."""
        longest = max(hi - lo for lo, hi in self.slices)
        return max(1, -(-m * longest // self.budget))

    def estimate_bytes(self, counts: np.ndarray) -> float:
        """Bytes this rank sends in one :meth:`reduce` (a Bcast counted as n/P per rank)."""
        size = self.comm.Get_size()
        lo, hi = self.slices[self.rank]
        transpose = int(counts[self.rank]) * (self.n - (hi - lo))
        result = self.n / size if self.rule == "krum" else (hi - lo) * (size - 1)
        return float((transpose + result) * self.dtype.itemsize) if size > 1 else 0.0

    def reduce(self, updates: np.ndarray, counts: np.ndarray, message: np.ndarray,
               tail: slice) -> int:
        """Collective: robust aggregate of all ranks' ``updates`` into ``message[:n]``; the
        message ``tail`` is summed. ``updates``: this rank's (m_r, n) client updates;
        ``counts``: m_r of every rank (the same array everywhere). Returns the index
        (0..m-1, rank-major) of Krum's choice, or -1.
        """
        comm, n = self.comm, self.n
        size, rank = comm.Get_size(), self.rank
        m = int(counts.sum())
        mine = int(counts[rank])
        first = int(counts[:rank].sum())
        chunks = self.chunks(m)
        distances = np.zeros((m, m)) if self.rule == "krum" else None
        for chunk in range(chunks):
            parts = [self._part(r, chunk, chunks) for r in range(size)]
            widths = np.array([b - a for a, b in parts], dtype=np.int64)
            send = np.empty(mine * int(widths.sum()), dtype=self.dtype)
            offset = 0
            for a, b in parts:
                block = send[offset:offset + mine * (b - a)].reshape(mine, b - a)
                block[...] = updates[:mine, a:b]
                offset += mine * (b - a)
            my_width = int(widths[rank])
            received = np.empty((m, my_width), dtype=self.dtype)
            send_counts = mine * widths
            recv_counts = counts.astype(np.int64) * my_width
            comm.Alltoallv([send, (send_counts, _displacements(send_counts)), self.mpi_type],
                           [received, (recv_counts, _displacements(recv_counts)),
                            self.mpi_type])
            a, b = parts[rank]
            if self.rule == "krum":
                add_squared_distances(received, distances)
            elif self.rule == "median":
                coordinate_median(received, message[a:b])
            else:
                trimmed_mean(received, self.trim_fraction, message[a:b])
        summed = np.zeros((m * m if distances is not None else 0)
                          + (tail.stop - tail.start))
        if distances is not None:
            summed[:m * m] = distances.ravel()
        summed[summed.size - (tail.stop - tail.start):] = message[tail]
        comm.Allreduce(MPI.IN_PLACE, summed, op=MPI.SUM)
        message[tail] = summed[summed.size - (tail.stop - tail.start):]
        winner = -1
        if distances is not None:
            winner = krum_index(summed[:m * m].reshape(m, m), self.byzantine)
            owner = int(np.searchsorted(np.cumsum(counts), winner, side="right"))
            if owner == rank:
                message[:n] = updates[winner - first]
            comm.Bcast([message[:n], self.mpi_type], root=owner)
        else:
            widths = np.array([b - a for a, b in self.slices], dtype=np.int64)
            comm.Allgatherv(MPI.IN_PLACE, [message[:n], (widths, _displacements(widths)),
                                           self.mpi_type])
        return winner

    def _part(self, r: int, chunk: int, chunks: int) -> tuple[int, int]:
        """Coordinates [a, b) of rank r's slice handled in ``chunk``."""
        lo, hi = self.slices[r]
        a, b = block_range(hi - lo, chunks, chunk)
        return lo + a, lo + b


def _displacements(counts: np.ndarray) -> np.ndarray:
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=out[1:])
    return out
