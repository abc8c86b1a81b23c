"""A dataset is read with numpy's huge-page advice off, and the advice is restored after
(mpitrain/data/pages.py)."""

from __future__ import annotations

import pytest
from mpi4py import MPI

from mpitrain.data import pages

advice = pytest.importorskip("numpy._core.multiarray")._get_madvise_hugepage


def test_small_pages_turns_the_advice_off_inside_and_restores_it():
    before = advice()
    with pages.small_pages():
        assert advice() is False
    assert advice() is before
    with pytest.raises(RuntimeError), pages.small_pages():
        raise RuntimeError("a read that fails")
    assert advice() is before


def test_loading_a_dataset_reads_with_small_pages(monkeypatch):
    seen = []

    def opening(*args, **kwargs):
        seen.append(advice())
        raise RuntimeError("stop here")

    from mpitrain.data import dataset

    monkeypatch.setattr(dataset, "open_arrays", opening)
    before = advice()
    with pytest.raises(RuntimeError, match="stop here"):
        dataset.load_dataset("x", comm=MPI.COMM_SELF, task="classification",
                             dtype="float32", seed=0, arrays=object())
    assert seen == [False] and advice() is before
