"""A sparse step in time that grows with the batch, not the weight matrix: the rows step
(zeroes only the rows it wrote last time) gives the full step's message, the row-wise SGD
update gives the dense update's bits, and training with them on 1, 2 and 3 ranks gives the
model of the dense update (bits) and of one rank (1e-10).

MPI tests run under ``mpiexec -n P python -m pytest --with-mpi -m mpi`` (P = 2, 3)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_sparse_kernels import HEADS, random_csr
from test_sparse_reduce_mpi import one_auto_dense
from test_sparse_train import COMMON, sparse_file

from mpitrain.collectives import Allreducer
from mpitrain.kernels.network import _head
from mpitrain.kernels.optimizers import sgd_update, sgd_update_rows
from mpitrain.kernels.sparse import (
    _logits,
    add_csr_outer,
    sparse_rows_step,
    sparse_step,
    sparse_workspace_size,
)
from mpitrain.optimizers import make_optimizer

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_step_gives_the_full_steps_message_step_after_step(name, dtype):
    kind, k, _ = HEADS[name]
    rng = np.random.default_rng(3)
    n, d = 60, 400
    (data, indices, indptr), _ = random_csr(rng, n, d, 0.02)
    X = (data.astype(dtype), indices, indptr)
    y = (rng.integers(0, max(k, 2), n) if name != "linear" else rng.standard_normal(n))
    y = y.astype(np.int64 if name != "linear" else dtype)
    spec = np.array([kind, d, k], dtype=np.int64)
    params = rng.standard_normal(d * k + k).astype(dtype)
    work = np.empty(sparse_workspace_size(k, 8), dtype=dtype)
    message = np.full(d * k + k + 3, 7.0, dtype=dtype)  # garbage: the first call zeroes all
    expected = np.empty_like(message)
    mark = np.zeros(d, np.uint8)
    touched = np.zeros(d, np.int64)
    held = -1
    for step in range(12):
        rows = rng.choice(n, 8 if step != 5 else 0, replace=False).astype(np.int64)
        held = sparse_rows_step(params, message, X, y, rows, work, spec, mark, touched, held)
        sparse_step(params, expected, X, y, rows, work, spec)
        np.testing.assert_array_equal(message, expected)
        columns = np.unique(indices[np.concatenate([np.arange(indptr[r], indptr[r + 1])
                                                    for r in rows] or [[]]).astype(int)])
        assert sorted(touched[:held]) == columns.tolist() and not mark.any()
        params -= dtype(0.1) * expected[: params.size]


@pytest.mark.parametrize("name", ["linear", "logistic"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_output_step_row_by_row_gives_the_batch_formulas_bits(name, dtype):
    """Linear and logistic steps go row by row (logit, delta, the row's gradient while its
    entries are in cache): the bits of the batch formulas (all logits, the head, then the
    outer product), with extreme values where an operation order would show."""
    kind, k, _ = HEADS[name]
    rng = np.random.default_rng(11)
    n, d = 50, 300
    (data, indices, indptr), _ = random_csr(rng, n, d, 0.05)
    data = (data * 10.0 ** rng.integers(-6, 7, data.size)).astype(dtype)
    X = (data, indices, indptr)
    y = (rng.integers(0, 2, n) if name == "logistic" else rng.standard_normal(n)).astype(dtype)
    spec = np.array([kind, d, k], dtype=np.int64)
    params = (rng.standard_normal(d * k + k) * 10.0 ** rng.integers(-4, 3, d * k + k))
    params = params.astype(dtype)
    rows = np.concatenate([rng.choice(n, 30, replace=False), [3, 3]]).astype(np.int64)
    work = np.empty(sparse_workspace_size(k, rows.size), dtype=dtype)
    message = np.full(d * k + k + 3, 7.0, dtype=dtype)
    sparse_step(params, message, X, y, rows, work, spec)
    Z = _logits(params, X, rows, work, spec)
    labels = work[rows.size : 2 * rows.size]
    labels[:] = y[rows]
    loss, correct = _head(Z, labels, kind, True)
    expected = np.zeros(d * k + k, dtype=dtype)
    add_csr_outer(expected[:d].reshape(d, 1), X, rows, Z)
    for i in range(rows.size):  # the bias, in row order
        expected[d] += Z[i, 0]
    np.testing.assert_array_equal(message[: d + 1], expected)
    assert (message[d + 1], message[d + 2], message[d + 3]) == (
        dtype(loss), dtype(correct), rows.size)


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_row_wise_sgd_gives_the_dense_updates_bits(width, dtype):
    rng = np.random.default_rng(5)
    d, rest = 300, 4
    rows = rng.choice(d, 40, replace=False).astype(np.int64)
    grad = np.zeros(d * width + rest + 3, dtype=dtype)
    grad.reshape(-1)[: d * width].reshape(d, width)[rows] = rng.standard_normal((40, width))
    grad[d * width:] = rng.standard_normal(rest + 3)
    params = (rng.standard_normal(d * width + rest) * 10.0 ** rng.integers(-8, 3)).astype(dtype)
    params[:5] = [0.0, -0.0, 1e30, 1e-40, -3.0]  # (untouched: left exactly as they are)
    dense, by_rows = params.copy(), params.copy()
    for _ in range(3):
        sgd_update(dense, grad, 1.0 / 7, 0.3, 0.0)
        sgd_update_rows(by_rows, grad, rows, rows.size, width, d * width, 1.0 / 7, 0.3, 0.0)
        np.testing.assert_array_equal(by_rows.view(f"u{params.itemsize}"),
                                      dense.view(f"u{params.itemsize}"))


def test_only_plain_sgd_without_weight_decay_updates_by_rows():
    params = np.zeros(4)
    assert make_optimizer("sgd", params).exact_on_rows
    for optimizer in (make_optimizer("sgd", params, weight_decay=1e-4),
                      make_optimizer("momentum", params), make_optimizer("adam", params)):
        assert not optimizer.exact_on_rows
        with pytest.raises(ValueError, match="no exact row-wise update"):
            optimizer.apply_rows(params, np.zeros(7), rows=np.zeros(0, np.int64), width=1,
                                 dense_start=4, scale=1.0, lr=0.1)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("bound,in_place,distinct", [(None, False, True), (50, False, True),
                                                     (50, True, True), (50, True, False)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("room", [None, 60, 200])
def test_rows_written_is_the_union_of_every_ranks_rows(bound, in_place, distinct, dtype,
                                                       width, room):
    """... and the result the dense allreduce's bits (the same on every rank), summed into
    the message itself (``in_place``) on two ranks; there the other rank's rows are
    appended after this rank's in the array ``touched`` starts (``room`` elements long)
    when they fit, and nothing else of that array is written."""
    from mpitrain.collectives.sparse import SparseRowAllreducer

    comm = MPI.COMM_WORLD
    rows, rank = 500, comm.Get_rank()
    count = rows * width + 3
    dense = Allreducer(count, dtype, comm, algorithm="ring")
    reference = Allreducer(count, dtype, comm, algorithm="ring")
    sparse = SparseRowAllreducer(dense, rows=rows, width=width, comm=comm, up_to=np.inf,
                                 max_touched=bound, in_place=in_place,
                                 distinct_rows=distinct)
    assert sparse.in_place == (in_place and comm.Get_size() == 2)
    rng = np.random.default_rng(11 + rank)
    base = np.full(room or 0, -7, dtype=np.int64)
    for step in range(4):
        touched = rng.choice(rows, 40 - 2 * step, replace=False).astype(np.int64)
        if room is not None:  # (as the rows step returns them: the start of its array)
            base[: touched.size] = touched
            touched = base[: touched.size]
        before = base.copy()
        message = dense.buffer()
        message[:] = 0
        block = message[: rows * width].reshape(rows, width)
        block[touched] = rng.standard_normal((touched.size, width)) * 10.0 ** rng.integers(-3, 4)
        block[touched[0]] = -0.0  # (a zero's sign: every rank alike)
        message[rows * width:] = rng.standard_normal(3)
        expected = reference.buffer()
        expected[:] = message
        expected = reference().copy()
        result = sparse(message, touched)
        assert (result is message) == sparse.in_place
        np.testing.assert_array_equal(result, expected)
        bits = np.ascontiguousarray(result).view(np.uint8)
        assert all(np.array_equal(bits, other) for other in comm.allgather(bits))
        every = np.concatenate(comm.allgather(touched))
        written = sparse.rows_written
        assert written is not None and np.unique(written).tolist() == np.unique(every).tolist()
        assert written.size == (every.size if not distinct and sparse.in_place
                                else np.unique(every).size)
        appended = sparse.in_place and room is not None and room >= 80
        assert np.shares_memory(written, base) == appended
        if appended:  # (this rank's rows first, then the other's; nothing past them)
            assert written[: touched.size].tolist() == before[: touched.size].tolist()
            assert base[written.size:].tolist() == before[written.size:].tolist()
        else:
            assert base.tolist() == before.tolist()
    for reducer in (sparse, dense, reference):
        reducer.close()


@pytest.mark.parametrize("ranks,dtype", [(2, "float64"), (3, "float64"), (2, "float32")])
def test_sgd_by_rows_trains_the_dense_updates_model(tmp_path, ranks, dtype):
    """--optimizer sgd with the row reduction (rows step, row-wise update) trains the very
    model of the dense reduction and update (bits), and (float64) of one rank (1e-10)."""
    path = sparse_file(tmp_path / "w.svm", 240, 20000, 5, lambda i: i % 2)
    common = [c if c != "float64" else dtype for c in COMMON]
    options = ["--data", path, "--model", "logistic", "--sparse", "on", "--shuffle",
               "global", "--optimizer", "sgd", "--lr", "0.5", *common]
    runs = one_auto_dense(tmp_path, options, ranks, one=dtype == "float64")
    reduction = runs["auto"][1]["sparse_reduction"]
    assert reduction["sparse_steps"] > 0 and reduction["dense_steps"] == 0
    assert reduction["transport"] == "shm"  # (as built: the slots are closed by then)
    for name, value in runs["dense"][0].params.items():
        np.testing.assert_array_equal(runs["auto"][0].params[name], value)
        if "one" in runs:
            np.testing.assert_allclose(runs["one"][0].params[name], value, rtol=1e-10,
                                       atol=1e-12)
