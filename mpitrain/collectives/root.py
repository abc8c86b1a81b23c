"""``root``: Reduce to rank 0 (in place there), then Bcast from rank 0."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.args import MPI_TYPES
from mpitrain.kernels.reduce import scale_inplace

ROOT = 0


def _reduce_args(flat: np.ndarray, comm: MPI.Comm) -> tuple[object, object]:
    spec = [flat, MPI_TYPES[flat.dtype]]
    if comm.Get_rank() == ROOT:
        return MPI.IN_PLACE, spec
    return spec, None


def allreduce(flat: np.ndarray, comm: MPI.Comm, mean: bool) -> None:
    """Sum ``flat`` over ``comm`` in place through rank 0; divide by the size if ``mean``."""
    send, recv = _reduce_args(flat, comm)
    comm.Reduce(send, recv, op=MPI.SUM, root=ROOT)
    if mean and comm.Get_rank() == ROOT:
        scale_inplace(flat, 1.0 / comm.Get_size())
    comm.Bcast([flat, MPI_TYPES[flat.dtype]], root=ROOT)


class RootHandle:
    """``Ireduce`` started at once; the ``Ibcast`` starts in the first ``test``/``wait`` call.

    Nonblocking collectives must start in the same order on every rank, so the broadcast
    cannot start "whenever the reduce happens to be done" (that differs between ranks).
    The first ``test()`` or ``wait()`` therefore waits for the reduce to finish, then
    starts the broadcast; later ``test()`` calls poll it without blocking.
    """

    def __init__(self, buf: np.ndarray, flat: np.ndarray, comm: MPI.Comm, mean: bool) -> None:
        self._buf, self._flat, self._comm, self._mean = buf, flat, comm, mean
        send, recv = _reduce_args(flat, comm)
        self._req = comm.Ireduce(send, recv, op=MPI.SUM, root=ROOT)
        self._bcast_started = False
        self._done = False

    def _start_bcast(self) -> None:
        self._req.Wait()
        if self._mean and self._comm.Get_rank() == ROOT:
            scale_inplace(self._flat, 1.0 / self._comm.Get_size())
        self._req = self._comm.Ibcast([self._flat, MPI_TYPES[self._flat.dtype]], root=ROOT)
        self._bcast_started = True

    def test(self) -> bool:
        if not self._bcast_started:
            self._start_bcast()
        if not self._done:
            self._done = self._req.Test()
        return self._done

    def wait(self) -> np.ndarray:
        if not self._bcast_started:
            self._start_bcast()
        if not self._done:
            self._req.Wait()
            self._done = True
        return self._buf
