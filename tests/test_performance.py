"""The pieces behind the performance work: split and fused step kernels (bit-identical to
``network_grad``), the 16-bit codecs, the compressed and shared-memory reductions, and the
options that select them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain.collectives.compressed import CompressedAllreduce
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.config import resolve
from mpitrain.errors import UserError
from mpitrain.kernels import compress as c16
from mpitrain.kernels.backward import backward_layer, forward_loss, layer_slice, step_gradient
from mpitrain.kernels.network import (
    BINARY_XENT,
    SOFTMAX_XENT,
    SQUARED,
    n_params,
    network_grad,
    workspace_size,
)
from mpitrain.kernels.warmup import warm_up

pytestmark = pytest.mark.timeout(120)


def problem(kind: int, dtype: type, dims: list[int], rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dims_a = np.array(dims, dtype=np.int64)
    params = (rng.standard_normal(n_params(dims_a)) * 0.3).astype(dtype)
    X = rng.standard_normal((50, dims[0])).astype(dtype)
    if kind == SQUARED:
        y = rng.standard_normal(50).astype(dtype)
    else:
        y = rng.integers(0, dims[-1] if kind == SOFTMAX_XENT else 2, 50).astype(np.int64)
    picked = rng.integers(0, 50, rows).astype(np.int64)
    work = np.empty(workspace_size(dims_a, max(rows, 1)), dtype=dtype)
    return dims_a, params, X, y, picked, work


CASES = [(SOFTMAX_XENT, [5, 7, 4]), (SOFTMAX_XENT, [5, 9, 6, 3]), (BINARY_XENT, [5, 6, 1]),
         (SQUARED, [5, 1]), (SOFTMAX_XENT, [5, 3])]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,dims", CASES)
@pytest.mark.parametrize("rows", [0, 1, 17])
def test_step_gradient_and_split_step_equal_network_grad_bitwise(dtype, kind, dims, rows):
    dims_a, params, X, y, picked, work = problem(kind, dtype, dims, rows)
    n = params.size
    expected = np.full(n + 4, 7.0, dtype=dtype)
    loss, correct = network_grad(params, expected, dims_a, kind, X, y, picked, work)

    fused = np.full(n + 4, 7.0, dtype=dtype)
    step_gradient(params, fused, dims_a, kind, X, y, picked, work)
    assert np.array_equal(fused[:n], expected[:n])
    assert fused[n:n + 3].tolist() == pytest.approx([loss, correct, rows], rel=1e-6)
    assert fused[n + 3] == 7.0  # the stop flag slot is never written

    split = np.full(n + 4, 7.0, dtype=dtype)
    forward_loss(params, split, dims_a, kind, X, y, picked, work)
    for layer in range(len(dims) - 2, -1, -1):
        backward_layer(params, split, dims_a, work, rows, layer)
    assert np.array_equal(split, fused)


def test_layer_slices_tile_the_buffer():
    dims = np.array([5, 9, 6, 3], dtype=np.int64)
    slices = [layer_slice(dims, layer) for layer in range(3)]
    assert slices[0][0] == 0 and slices[-1][1] == n_params(dims)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))


def test_backward_layer_rejects_a_bad_layer():
    dims_a, params, _, _, _, work = problem(SOFTMAX_XENT, np.float32, [5, 7, 4], 3)
    with pytest.raises(ValueError, match="layer out of range"):
        backward_layer(params, np.zeros(params.size + 4, np.float32), dims_a, work, 3, 2)


SPECIALS = np.array([0.0, -0.0, 1.0, -2.5, 65504, 65519, 65520, 7e4, 1e-5, 6e-8, 2.0 ** -24,
                     2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 1e38, np.inf, -np.inf, np.nan],
                    dtype=np.float32)


def random_values(n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(3)
    scale = np.float32(10.0) ** rng.integers(-9, 6, n).astype(np.float32)
    return np.concatenate([rng.standard_normal(n).astype(np.float32) * scale, SPECIALS])


def test_fp16_matches_numpy_float16_bit_for_bit():
    x = random_values()
    words = np.empty(x.size, dtype=np.uint16)
    c16.encode(x, words, c16.FP16, 1.0)
    with np.errstate(over="ignore"):
        assert np.array_equal(words, x.astype(np.float16).view(np.uint16))
    back = np.empty_like(x)
    c16.decode(words, back, c16.FP16, 1.0)
    assert np.array_equal(back, words.view(np.float16).astype(np.float32), equal_nan=True)


def test_bf16_rounds_to_nearest_even():
    x = random_values()
    words = np.empty(x.size, dtype=np.uint16)
    c16.encode(x, words, c16.BF16, 1.0)
    finite = np.isfinite(x)
    low = (x.view(np.uint32) >> 16).astype(np.uint32)
    with np.errstate(invalid="ignore", over="ignore"):
        candidates = [((low + d) << 16).view(np.float32).astype(np.float64) for d in (0, 1)]
        dist = [np.abs(cand - x.astype(np.float64)) for cand in candidates]
    best = np.where(dist[0] < dist[1], low, np.where(dist[1] < dist[0], low + 1,
                                                     np.where(low % 2 == 0, low, low + 1)))
    assert np.array_equal(words[finite], best[finite].astype(np.uint16))
    back = np.empty_like(x)
    c16.decode(words, back, c16.BF16, 1.0)
    assert np.isnan(back[np.isnan(x)]).all() and np.array_equal(back[np.isinf(x)], x[np.isinf(x)])


@pytest.mark.parametrize("codec,u", [(c16.FP16, 2.0 ** -11), (c16.BF16, 2.0 ** -8)])
def test_scaled_round_trip_and_decode_add(codec, u):
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32) * 100
    words = np.empty(x.size, dtype=np.uint16)
    c16.encode(x, words, codec, 2.0 ** -8)
    back = np.empty_like(x)
    c16.decode(words, back, codec, 2.0 ** 8)
    assert np.all(np.abs(back - x) <= u * np.abs(x) * 1.0001)
    acc = np.ones_like(x)
    c16.decode_add(words, acc, codec)
    assert np.array_equal(acc, np.float32(1) + back / np.float32(2.0 ** 8))


def test_compressed_reduction_on_one_rank_keeps_the_tail_exact():
    n, tail = 101, 4
    message = np.random.default_rng(5).standard_normal(n + tail).astype(np.float32)
    message[n:] = [1e30, 12345.0, 256.0, 1.0]
    original = message.copy()
    CompressedAllreduce(MPI.COMM_SELF, n=n, tail=tail, codec="fp16", batch_size=64)(message)
    assert np.array_equal(message[n:], original[n:])
    assert np.all(np.abs(message[:n] - original[:n]) <= 2.0 ** -11 * np.abs(original[:n]))


def test_warm_up_rejects_unknown_kernels():
    warm_up(dtype=np.float32, label_dtype=np.int64, kernels={"sgd", "step_gradient"})
    with pytest.raises(ValueError, match="unknown kernels"):
        warm_up(dtype=np.float32, label_dtype=np.int64, kernels={"nope"})


@pytest.mark.parametrize("options,message", [
    ({"compress": "fp16", "dtype": "float64"}, "--compress fp16 needs --dtype float32 (got "
     "float64)"),
    ({"compress": "bf16", "overlap": True}, "--compress bf16 sends the whole message at once"),
    ({"overlap": True, "mode": "fedavg"}, "--overlap applies to --mode sync (got --mode "
     "fedavg)"),
    ({"compress": "zip"}, "--compress must be one of none, fp16, bf16 (got 'zip')"),
])
def test_performance_options_are_validated(options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve({}, options)


# ------------------------------------------------------------------------------------------
# MPI


UNIT_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}  # u of the documented bound


def compressed_inputs(size: int, n: int, tail: int) -> np.ndarray:
    """Every rank's float32 message ``[gradient (n) | tail]``, row ``r`` for rank ``r``."""
    every = np.random.default_rng(6).standard_normal((size, n + tail)).astype(np.float32) * 50
    every[:, n:] = np.arange(size * tail, dtype=np.float32).reshape(size, tail)
    return every


def assert_within_compression_bound(comm: MPI.Comm, every: np.ndarray, message: np.ndarray,
                                    n: int, codec: str) -> None:
    """``message`` (this rank's result) is the sum of the rows of ``every`` within the
    documented bound of :mod:`mpitrain.collectives.compressed`, its tail exact, the same
    bits on every rank (also used by tests/test_collectives.py for the Allreducer)."""
    u = UNIT_ROUNDOFF[codec]
    exact = every.astype(np.float64).sum(axis=0)
    bound = u * np.abs(every[:, :n]).astype(np.float64).sum(axis=0) + u * np.abs(exact[:n])
    assert np.all(np.abs(message[:n] - exact[:n]) <= bound * 1.001 + 1e-6)
    assert np.array_equal(message[n:], exact[n:].astype(np.float32))  # counts: exact
    gathered = np.empty((comm.Get_size(), message.size), dtype=np.float32)
    comm.Allgather(message, gathered)
    assert (gathered == gathered[0]).all()


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("codec", ["fp16", "bf16"])
def test_compressed_reduction_within_the_documented_bound(codec):
    comm = MPI.COMM_WORLD
    n, tail = 1003, 4
    every = compressed_inputs(comm.Get_size(), n, tail)
    message = every[comm.Get_rank()].copy()
    CompressedAllreduce(comm, n=n, tail=tail, codec=codec, batch_size=256)(message)
    assert_within_compression_bound(comm, every, message, n, codec)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_memory_reduction_equals_allreduce_every_call(dtype):
    comm = MPI.COMM_WORLD
    reducer = SharedMemoryAllreduce(comm, n=77, dtype=np.dtype(dtype))
    try:
        for call in range(5):  # both slots, twice over
            local = np.random.default_rng([call, comm.Get_rank()]).standard_normal(77)
            message = local.astype(dtype)
            expected = message.copy()
            comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
            reducer(message)
            eps = np.finfo(dtype).eps  # another summation order: rounding-level only
            np.testing.assert_allclose(message, expected, rtol=0,
                                       atol=4 * comm.Get_size() * eps * 5)
            gathered = np.empty((comm.Get_size(), 77), dtype=dtype)
            comm.Allgather(message, gathered)
            assert (gathered == gathered[0]).all()
    finally:
        reducer.close()
