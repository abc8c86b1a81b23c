"""``mpi``: the MPI library's own Allreduce / Iallreduce, summing in place."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.args import MPI_TYPES
from mpitrain.kernels.reduce import scale_inplace


def allreduce(flat: np.ndarray, comm: MPI.Comm, mean: bool) -> None:
    """Sum ``flat`` over ``comm`` in place; divide by the size if ``mean``."""
    comm.Allreduce(MPI.IN_PLACE, [flat, MPI_TYPES[flat.dtype]], op=MPI.SUM)
    if mean:
        scale_inplace(flat, 1.0 / comm.Get_size())


class NativeHandle:
    """``Iallreduce`` in flight; MPI progresses it inside ``test``/``wait`` (and other calls)."""

    def __init__(self, buf: np.ndarray, flat: np.ndarray, comm: MPI.Comm, mean: bool) -> None:
        self._buf, self._flat, self._mean = buf, flat, mean
        self._factor = 1.0 / comm.Get_size()
        self._req = comm.Iallreduce(MPI.IN_PLACE, [flat, MPI_TYPES[flat.dtype]], op=MPI.SUM)
        self._done = False

    def _finish(self) -> None:
        if self._mean:
            scale_inplace(self._flat, self._factor)
        self._done = True

    def test(self) -> bool:
        if not self._done and self._req.Test():
            self._finish()
        return self._done

    def wait(self) -> np.ndarray:
        if not self._done:
            self._req.Wait()
            self._finish()
        return self._buf
