"""Batch plans: every row once per epoch, and global batches independent of the rank count."""

import numpy as np
import pytest

from mpitrain.data.batches import epoch_plan, steps_per_epoch
from mpitrain.data.sharding import block_range


def global_batches(*, shuffle, n, batch, ranks, epoch=0, seed=3):
    """Per step, the sorted global row ids over all simulated ranks."""
    plans = []
    for rank in range(ranks):
        lo, hi = block_range(n, ranks, rank)
        plans.append((lo, epoch_plan(shuffle=shuffle, seed=seed, epoch=epoch, n_total=n,
                                     start=lo, count=hi - lo, batch_size=batch)))
    steps = plans[0][1].steps
    assert all(plan.steps == steps for _, plan in plans)
    return [np.sort(np.concatenate([lo + plan.rows(s) for lo, plan in plans]))
            for s in range(steps)]


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("n,batch", [(10, 3), (17, 4), (5, 8), (100, 7)])
def test_global_batches_independent_of_ranks(shuffle, n, batch):
    reference = global_batches(shuffle=shuffle, n=n, batch=batch, ranks=1)
    assert len(reference) == steps_per_epoch(n, batch)
    assert np.array_equal(np.sort(np.concatenate(reference)), np.arange(n))
    assert all(len(b) == batch for b in reference[:-1])
    for ranks in (2, 3, 4):
        if ranks > n:
            continue
        batches = global_batches(shuffle=shuffle, n=n, batch=batch, ranks=ranks)
        assert all(np.array_equal(a, b) for a, b in zip(reference, batches, strict=True))


def test_none_keeps_file_order_and_global_changes_with_epoch():
    none = global_batches(shuffle="none", n=12, batch=4, ranks=2)
    assert [b.tolist() for b in none] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    e0 = global_batches(shuffle="global", n=50, batch=10, ranks=2, epoch=0)
    e1 = global_batches(shuffle="global", n=50, batch=10, ranks=2, epoch=1)
    assert any(not np.array_equal(a, b) for a, b in zip(e0, e1, strict=True))


@pytest.mark.parametrize("n,batch,ranks", [(14, 5, 4), (10, 3, 3), (1000, 64, 3)])
def test_local_shuffle_covers_each_block_once_with_balanced_shares(n, batch, ranks):
    for rank in range(ranks):
        lo, hi = block_range(n, ranks, rank)
        plan = epoch_plan(shuffle="local", seed=0, epoch=2, n_total=n, start=lo,
                          count=hi - lo, batch_size=batch)
        assert plan.steps == steps_per_epoch(n, batch)
        rows = np.concatenate([plan.rows(s) for s in range(plan.steps)])
        assert np.array_equal(np.sort(rows), np.arange(hi - lo))
        sizes = [len(plan.rows(s)) for s in range(plan.steps)]
        assert max(sizes) - min(sizes) <= 1
