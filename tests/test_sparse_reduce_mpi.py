"""The sparse row reduction (mpitrain.collectives.sparse) gives the dense allreduce's bits,
step after step, whichever way it goes; where the dense order is unknown it stays dense.

MPI tests run under ``mpiexec -n P python -m pytest --with-mpi -m mpi`` (P = 2, 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_train
from mpi4py import MPI
from test_sparse_train import COMMON, sparse_file

from mpitrain.collectives import Allreducer
from mpitrain.collectives.context import state_of
from mpitrain.collectives.sparse import (
    SparseRowAllreducer,
    payload_bytes,
    sparse_is_cheaper,
    summation_order,
)
from mpitrain.kernels.sparse import batch_columns
from mpitrain.kernels.sparse_reduce import ORDER_RANKS, ORDER_RING
from mpitrain.models import load_model

pytestmark = pytest.mark.timeout(240)
ROWS, WIDTH, REST = 997, 3, 11  # a prime row count: ring chunks split rows


def contribution(rng, dtype, touched_rows):
    message = np.zeros(ROWS * WIDTH + REST, dtype=dtype)
    block = message[: ROWS * WIDTH].reshape(ROWS, WIDTH)
    scale = 10.0 ** rng.integers(-3, 4, (touched_rows.size, WIDTH))  # rounding shows
    block[touched_rows] = rng.standard_normal((touched_rows.size, WIDTH)) * scale
    message[ROWS * WIDTH:] = rng.standard_normal(REST)
    return message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("algorithm", ["auto", "shm", "ring", "mpi", "root"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bound", [None, 300])
def test_sparse_reduction_equals_the_dense_bits(algorithm, dtype, bound):
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    dense = Allreducer(ROWS * WIDTH + REST, dtype, comm, algorithm=algorithm)
    reference = Allreducer(ROWS * WIDTH + REST, dtype, comm, algorithm=algorithm)
    # forced sparse on every step (then forced dense) to compare both ways
    # (a bound: one Allgather of fixed blocks, the bound being agreed: the largest)
    sparse = SparseRowAllreducer(dense, rows=ROWS, width=WIDTH, comm=comm, up_to=np.inf,
                                 max_touched=None if bound is None else bound - rank)
    assert sparse.enabled == (summation_order(dense.algorithm, size) is not None)
    assert sparse.bound == (bound if sparse.enabled and bound else 0)
    one_node = state_of(comm).one_node()
    assert sparse.transport == ("none" if not sparse.enabled else "allgatherv" if not bound
                                else "shm" if one_node else "allgather")
    if size == 2 or dense.algorithm in ("shm", "ring"):
        assert sparse.enabled
    for step in range(6):
        rng = np.random.default_rng([step, rank])
        # overlapping and disjoint rows, some ranks with none, rows moving between steps
        count = 0 if (step + rank) % 4 == 3 else int(rng.integers(1, 300))
        touched = np.sort(rng.choice(ROWS, count, replace=False)).astype(np.int64)
        mine = contribution(rng, dtype, touched)
        if step == 4:
            sparse.up_to = 0.0  # a dense step in between: its result must not leak
        if step == 5:
            sparse.up_to = np.inf
        message = dense.buffer()
        message[...] = mine
        got = sparse(message, touched).copy()
        reference.buffer()[...] = mine
        expected = reference()
        np.testing.assert_array_equal(got, expected)
    if sparse.enabled:  # (the one-collective path has no per-step choice)
        assert (sparse.sparse_steps, sparse.dense_steps) == ((6, 0) if bound else (5, 1))
    sparse.close()
    dense.close()
    reference.close()


def test_summation_orders():
    assert summation_order("ring", 3) == ORDER_RING
    assert summation_order("shm", 4) == ORDER_RANKS
    assert summation_order("mpi", 2) == ORDER_RANKS  # a + b == b + a
    assert summation_order("mpi", 3) is None
    assert summation_order("compressed", 2) is None
    assert summation_order("ring", 1) is None


def test_the_threshold_compares_all_payloads_with_the_dense_message():
    counts = np.array([10, 0, 5])
    sizes = payload_bytes(counts, width=2, rest=3, itemsize=8)
    assert sizes.tolist() == [10 * 8 + 23 * 8, 3 * 8, 5 * 8 + 13 * 8]
    # (a bounded block's int32 indices, padded to 8 bytes; float32 values likewise)
    assert payload_bytes(counts, width=2, rest=3, itemsize=4, index_bytes=4).tolist() == [
        40 + 96, 16, 24 + 56]
    total = int(sizes.sum())
    assert sparse_is_cheaper(counts, width=2, rest=3, itemsize=8, dense_bytes=total,
                             up_to=1.0)
    assert not sparse_is_cheaper(counts, width=2, rest=3, itemsize=8,
                                 dense_bytes=total - 1, up_to=1.0)


def test_batch_columns_are_the_sorted_distinct_columns():
    data = np.ones(7)
    indices = np.array([5, 1, 9, 1, 5, 2, 0], dtype=np.int32)
    indptr = np.array([0, 3, 5, 5, 7], dtype=np.int64)
    mark = np.zeros(10, dtype=np.uint8)
    out = np.zeros(10, dtype=np.int64)
    m = batch_columns((data, indices, indptr), np.array([1, 0, 2]), mark, out)
    assert out[:m].tolist() == [1, 5, 9] and not mark.any()


def one_auto_dense(tmp_path, options: list[str], ranks: int, *, one: bool = True) -> dict:
    """Train with ``options`` on one rank (``one``), then on ``ranks`` with
    --sparse-reduce auto and dense: ``{name: (SavedModel, summary)}``."""
    runs = {}
    for name, p, reduce in (("one", 1, "auto"), ("auto", ranks, "auto"),
                            ("dense", ranks, "dense")):
        if name == "one" and not one:
            continue
        out = tmp_path / name
        done = run_train([*options, "--sparse-reduce", reduce, "--out", str(out)], ranks=p)
        assert done.returncode == 0, done.stderr
        runs[name] = (load_model(out / "model.npz"),
                      json.loads((out / "summary.json").read_text()))
    return runs


@pytest.mark.parametrize("model,ranks", [("logistic", 2), ("logistic", 3), ("mlp", 2),
                                          ("mlp", 3)])
def test_training_reduces_sparsely_with_the_dense_bits(tmp_path, model, ranks):
    """--sparse-reduce auto sends only the touched rows here, and trains the very model
    --sparse-reduce dense trains (bits), which is the model of one rank (1e-10)."""
    path = sparse_file(tmp_path / "w.svm", 240, 20000, 5, lambda i: i % 2)
    # (--reduce shm: with momentum, --reduce auto takes the node-shared update on one
    # node instead of a reduction: tests/test_shared_update_mpi.py)
    options = ["--data", path, "--model", model, "--hidden", "4", "--sparse", "on",
               "--shuffle", "global", "--reduce", "shm", *COMMON]
    runs = one_auto_dense(tmp_path, options, ranks)
    reduction = runs["auto"][1]["sparse_reduction"]
    assert reduction["enabled"] and reduction["sparse_steps"] > 0
    assert reduction["bound"] == 16 * 5  # (a step's rows times the non-zeros of a row)
    assert "sparse_reduction" not in runs["dense"][1]
    for name, value in runs["dense"][0].params.items():
        np.testing.assert_array_equal(runs["auto"][0].params[name], value)
        np.testing.assert_allclose(runs["one"][0].params[name], value, rtol=1e-10,
                                   atol=1e-12)
