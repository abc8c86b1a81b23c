"""mpitrain.collectives.reduce_scatter and allgather: every algorithm against numpy on the
gathered inputs, the chunk layout, argument errors, and reduce-scatter + allgather as an
allreduce.

MPI tests run under ``mpiexec -n P python -m pytest --with-mpi -m mpi`` (P = 2..5); the
serial tests cover one rank (``MPI.COMM_SELF``).
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_collectives import check, inputs, sizes_for

from mpitrain.collectives import (
    SCATTER_ALGORITHMS,
    allgather,
    allreduce,
    reduce_scatter,
    select,
)
from mpitrain.collectives.ring import chunk_offsets

pytestmark = pytest.mark.timeout(120)

DTYPES = (np.float32, np.float64)
OPS = ("sum", "mean")


def scatter_and_check(comm, n, dtype, algorithm, op, shape=None):
    x = inputs(comm, n, dtype, shape)
    buf = x.copy()
    mine = reduce_scatter(buf, comm, algorithm=algorithm, op=op)
    size, rank = comm.Get_size(), comm.Get_rank()
    off = chunk_offsets(n, size)
    assert mine.ndim == 1 and mine.size == off[rank + 1] - off[rank]
    assert n == 0 or np.shares_memory(mine, buf) or mine.size == 0
    # the chunk is the reduction of the whole buffer, restricted to this rank's chunk
    full = x.reshape(-1).copy()
    allreduce(full, comm, algorithm="mpi", op=op)
    expected = full[off[rank] : off[rank + 1]]
    eps = np.finfo(dtype).eps
    scale = np.abs(expected).max() if expected.size else 0.0
    assert np.allclose(mine, expected, rtol=4 * size * eps, atol=4 * size * eps * (1 + scale))
    # reduce-scatter then allgather is an allreduce, the same bits on every rank
    out = allgather(buf, comm, algorithm=algorithm)
    assert out is buf
    check(comm, x, out, op)


@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_reduce_scatter_matches_numpy(algorithm, dtype, op):
    comm = MPI.COMM_WORLD
    for n in sizes_for(comm.Get_size()):
        scatter_and_check(comm, n, dtype, algorithm, op)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_allgather_gathers_each_ranks_chunk(algorithm, dtype):
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    for n in sizes_for(size):
        off = chunk_offsets(n, size)
        expected = np.arange(n, dtype=dtype)
        buf = np.full(n, -1.0, dtype=dtype)  # garbage outside this rank's chunk
        buf[off[rank] : off[rank + 1]] = expected[off[rank] : off[rank + 1]]
        assert allgather(buf, comm, algorithm=algorithm) is buf
        assert (buf == expected).all()


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_any_shape_and_sizes_not_divisible(algorithm):
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    scatter_and_check(comm, 6 * (size + 1) + 1, np.float64, algorithm, "sum", None)
    scatter_and_check(comm, 24, np.float32, algorithm, "mean", (2, 3, 4))


@pytest.mark.mpi
def test_ring_reduce_scatter_is_deterministic():
    """The same inputs give the same bits (a fixed summation order), so sharded training
    is reproducible."""
    comm = MPI.COMM_WORLD
    x = inputs(comm, 1001, np.float64)
    a, b = x.copy(), x.copy()
    first = reduce_scatter(a, comm, algorithm="ring").copy()
    again = reduce_scatter(b, comm, algorithm="ring")
    assert (first.view(np.uint8) == again.view(np.uint8)).all()


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_bad_arguments_raise_on_every_rank(algorithm):
    assert_bad_arguments_raise(MPI.COMM_WORLD, algorithm)


def assert_bad_arguments_raise(comm, algorithm):
    good = np.zeros(8, dtype=np.float32)
    for call in (reduce_scatter, allgather):
        with pytest.raises(ValueError, match="algorithm must be one of auto, ring, mpi"):
            call(good, comm, algorithm="shm")
        with pytest.raises(TypeError, match="float32 or float64"):
            call(np.zeros(8, dtype=np.int32), comm, algorithm=algorithm)
        with pytest.raises(TypeError, match=r"numpy\.ndarray"):
            call([1.0, 2.0], comm, algorithm=algorithm)
        with pytest.raises(ValueError, match="C-contiguous"):
            call(np.zeros((4, 4), dtype=np.float64)[:, 1], comm, algorithm=algorithm)
        readonly = np.zeros(8, dtype=np.float64)
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            call(readonly, comm, algorithm=algorithm)
        with pytest.raises(TypeError, match="comm must be"):
            call(good, "world", algorithm=algorithm)
    with pytest.raises(ValueError, match="op must be one of"):
        reduce_scatter(good, comm, algorithm=algorithm, op="max")


# -- one rank ------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_bad_arguments_raise(algorithm):
    assert_bad_arguments_raise(MPI.COMM_SELF, algorithm)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", SCATTER_ALGORITHMS)
def test_one_rank(algorithm, dtype, op):
    for n in (0, 1, 7):
        scatter_and_check(MPI.COMM_SELF, n, dtype, algorithm, op)


def test_auto_is_decided_in_select():
    assert select.choose_scatter(8, 1) == "mpi"
    assert select.choose_scatter(1024, 2) == "mpi"
    assert select.choose_scatter(select.ring_threshold(4), 4) == "ring"
    assert select.choose_scatter(64 << 20, 5) == "ring"
