"""--hash-bits under MPI: every rank hashes its own byte range of a file of feature names,
and the shards are those of one rank (hashing depends on the name and seed only)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_data import load
from test_data_mpi import on_rank0
from test_hashing import named_rows

from mpitrain.data.sources import ReadOptions

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

COMM = MPI.COMM_WORLD


def gathered(shard) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' CSR rows of a split as one dense array (tiny data), in rank order."""
    X = shard.X.dense(shard.X.n_cols, np.float64)
    return np.concatenate(COMM.allgather(X)), np.concatenate(COMM.allgather(shard.y))


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_hashed_shards_do_not_depend_on_the_rank_count(mpi_tmp_path, fraction):
    def make() -> str:
        path = mpi_tmp_path / "names.svm"
        path.write_text("\n".join(named_rows(157, seed=3)[1]) + "\n", encoding="utf-8")
        return str(path)

    path = on_rank0(make)
    options = {"test_fraction": fraction, "seed": 5, "sparse": "on",
               "read": ReadOptions(hash_bits=9, hash_seed=11)}
    parallel, serial = load(path, **options), load(path, MPI.COMM_SELF, **options)
    assert parallel.n_features == serial.n_features == 512
    for part, whole in ((parallel.train, serial.train), (parallel.test, serial.test)):
        X, y = gathered(part)
        np.testing.assert_array_equal(y, whole.y)
        np.testing.assert_array_equal(X, whole.X.dense(512, np.float64))
