"""mpitrain.collectives: every algorithm against numpy on the gathered inputs.

MPI tests run under ``mpiexec -n P python -m pytest --with-mpi -m mpi`` (P = 2, 3, 4);
the serial tests cover one rank (``MPI.COMM_SELF``), argument checks and the kernels.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from mpi4py import MPI
from mpitrain.kernels.reduce import add_into, scale_inplace

from mpitrain.collectives import (
    ALGORITHMS,
    allreduce,
    choose,
    context,
    ring,
    scratch,
    shared_buffer,
    start_allreduce,
)
from mpitrain.collectives.shared_ring import SharedRing

pytestmark = pytest.mark.timeout(120)

DTYPES = (np.float32, np.float64)
OPS = ("sum", "mean")
BIG = 2**20 + 3


def sizes_for(nranks: int) -> list[int]:
    """The element counts every algorithm must handle on ``nranks`` ranks."""
    return sorted({0, 1, max(nranks - 1, 0), nranks + 1, 1000, BIG})


def inputs(comm: MPI.Comm, n: int, dtype: type, shape: tuple[int, ...] | None = None):
    """This rank's random input (seeded by rank: fine in a test)."""
    rng = np.random.default_rng([comm.Get_rank(), n])
    return rng.standard_normal(n).astype(dtype).reshape(shape or (n,))


def check(comm: MPI.Comm, x: np.ndarray, result: np.ndarray, op: str) -> None:
    """``result`` matches numpy's reduction of every rank's ``x`` and is the same everywhere.

    The tolerance bounds the rounding of any summation order: each of the P-1 additions
    (and the final scaling) errs by at most one ulp of the running magnitude.
    """
    size = comm.Get_size()
    flat_in, flat_out = x.reshape(-1), result.reshape(-1)
    n = flat_in.size
    gathered = np.empty((size, n), dtype=x.dtype)
    comm.Allgather(flat_in, gathered)
    wide = gathered.astype(np.float64)
    expected = wide.sum(axis=0)
    magnitude = np.abs(wide).sum(axis=0)
    if op == "mean":
        expected /= size
        magnitude /= size
    eps = np.finfo(x.dtype).eps
    error = np.abs(flat_out.astype(np.float64) - expected)
    bound = 2 * (size + 1) * eps * magnitude + np.finfo(x.dtype).tiny
    worst = int(np.argmax(error - bound)) if n else 0
    assert n == 0 or error[worst] <= bound[worst], (
        f"element {worst}: got {flat_out[worst]!r}, expected {expected[worst]!r}")
    everywhere = np.empty((size, n), dtype=x.dtype)
    comm.Allgather(flat_out, everywhere)
    assert (everywhere.view(np.uint8) == everywhere[:1].view(np.uint8)).all(), \
        "result differs between ranks"


def reduce_and_check(comm, n, dtype, algorithm, op, shape=None, **options):
    buf = inputs(comm, n, dtype, shape)
    original = buf.copy()
    out = allreduce(buf, comm, algorithm=algorithm, op=op, **options)
    assert out is buf and out.shape == original.shape and out.dtype == original.dtype
    check(comm, original, out, op)


# -- many ranks -------------------------------------------------------------------------

@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_matches_numpy(algorithm, dtype, op):
    comm = MPI.COMM_WORLD
    for n in sizes_for(comm.Get_size()):
        reduce_and_check(comm, n, dtype, algorithm, op)


P2P = {"shared_memory": False}  # the ring over MPI messages even on one node


@pytest.fixture
def tiny_segments(monkeypatch):
    """Force the pipelined point-to-point ring (with ``P2P``) to use 16-byte segments on
    small buffers."""
    monkeypatch.setattr(ring, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(ring, "SEGMENT_BYTES", 16)
    monkeypatch.setattr(ring, "WINDOW", 3)


@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pipelined_ring_many_segments(tiny_segments, dtype, op):
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    for n in (1, size - 1, size + 1, 5 * size + 3, 1000):
        reduce_and_check(comm, n, dtype, "ring", op, **P2P)


@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_memory_ring_gives_the_point_to_point_bits(dtype, op):
    """The shared-memory transport with 3-slot, 24-byte slots (so many pieces, slots
    reused within and across calls): the same bits as the ring over MPI messages."""
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    transport = SharedRing(comm, slot_bytes=24, slots=3)
    try:
        for n in (1, size - 1, size + 1, 5 * size + 3, 1000, 1000):
            x = inputs(comm, n, dtype)
            via_mpi = allreduce(x.copy(), comm, algorithm="ring", op=op, **P2P)
            via_memory = x.copy()
            if n:
                transport.allreduce(via_memory, op == "mean")
            check(comm, x, via_memory, op)
            assert via_memory.tobytes() == via_mpi.tobytes()
    finally:
        transport.close()


@pytest.mark.mpi
def test_ring_uses_shared_memory_on_one_node():
    comm = MPI.COMM_WORLD.Dup()
    reduce_and_check(comm, 1000, np.float32, "ring", "sum")
    transport = context.state_of(comm).shared_ring
    assert transport is not None  # every test rank runs on this machine
    before = transport.messages
    reduce_and_check(comm, 1000, np.float32, "ring", "sum")
    assert transport.messages == before + 2 * comm.Get_size() - 2
    comm.Free()
    assert transport.win == MPI.WIN_NULL  # freed with the communicator


@pytest.mark.mpi
def test_ring_without_shared_memory_waits_in_mpi_only():
    """``shared_memory=False`` (what --stall-timeout needs): no window is ever built."""
    comm = MPI.COMM_WORLD.Dup()
    for algorithm in ("ring", "auto"):
        reduce_and_check(comm, 100_000, np.float32, algorithm, "sum", **P2P)
    assert context.state_of(comm).shared_ring is None
    comm.Free()


@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ring_on_shared_buffers_gives_the_point_to_point_bits(dtype, op):
    """In place on shared buffers (whole, and the same slice on every rank; repeated, so
    one call's end meets the next call's start): the bits of the ring over MPI."""
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    big = shared_buffer((2, 600), dtype, comm)
    assert big.shape == (2, 600) and big.dtype == dtype and not big.any()
    for n in (1, size - 1, size + 1, 1000, 1000, 1200):
        x = inputs(comm, n, dtype)
        via_mpi = allreduce(x.copy(), comm, algorithm="ring", op=op, **P2P)
        part = big if n == 1200 else big.reshape(-1)[7 : 7 + n]
        part.reshape(-1)[...] = x
        assert allreduce(part, comm, algorithm="ring", op=op) is part
        check(comm, x, part.reshape(-1), op)
        assert part.tobytes() == via_mpi.tobytes()


@pytest.mark.mpi
def test_shared_buffers_must_be_the_same_part_on_every_rank():
    comm = MPI.COMM_WORLD
    big = shared_buffer(100, np.float64, comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    if size > 1:
        offset = 1 if rank == size - 1 else 0  # only the last rank differs...
        with pytest.raises(ValueError, match=r"every rank must pass the same part"):
            allreduce(big[offset : offset + 10], comm, algorithm="ring")  # ...all raise
    part = big[:10]  # and the very next call works, with no barrier in between
    part[...] = rank
    allreduce(part, comm, algorithm="ring")
    assert (part == size * (size - 1) // 2).all()
    reduce_and_check(comm, 1000, np.float64, "ring", "sum")


def test_shared_buffer_on_one_rank_is_an_ordinary_array():
    buf = shared_buffer(5, np.float64, MPI.COMM_SELF)
    assert buf.shape == (5,) and not buf.any()
    with pytest.raises(ValueError, match="dtype must be one of"):
        shared_buffer(5, np.int32, MPI.COMM_SELF)


@pytest.mark.mpi
def test_pipelined_ring_unsegmented(monkeypatch):
    """The pipeline with one segment per chunk (what nonblocking small calls use)."""
    monkeypatch.setattr(ring, "PIPELINE_MIN_BYTES", 0)
    comm = MPI.COMM_WORLD
    for n in (1, comm.Get_size() + 1, 1000):
        reduce_and_check(comm, n, np.float64, "ring", "sum", **P2P)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_any_shape(algorithm):
    comm = MPI.COMM_WORLD
    for shape in ((3, 5, 7), (2, 0, 3), (1, 1), ()):
        n = int(np.prod(shape))
        reduce_and_check(comm, n, np.float32, algorithm, "mean", shape)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nonblocking(algorithm):
    comm = MPI.COMM_WORLD
    for n in (0, 1, 1000, 100_003):
        for op in OPS:
            buf = inputs(comm, n, np.float64)
            original = buf.copy()
            handle = start_allreduce(buf, comm, algorithm=algorithm, op=op)
            # test() alone must complete it; the deadline only turns a hang into a failure
            # (a count of polls would be a guess about the machine's speed and load)
            deadline = time.monotonic() + 60
            while not handle.test():
                assert time.monotonic() < deadline, "test() never completed"
            assert handle.test()
            assert handle.wait() is buf
            check(comm, original, buf, op)


@pytest.mark.mpi
def test_nonblocking_many_in_flight(tiny_segments):
    """Several calls in flight at once (distinct tags), finished in another order."""
    comm = MPI.COMM_WORLD
    specs = [("ring", 1000, "sum"), ("mpi", 777, "mean"), ("ring", 333, "mean"),
             ("root", 50, "sum"), ("auto", 2000, "sum"), ("ring", 5, "sum")]
    bufs = [inputs(comm, n, np.float32) * (i + 1) for i, (_, n, _) in enumerate(specs)]
    originals = [b.copy() for b in bufs]
    handles = [start_allreduce(b, comm, algorithm=alg, op=op)
               for b, (alg, _, op) in zip(bufs, specs, strict=True)]
    handles[2].test()
    blocking = inputs(comm, 999, np.float32)
    blocking_in = blocking.copy()
    allreduce(blocking, comm, algorithm="ring", **P2P)  # a blocking call in between
    for i in reversed(range(len(handles))):
        handles[i].wait()
    check(comm, blocking_in, blocking, "sum")
    for original, buf, (_, _, op) in zip(originals, bufs, specs, strict=True):
        check(comm, original, buf, op)


@pytest.mark.mpi
def test_private_messages_do_not_mix_with_callers():
    """The ring runs on a private duplicate: the caller's pending messages stay intact."""
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    mine = np.full(3, rank, dtype=np.float64)
    got = np.empty(3, dtype=np.float64)
    recv = comm.Irecv(got, source=(rank - 1) % size, tag=0)
    send = comm.Isend(mine, dest=(rank + 1) % size, tag=0)
    reduce_and_check(comm, 1000, np.float64, "ring", "sum", **P2P)
    MPI.Request.Waitall([recv, send])
    assert (got == (rank - 1) % size).all()


@pytest.mark.mpi
def test_private_duplicate_freed_with_comm():
    comm = MPI.COMM_WORLD.Dup()
    reduce_and_check(comm, 10, np.float64, "ring", "sum")
    private = context.state_of(comm).comm
    assert private != MPI.COMM_NULL
    comm.Free()
    assert private == MPI.COMM_NULL


@pytest.mark.mpi
def test_repeated_calls_reuse_scratch():
    comm = MPI.COMM_WORLD
    buf = inputs(comm, 10_000, np.float32)
    allreduce(buf, comm, algorithm="ring", op="mean", **P2P)
    before = {key: [id(b) for b in bufs] for key, bufs in scratch._FREE.items()}
    for _ in range(3):
        allreduce(buf, comm, algorithm="ring", op="mean", **P2P)
    after = {key: [id(b) for b in bufs] for key, bufs in scratch._FREE.items()}
    assert after == before


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_arguments_raise_on_every_rank(algorithm):
    assert_bad_arguments_raise(MPI.COMM_WORLD, algorithm)


# -- one rank ---------------------------------------------------------------------------

def assert_bad_arguments_raise(comm, algorithm):
    good = np.zeros(8, dtype=np.float32)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        allreduce(good, comm, algorithm="fastest")
    with pytest.raises(ValueError, match="op must be one of"):
        allreduce(good, comm, algorithm=algorithm, op="max")
    with pytest.raises(TypeError, match="float32 or float64"):
        allreduce(np.zeros(8, dtype=np.int32), comm, algorithm=algorithm)
    with pytest.raises(TypeError, match="float32 or float64"):
        allreduce(np.zeros(8, dtype=">f8"), comm, algorithm=algorithm)
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        allreduce([1.0, 2.0], comm, algorithm=algorithm)
    with pytest.raises(ValueError, match="C-contiguous"):
        allreduce(np.zeros((4, 4), dtype=np.float64)[:, 1], comm, algorithm=algorithm)
    with pytest.raises(ValueError, match="C-contiguous"):
        allreduce(np.zeros((4, 4), dtype=np.float64, order="F"), comm, algorithm=algorithm)
    readonly = np.zeros(8, dtype=np.float64)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        allreduce(readonly, comm, algorithm=algorithm)
    with pytest.raises(TypeError, match="comm must be"):
        allreduce(good, "world", algorithm=algorithm)
    with pytest.raises(ValueError, match="op must be one of"):
        start_allreduce(good, comm, algorithm=algorithm, op="prod")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_arguments_raise(algorithm):
    assert_bad_arguments_raise(MPI.COMM_SELF, algorithm)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_single_rank_is_identity(algorithm, dtype, op):
    comm = MPI.COMM_SELF
    for n in sizes_for(1):
        buf = inputs(comm, n, dtype)
        original = buf.copy()
        assert allreduce(buf, comm, algorithm=algorithm, op=op) is buf
        assert np.array_equal(buf, original)
        handle = start_allreduce(buf, comm, algorithm=algorithm, op=op)
        assert handle.wait() is buf
        assert np.array_equal(buf, original)


def test_single_rank_shapes():
    buf = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    assert allreduce(buf, MPI.COMM_SELF, algorithm="ring", op="mean") is buf
    assert np.array_equal(buf, np.arange(24).reshape(2, 3, 4))


@pytest.mark.parametrize("shared", (False, True))
def test_auto_choice(shared):
    for size in (2, 3, 4, 5, 64):
        for itemsize in (4, 8):
            choices = [choose(1 << k, size, itemsize, shared=shared) for k in range(3, 30)]
            assert set(choices) <= {"mpi", "root", "ring"}
            assert choices[0] in ("mpi", "root") and choices[-1] == "ring"
            first_ring = choices.index("ring")
            assert set(choices[first_ring:]) == {"ring"}
    assert choose(1 << 30, 1) == "mpi"
    # measured: the ring through shared memory pays off at smaller messages
    assert choose(16 * 1024, 2, 8, shared=True) == "ring"
    assert choose(16 * 1024, 2, 8, shared=False) == "mpi"


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels(dtype):
    rng = np.random.default_rng(0)
    dst, src = rng.standard_normal(1001).astype(dtype), rng.standard_normal(1003).astype(dtype)
    expected = dst + src[:1001]
    add_into(dst, src)
    assert np.array_equal(dst, expected)
    expected = dst * dtype(1 / 3)
    scale_inplace(dst, 1 / 3)
    assert np.array_equal(dst, expected)
