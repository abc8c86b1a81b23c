"""TEMPORARY stand-in for mpitrain.collectives.Allreducer (being built on another branch)."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import allreduce
from mpitrain.collectives.compressed import CompressedAllreduce
from mpitrain.collectives.shared_memory import single_node
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce


class Allreducer:
    """Persistent allreduce of a fixed-size message."""

    def __init__(self, count: int, dtype: np.dtype, comm: MPI.Comm, *, algorithm: str = "auto",
                 shared_memory: bool = True, compress: str = "none", exact_tail: int = 0,
                 batch_size: int = 1) -> None:
        self.comm, self.algorithm, self.shared_memory = comm, algorithm, shared_memory
        self.result = np.zeros(count, dtype=dtype)
        self._compressed = self._slots = None
        self._alone = False
        if compress != "none":
            self._compressed = CompressedAllreduce(comm, n=count - exact_tail, tail=exact_tail,
                                                   codec=compress, batch_size=batch_size)
        elif comm.Get_size() == 1:
            self._alone = True
        elif shared_memory and algorithm == "auto" and single_node(comm):
            self._slots = SharedMemoryAllreduce(comm, n=count, dtype=dtype)

    def buffer(self) -> np.ndarray:
        return self._slots.next_slot() if self._slots is not None else self.result

    def __call__(self) -> np.ndarray:
        if self._slots is not None:
            self._slots.reduce_slot(self.result)
        elif self._compressed is not None:
            self._compressed(self.result)
        elif not self._alone:
            allreduce(self.result, self.comm, algorithm=self.algorithm, op="sum",
                      shared_memory=self.shared_memory)
        return self.result

    def close(self) -> None:
        if self._slots is not None:
            self._slots.close()
            self._slots = None
