"""mpitrain.collectives: every algorithm against numpy on the gathered inputs.

MPI tests run under ``mpiexec -n P python -m pytest --with-mpi -m mpi`` (P = 2, 3, 4),
and across the emulated nodes of tests/test_multinode.py (2x2, 3x1, 2+1), where ``shm``
and the shared-memory transports must refuse or step aside; the serial tests cover one
rank (``MPI.COMM_SELF``), argument checks and the kernels.
"""

from __future__ import annotations

import itertools
import os
import time
import tracemalloc

import numpy as np
import pytest
from mpi4py import MPI
from test_performance import assert_within_compression_bound, compressed_inputs

from mpitrain.collectives import (
    ALGORITHMS,
    NONBLOCKING_ALGORITHMS,
    Allreducer,
    allreduce,
    choose,
    context,
    hierarchical,
    ring,
    scratch,
    select,
    shared_buffer,
    start_allreduce,
)
from mpitrain.collectives.compressed import CompressedAllreduce
from mpitrain.collectives.select import HIERARCHICAL_FROM, ONE_SLICE_UP_TO
from mpitrain.collectives.shared_ring import SharedRing
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.kernels.reduce import add_into, scale_inplace

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


def one_node(comm: MPI.Comm = MPI.COMM_WORLD) -> bool:
    """Collective (once per communicator): every rank on one node?"""
    return context.state_of(comm).one_node()


def runs_here(comm: MPI.Comm, algorithm: str) -> bool:
    """False, after checking that it is refused on every rank, for ``shm`` across nodes."""
    if algorithm == "shm" and not one_node(comm):
        assert_shm_refused_everywhere(comm, "every rank of comm on one node")
        return False
    return True


def skip_across_nodes(comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Skip (on every rank alike) a test of the shared-memory transports themselves."""
    if not one_node(comm):
        pytest.skip("shared-memory transports need every rank on one node")


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
    if not runs_here(comm, algorithm):
        return
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
    skip_across_nodes(comm)
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
    if not one_node(comm):  # the emulated cluster: the ring sends MPI messages
        assert transport is None
        comm.Free()
        return
    assert transport is not None
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
    skip_across_nodes(comm)
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
    if not runs_here(comm, algorithm):
        return
    for shape in ((3, 5, 7), (2, 0, 3), (1, 1), ()):
        n = int(np.prod(shape))
        reduce_and_check(comm, n, np.float32, algorithm, "mean", shape)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", NONBLOCKING_ALGORITHMS)
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


# -- hierarchical: across nodes (and on one node) --------------------------------------

@pytest.mark.mpi
def test_layout_is_the_one_mpi_reports():
    """Node sizes and rails from Split_type; the emulated cluster says which to expect."""
    comm = MPI.COMM_WORLD
    layout = context.state_of(comm).layout()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    assert layout.local_size == node.Get_size() and layout.local_rank == node.Get_rank()
    node.Free()
    assert sum(layout.sizes) == comm.Get_size() and layout.slices == min(layout.sizes)
    assert layout.node_of[comm.Get_rank()] == layout.node_index
    expected = os.environ.get("MPITRAIN_TEST_LAYOUT")
    assert expected in (None, layout.describe()), (expected, layout.describe())
    on_rail = layout.local_rank < layout.slices
    assert (layout.rail != MPI.COMM_NULL) == on_rail
    if on_rail:
        assert layout.rail.Get_size() == layout.nodes
        assert layout.rail.Get_rank() == layout.node_index
    assert one_node(comm) == (layout.nodes == 1)


@pytest.mark.mpi
@pytest.mark.parametrize("shared_memory", (True, False))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hierarchical_both_transports(shared_memory, dtype, op):
    """Both transports, messages shorter than the slices, repeated and growing (both
    shared slots, windows replaced), with pipelined rail rings: numpy's sum within the
    tolerance, identical bits on every rank, the same bits for the same input."""
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    for n in (1, size - 1, size + 1, 1000, 1000, 5 * size + 3, 100_003, 7):
        x = inputs(comm, n, dtype)
        first = allreduce(x.copy(), comm, algorithm="hierarchical", op=op,
                          shared_memory=shared_memory)
        check(comm, x, first, op)
        again = allreduce(x.copy(), comm, algorithm="hierarchical", op=op,
                          shared_memory=shared_memory)
        assert again.tobytes() == first.tobytes()
    if shared_memory:
        state = context.state_of(comm)
        assert state.shared_hierarchy.capacity >= 100_003 * np.dtype(dtype).itemsize


@pytest.mark.mpi
def test_hierarchical_rails_use_the_pipelined_ring(tiny_segments):
    comm = MPI.COMM_WORLD
    for n in (3, 1000, 4099):
        for shared_memory in (True, False):
            reduce_and_check(comm, n, np.float64, "hierarchical", "sum",
                             shared_memory=shared_memory)


@pytest.mark.mpi
def test_hierarchical_slices_follow_the_layout():
    """Slice j of the message is summed by local rank j of every node (the rails)."""
    comm = MPI.COMM_WORLD
    layout = context.state_of(comm).layout()
    off = hierarchical.slice_bounds(10, layout)
    assert len(off) == layout.slices + 1 and off[0] == 0 and off[-1] == 10
    assert all(b - a in (10 // layout.slices, 10 // layout.slices + 1)
               for a, b in itertools.pairwise(off))


@pytest.mark.mpi
def test_auto_across_nodes_picks_hierarchical_for_large_messages():
    """Where ranks share nodes across several nodes, ``auto`` takes the hierarchical
    allreduce from HIERARCHICAL_FROM (blocking calls only); elsewhere never."""
    comm = MPI.COMM_WORLD
    layout = context.state_of(comm).layout()
    big = max(HIERARCHICAL_FROM, 1 << 17) // 4  # within ONE_SLICE_UP_TO
    spans = layout.nodes > 1 and comm.Get_size() > layout.nodes
    assert (choose_for(comm, big) == "hierarchical") == spans
    assert (choose_for(comm, big, shared_memory=False) == "hierarchical") == spans
    buf = inputs(comm, big, np.float32)
    original = buf.copy()
    start_allreduce(buf, comm).wait()  # auto, nonblocking: never hierarchical
    check(comm, original, buf, "sum")


# -- shm and the persistent Allreducer ---------------------------------------------------

@pytest.mark.mpi
def test_shm_grows_then_shrinks_on_one_communicator():
    """One slot-sum window per communicator, replaced only by a larger message (any dtype)."""
    skip_across_nodes()
    comm = MPI.COMM_WORLD.Dup()
    state = context.state_of(comm)
    windows = []
    for n, dtype in ((10, np.float64), (1000, np.float32), (5, np.float64), (BIG, np.float32),
                     (3, np.float64), (1000, np.float64), (BIG // 2 - 7, np.float64)):
        for op in OPS:
            reduce_and_check(comm, n, dtype, "shm", op)
        windows.append(state.shared_sum)
    assert windows[0] is not windows[1]  # 10 doubles, then 4000 bytes: grown
    assert windows[1] is windows[2]  # smaller: kept
    assert windows[3] is windows[4] is windows[5] is windows[6]  # the largest so far
    assert windows[6].capacity >= 4 * BIG
    comm.Free()
    assert windows[6].win == MPI.WIN_NULL  # freed with the communicator


def assert_shm_refused_everywhere(comm, match, **options):
    """Every rank raises the same ValueError and nobody is left inside a collective."""
    buf = np.ones(10, dtype=np.float64)
    with pytest.raises(ValueError, match=match):
        allreduce(buf, comm, algorithm="shm", **options)
    with pytest.raises(ValueError, match=match):
        Allreducer(10, np.float64, comm, algorithm="shm", **options)
    assert (buf == 1).all()
    allreduce(buf, comm, algorithm="mpi")  # the next collective works on every rank
    assert (buf == comm.Get_size()).all()


@pytest.mark.mpi
def test_shm_refused_without_shared_memory():
    assert_shm_refused_everywhere(MPI.COMM_WORLD, "shared_memory=False", shared_memory=False)


@pytest.mark.mpi
def test_shm_refused_across_nodes(monkeypatch):
    """Ranks on several nodes (faked: the one-node test answers no on every rank)."""
    monkeypatch.setattr(context, "single_node", lambda comm: comm.Barrier() or False)
    comm = MPI.COMM_WORLD.Dup()
    if comm.Get_size() > 1:
        assert_shm_refused_everywhere(comm, "every rank of comm on one node")
        assert choose_for(comm, 8) != "shm"
    comm.Free()


def choose_for(comm, count, dtype=np.float32, **options):
    """What ``auto`` resolves to in an Allreducer of ``count`` elements."""
    reducer = Allreducer(count, dtype, comm, **options)
    reducer.close()
    return reducer.algorithm


@pytest.mark.mpi
def test_auto_picks_shm_only_with_shared_memory():
    """Resolved by choose() (every test rank is on this machine), once per reducer."""
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    layout = context.state_of(comm).layout()
    nodes = layout.nodes
    for count in (1, 4096, 1 << 17, 1 << 20):
        for shared_memory in (True, False):
            assert choose_for(comm, count, shared_memory=shared_memory) == choose(
                4 * count, size, 4, shared=shared_memory and nodes == 1, nodes=nodes,
                slices=layout.slices)
    assert (choose_for(comm, 1024) == "shm") == (nodes == 1)  # 4 KiB on 2, 3 or 4 ranks
    assert choose_for(comm, 4096, shared_memory=False) != "shm"


def persistent_and_check(comm, count, dtype, algorithm, op, calls=3, **options):
    """``calls`` reductions through one Allreducer: numpy's result and the bits of
    ``allreduce`` with the algorithm it resolved to, every call (both shm slots)."""
    reducer = Allreducer(count, dtype, comm, algorithm=algorithm, op=op, **options)
    try:
        result = None
        for call in range(calls):
            x = inputs(comm, count, dtype) * (call + 1)
            contribution = reducer.buffer()
            assert contribution.shape == (count,) and contribution.dtype == dtype
            contribution[...] = x
            got = reducer()
            assert result is None or got is result  # the same array every call
            result = got
            check(comm, x, got, op)
            expected = allreduce(x.copy(), comm, algorithm=reducer.algorithm, op=op, **options)
            assert got.tobytes() == expected.tobytes()
    finally:
        reducer.close()
    return reducer


@pytest.mark.mpi
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreducer_matches_numpy_and_allreduce(algorithm, dtype, op):
    comm = MPI.COMM_WORLD
    if not runs_here(comm, algorithm):
        return
    for count in sizes_for(comm.Get_size()):
        reducer = persistent_and_check(comm, count, dtype, algorithm, op)
        assert reducer.algorithm != "auto"
        assert algorithm == "auto" or reducer.algorithm == algorithm


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", DTYPES)
def test_allreducer_shm_writes_into_the_slot_and_gives_the_slot_sum_bits(dtype):
    """Zero copy (the contribution is written into this rank's shared slot, alternating
    between two) and the very bits of SharedMemoryAllreduce used directly."""
    comm = MPI.COMM_WORLD
    skip_across_nodes(comm)
    count = 1001
    reducer = Allreducer(count, dtype, comm, algorithm="shm")
    direct = SharedMemoryAllreduce(context.state_of(comm).comm, n=count, dtype=dtype)
    try:
        slots = []
        for call in range(4):
            x = inputs(comm, count, dtype) * (call + 1)
            slot = reducer.buffer()
            slots.append(slot)
            slot[...] = x
            got = reducer()
            assert not np.shares_memory(got, slot)
            direct.next_slot()[...] = x
            expected = np.empty_like(x)
            direct.reduce_slot(expected)
            assert got.tobytes() == expected.tobytes()
        assert not np.shares_memory(slots[0], slots[1])
        assert np.shares_memory(slots[0], slots[2]) and np.shares_memory(slots[1], slots[3])
    finally:
        reducer.close()
        direct.close()
    reducer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        reducer()


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("codec", ("fp16", "bf16"))
def test_allreducer_compressed_within_the_documented_bound(codec, op):
    """The reference of tests/test_performance.py, and the bits of CompressedAllreduce."""
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    n, tail = 1003, 4
    every = compressed_inputs(size, n, tail)
    reducer = Allreducer(n + tail, np.float32, comm, op=op, compress=codec, exact_tail=tail,
                         batch_size=256)
    direct = CompressedAllreduce(comm, n=n, tail=tail, codec=codec, batch_size=256)
    try:
        assert reducer.algorithm == "compressed"
        for _ in range(2):
            reducer.buffer()[...] = every[rank]
            got = reducer()
            expected = every[rank].copy()
            direct(expected)
            if op == "mean":
                scale_inplace(expected, 1 / size)
            assert got.tobytes() == expected.tobytes()
        if op == "sum":
            assert_within_compression_bound(comm, every, got, n, codec)
    finally:
        reducer.close()


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreducer_allocates_nothing_per_call(algorithm):
    comm = MPI.COMM_WORLD
    if not runs_here(comm, algorithm):
        return
    reducer = Allreducer(10_000, np.float32, comm, algorithm=algorithm, op="mean")
    try:
        assert_allocation_free(reducer)
    finally:
        reducer.close()


def assert_allocation_free(reducer, calls=200):
    """tracemalloc: neither the peak nor the net growth over ``calls`` calls reaches 4 KiB
    (transient views and floats only; one array of the message, or one leaked object per
    call, would exceed it)."""
    for _ in range(3):
        reducer.buffer()[...] = 1
        reducer()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            reducer.buffer()[...] = 1
            reducer()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 4096 and current - start < 4096, (peak - start, current - start)


@pytest.mark.mpi
def test_allreducer_bad_arguments_raise_on_every_rank():
    assert_allreducer_bad_arguments_raise(MPI.COMM_WORLD)


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
        start_allreduce(good, comm, algorithm=algorithm if algorithm in NONBLOCKING_ALGORITHMS
                        else "ring", op="prod")
    with pytest.raises(ValueError, match="start_allreduce cannot run algorithm 'shm'"):
        start_allreduce(good, comm, algorithm="shm")
    with pytest.raises(ValueError, match="start_allreduce cannot run algorithm 'hierarchical'"):
        start_allreduce(good, comm, algorithm="hierarchical")


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
        if algorithm in NONBLOCKING_ALGORITHMS:
            handle = start_allreduce(buf, comm, algorithm=algorithm, op=op)
            assert handle.wait() is buf
            assert np.array_equal(buf, original)


def test_single_rank_shapes():
    buf = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    assert allreduce(buf, MPI.COMM_SELF, algorithm="ring", op="mean") is buf
    assert np.array_equal(buf, np.arange(24).reshape(2, 3, 4))


@pytest.mark.parametrize("shared", (False, True))
def test_auto_choice(shared):
    """By growing size: shm only with shared memory (after root on 3 ranks), mpi/root,
    then the ring for every larger message."""
    for size in (2, 3, 4, 5, 64):
        for itemsize in (4, 8):
            choices = [choose(1 << k, size, itemsize, shared=shared) for k in range(2, 30)]
            runs = [c for i, c in enumerate(choices) if i == 0 or c != choices[i - 1]]
            assert set(runs) <= {"mpi", "root", "ring"} | ({"shm"} if shared else set())
            assert runs[-1] == "ring" and runs.count("ring") == 1
            if shared:
                assert runs.count("shm") == 1 and set(runs[: runs.index("shm")]) <= {"root"}
    assert choose(1 << 30, 1) == "mpi"
    assert choose(8, 1, shared=True) == "mpi"  # one rank: nothing to choose
    # measured (select.py's table): the standard workload's ~39 KB float32 step message
    assert choose(39_000, 2, 4, shared=True) == "shm"
    assert choose(39_000, 2, 4, shared=False) == "mpi"
    assert choose(256 * 1024, 2, 8, shared=True) == "shm"
    assert choose(512 * 1024, 2, 4, shared=True) == "ring"
    assert [choose(n, 3, 4, shared=True) for n in (4, 2048, 4096)] == ["root", "root", "shm"]
    # the ring through shared memory pays off at smaller messages than over MPI
    assert choose(128 * 1024, 6, 8, shared=True) == "ring"
    assert choose(128 * 1024, 6, 8, shared=False) == "mpi"


def test_auto_choice_across_nodes():
    """Hierarchical from HIERARCHICAL_FROM when nodes hold several ranks; never when every
    node holds one (it would be the flat ring plus copies) or on one node."""
    for nodes, size, slices in ((2, 4, 2), (2, 3, 1), (3, 192, 64)):
        for nbytes in (HIERARCHICAL_FROM, ONE_SLICE_UP_TO):
            assert choose(nbytes, size, 4, nodes=nodes, slices=slices) == "hierarchical"
        assert choose(HIERARCHICAL_FROM - 4, size, 4, nodes=nodes,
                      slices=slices) != "hierarchical"
        beyond = choose(4 * ONE_SLICE_UP_TO, size, 4, nodes=nodes, slices=slices)
        assert (beyond == "hierarchical") == (slices > 1)  # one slice: the ring there
    # beyond the measured node counts: the cost model's choice (small messages to MPI's
    # logarithmic algorithms on many nodes, large ones to the rails)
    for nodes, per_node in ((4, 8), (16, 64), (156, 64)):
        for nbytes in (40_000, 1 << 24):
            assert choose(nbytes, nodes * per_node, 4, nodes=nodes, slices=per_node) == \
                select.modelled(nbytes, nodes * per_node, nodes)
    assert select.modelled(40_000, 156 * 64, 156) == "mpi"
    assert select.modelled(1 << 24, 16 * 64, 16) == "hierarchical"
    for nodes, size in ((3, 3), (1, 4)):
        assert all(choose(1 << k, size, 8, nodes=nodes) != "hierarchical"
                   for k in range(2, 30))


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


# -- one rank: shm and the Allreducer --------------------------------------------------

def assert_allreducer_bad_arguments_raise(comm):
    cases = [
        (TypeError, "count must be an int", dict(count=2.0)),
        (ValueError, "count must be >= 0", dict(count=-1)),
        (TypeError, "dtype must be float32 or float64", dict(dtype=np.int32)),
        (ValueError, "algorithm must be one of", dict(algorithm="fastest")),
        (ValueError, "op must be one of", dict(op="max")),
        (ValueError, "compress must be one of", dict(compress="zip")),
        (ValueError, "needs dtype float32", dict(compress="fp16", dtype=np.float64)),
        (ValueError, "algorithm must be 'auto'", dict(compress="bf16", algorithm="ring")),
        (ValueError, r"exact_tail must be >= 0 and <= 8", dict(exact_tail=9)),
        (ValueError, "batch_size must be >= 1", dict(batch_size=0)),
    ]
    for error, match, options in cases:
        arguments = {"count": 8, "dtype": np.float32, **options}
        with pytest.raises(error, match=match):
            Allreducer(arguments.pop("count"), arguments.pop("dtype"), comm, **arguments)
    with pytest.raises(TypeError, match="comm must be"):
        Allreducer(8, np.float32, "world")


def test_allreducer_bad_arguments_raise():
    assert_allreducer_bad_arguments_raise(MPI.COMM_SELF)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreducer_on_one_rank_is_the_buffer(algorithm, dtype, op):
    """One rank: no communication at all, the buffer is the result."""
    for count in sizes_for(1):
        reducer = persistent_and_check(MPI.COMM_SELF, count, dtype, algorithm, op)
        assert reducer.algorithm == ("shm" if algorithm == "shm" else
                                     "mpi" if algorithm == "auto" else algorithm)
    reducer = Allreducer(5, dtype, MPI.COMM_SELF, algorithm=algorithm, op=op)
    assert reducer.buffer() is reducer() is reducer.buffer()
    assert_allocation_free(reducer)
    reducer.close()


@pytest.mark.parametrize("codec", ("fp16", "bf16"))
def test_allreducer_compressed_on_one_rank_rounds_like_compressed_allreduce(codec):
    """No communication, but the 16-bit rounding several ranks would get (today's bits)."""
    n, tail = 1003, 4
    every = compressed_inputs(1, n, tail)
    reducer = Allreducer(n + tail, np.float32, MPI.COMM_SELF, compress=codec,
                         exact_tail=tail, batch_size=64)
    reducer.buffer()[...] = every[0]
    got = reducer()
    expected = every[0].copy()
    CompressedAllreduce(MPI.COMM_SELF, n=n, tail=tail, codec=codec, batch_size=64)(expected)
    assert got.tobytes() == expected.tobytes() and not np.array_equal(got, every[0])
    assert_within_compression_bound(MPI.COMM_SELF, every, got, n, codec)
    empty = Allreducer(0, np.float32, MPI.COMM_SELF, compress=codec)
    assert empty().size == 0


def test_shm_refused_without_shared_memory_on_one_rank():
    assert_shm_refused_everywhere(MPI.COMM_SELF, "shared_memory=False", shared_memory=False)


# -- started reductions of a persistent reducer (Allreducer in_flight: --mode ssp) ---------

def rank_order_sum(comm: MPI.Comm, x: np.ndarray) -> np.ndarray:
    """Every rank's ``x`` added in rank order, in ``x``'s dtype: the slot sum's bits."""
    gathered = np.empty((comm.Get_size(), x.size), dtype=x.dtype)
    comm.Allgather(x, gathered)
    total = gathered[0].copy()
    for row in gathered[1:]:
        total += row
    return total


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["auto", "shm", "ring", "mpi", "root"])
@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_started_reductions_in_flight(in_flight, algorithm, dtype):
    """``Allreducer(in_flight=d)``: ``start()`` returns without waiting for the other ranks
    (rank 0 starts and tests ``d`` calls before the others start any), up to ``d`` calls
    stay in flight while the next message is written, and a result stays valid until the
    message of the call ``d + 1`` later is written. ``auto`` is the slot sum on one node
    (else as start_allreduce), and the slot sum adds in rank order: numpy's rank-order
    sum, bit for bit."""
    comm = MPI.COMM_WORLD
    if not runs_here(comm, algorithm):
        return
    size, rank = comm.Get_size(), comm.Get_rank()
    n = 1003
    reducer = Allreducer(n, dtype, comm, algorithm=algorithm, in_flight=in_flight)
    shared = one_node(comm) and size > 1
    assert reducer.algorithm == ("shm" if algorithm == "auto" and shared else
                                 algorithm if algorithm != "auto" else reducer.algorithm)
    assert reducer.algorithm not in ("hierarchical", "compressed")
    assert (reducer.algorithm == "shm") == (algorithm == "shm" or (algorithm == "auto"
                                                                   and shared))
    calls = 4 * in_flight + 3
    messages = [inputs(comm, n, dtype) * (k + 1) for k in range(calls)]
    pending: list = []
    done: list = []

    def start(k: int) -> None:
        reducer.buffer()[...] = messages[k]
        pending.append((k, reducer.start()))

    if rank == 0:  # ahead of everyone: nothing of this may wait for the others
        for k in range(in_flight):
            start(k)
        if reducer.algorithm != "root":  # (whose first test() is collective)
            for _, handle in pending:
                assert not handle.test() or size == 1
    comm.Barrier()
    if rank != 0:
        for k in range(in_flight):
            start(k)
    for k in range(in_flight, calls):
        if done and done[0][0] == k - in_flight - 1:  # kept until call k's message
            _, result, copy = done.pop(0)
            assert result.tobytes() == copy.tobytes()
        start(k)
        if k % 2:
            pending[0][1].test()  # progress, never a wait
        k_done, handle = pending.pop(0)
        result = handle.wait()
        check(comm, messages[k_done], result, "sum")
        if reducer.algorithm == "shm":
            assert result.tobytes() == rank_order_sum(comm, messages[k_done]).tobytes()
        done.append((k_done, result, result.copy()))
    for k, handle in pending:
        check(comm, messages[k], handle.wait(), "sum")
    reducer.close()


@pytest.mark.mpi
def test_started_slot_sum_mean_and_refusals():
    """``op="mean"`` scales the slot sum; ``hierarchical``, ``compress`` and ``tune`` are
    refused with in_flight (on every rank, before any communication), and a started
    reducer is not called."""
    comm = MPI.COMM_WORLD
    reducer = Allreducer(77, np.float64, comm, op="mean", in_flight=1)
    x = inputs(comm, 77, np.float64)
    reducer.buffer()[...] = x
    check(comm, x, reducer.start().wait(), "mean")
    with pytest.raises(ValueError, match="an Allreducer with in_flight reduces with start"):
        reducer()
    reducer.close()
    with pytest.raises(ValueError, match="start\\(\\) needs an Allreducer built with"):
        Allreducer(3, np.float64, MPI.COMM_SELF).start()
    with pytest.raises(ValueError, match="'hierarchical' cannot be started"):
        Allreducer(3, np.float64, comm, algorithm="hierarchical", in_flight=1)
    for options in ({"compress": "fp16"}, {"tune": "auto"}):
        with pytest.raises(ValueError, match="takes neither compress nor tune"):
            Allreducer(3, np.float32, comm, in_flight=2, **options)
    p2p = Allreducer(3, np.float64, comm, in_flight=2, **P2P)
    assert p2p.algorithm != "shm"
    p2p.close()
