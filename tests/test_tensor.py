"""--tensor-parallel without MPI: the split plan (which blocks a rank holds, take/put
round trips, the bytes it saves), the row gather's messages and the option checks (one
message, exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import run_train

from mpitrain.config import resolve
from mpitrain.errors import UserError
from mpitrain.kernels.tensor import tp_pack, tp_unpack
from mpitrain.models import Layout
from mpitrain.strategies.tensor_split import COLUMNS, ROWS, WHOLE, TensorSplit

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("dims,kinds", [
    ((5, 8, 3), (COLUMNS, ROWS)),
    ((5, 8, 6, 3), (COLUMNS, ROWS, WHOLE)),
    ((5, 8, 6, 4, 3), (COLUMNS, ROWS, COLUMNS, ROWS)),
])
def test_hidden_layer_pairs_are_split_columns_then_rows(dims, kinds):
    assert TensorSplit(dims, 2).kinds == kinds


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gathered_messages_give_the_rows_in_rank_order_and_any_vote(dtype):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 4)).astype(dtype)
    y = np.arange(9).astype(dtype) % 3
    picks = [np.array([7, 0, 2]), np.array([], dtype=np.int64), np.array([5, 5])]
    messages = np.full((3, 2, 2 + 3 * 5), np.nan, dtype=dtype)  # (rank, slot, message)
    for t, (rows, vote) in enumerate(zip(picks, (0.0, 1.0, 0.0), strict=True)):
        tp_pack(X, y, rows, vote, messages[t, 1])
    A, labels = np.zeros((8, 4), dtype=dtype), np.zeros(8, dtype=dtype)
    n, vote = tp_unpack(messages, 1, A, labels)
    rows = np.concatenate(picks)
    assert (n, vote) == (5, 1.0)
    np.testing.assert_array_equal(A[:n], X[rows])
    np.testing.assert_array_equal(labels[:n], y[rows])
    with pytest.raises(IndexError):
        tp_pack(X, y, np.array([9]), 0.0, messages[0, 0])


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("dims", [(5, 8, 3), (4, 7, 5, 2), (3, 9, 6, 5, 2)])
def test_blocks_tile_the_model_and_round_trip(dims, ranks):
    split = TensorSplit(dims, ranks)
    full_layout = Layout.dense(dims)
    full = np.random.default_rng(0).standard_normal(full_layout.size)
    rebuilt = np.full_like(full, np.nan)
    for rank in range(ranks):
        layout = split.layout(rank)
        local = np.zeros(layout.size)
        split.take(rank, full_layout.views(full), layout.views(local))
        split.put(rank, layout.views(local), full_layout.views(rebuilt))
    assert (rebuilt == full).all()
    # the split matrices' blocks are disjoint: their sizes add up to the full ones
    for layer, kind in enumerate(split.kinds):
        if kind == WHOLE:
            continue
        cells = sum(np.prod(split.shapes(r)[f"W{layer}"]) for r in range(ranks))
        assert cells == dims[layer] * dims[layer + 1]


def test_split_bytes_are_one_tth_but_the_replicated_biases():
    split = TensorSplit((10, 4096, 10), 2)
    held, total = split.split_elements(0)
    assert total == 10 * 4096 + 4096 + 4096 * 10 + 10
    assert held == 10 * 2048 + 2048 + 2048 * 10 + 10
    assert split.smallest_hidden() == 4096


@pytest.mark.parametrize("options,message", [
    ({"mode": "fedavg", "tensor_parallel": 2},
     "--tensor-parallel 2 applies to --mode sync (got --mode fedavg)"),
    ({"model": "softmax", "tensor_parallel": 2},
     "--tensor-parallel 2 splits the hidden layers of --model mlp, but --model softmax has "
     "no hidden layer to split; use --model mlp or --tensor-parallel 1"),
    ({"model": "mlp", "tensor_parallel": 2, "overlap": True},
     "--tensor-parallel 2 cannot be combined with --overlap; drop one of them"),
    ({"model": "mlp", "tensor_parallel": 2, "shard": "optimizer"},
     "--tensor-parallel 2 cannot be combined with --shard optimizer; drop one of them"),
    ({"model": "mlp", "tensor_parallel": 2, "compress": "bf16", "dtype": "float32"},
     "--tensor-parallel 2 cannot be combined with --compress bf16; drop one of them"),
    ({"tensor_parallel": 0}, "--tensor-parallel must be >= 1 (got 0)"),
])
def test_unsupported_combinations_are_one_clear_error(options, message):
    with pytest.raises(UserError) as info:
        resolve({}, options)
    assert str(info.value) == message


@pytest.mark.parametrize("args,message", [
    (["--model", "mlp", "--tensor-parallel", "2"],
     "--tensor-parallel 2 must divide the number of ranks (3): the ranks form groups of 2; "
     "use 1 or 3"),
    (["--model", "linear", "--tensor-parallel", "3"],
     "--tensor-parallel 3 splits the hidden layers of --model mlp, but --model linear has "
     "no hidden layer to split; use --model mlp or --tensor-parallel 1"),
    (["--model", "mlp", "--hidden", "2", "--tensor-parallel", "3"],
     "--tensor-parallel 3 gives every rank of a group a block of each split hidden layer, "
     "but --hidden has a layer of 2 units; use hidden layers of at least 3 units"),
])
def test_cli_error_is_one_line_and_exit_2(args, message):
    done = run_train(["--samples", "60", "--epochs", "1", *args], ranks=3)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"mpitrain: error: {message}"
