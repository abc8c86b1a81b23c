"""--shard on one rank and without MPI: option checks (one message, exit 2), the slices,
the memory report, and the same model as the unsharded run on P = 1."""

from __future__ import annotations

import itertools

import pytest
from cli_runner import run_train

from mpitrain import train
from mpitrain.config import resolve
from mpitrain.errors import UserError
from mpitrain.strategies.shards import SHARDS, Slice

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("options,message", [
    ({"mode": "fedavg", "shard": "optimizer"},
     "--shard optimizer applies to --mode sync (got --mode fedavg)"),
    ({"shard": "gradients", "overlap": True},
     "--shard gradients reduce-scatters the whole gradient at once, so it cannot be "
     "combined with --overlap; drop one of them"),
    ({"shard": "optimizer", "compress": "bf16"},
     "--shard optimizer reduce-scatters the whole gradient at once, so it cannot be "
     "combined with --compress bf16; drop one of them"),
    ({"shard": "zero3"}, "--shard must be one of none, optimizer, gradients (got 'zero3')"),
])
def test_unsupported_combinations_are_one_clear_error(options, message):
    with pytest.raises(UserError) as info:
        resolve({}, options)
    assert str(info.value) == message


def test_cli_error_is_one_line_and_exit_2():
    done = run_train(["--mode", "fedavg", "--shard", "optimizer"], ranks=2)
    assert done.returncode == 2
    assert done.stderr.strip() == ("mpitrain: error: --shard optimizer applies to --mode sync "
                                   "(got --mode fedavg)")


@pytest.mark.parametrize("n,ranks", [(0, 1), (1, 3), (10, 3), (11, 4), (3, 5)])
def test_slices_tile_the_buffer_like_reduce_scatter(n, ranks):
    parts = [Slice(n, ranks, r) for r in range(ranks)]
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    assert max(p.stop - p.start for p in parts) == parts[0].largest


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("shard", SHARDS[1:])
def test_one_rank_sharded_is_bitwise_unsharded(shard, optimizer):
    options = dict(data="synthetic", samples=200, features=5, classes=3, dtype="float64",
                   epochs=2, batch_size=16, optimizer=optimizer, lr=0.01, quiet=True)
    expected = train(**options)
    got = train(shard=shard, **options)
    assert (got.flat == expected.flat).all()
    assert got.summary["memory"]["optimizer_state_bytes_per_rank"] == \
        expected.summary["memory"]["optimizer_state_bytes_per_rank"]
