"""Data: files or generators → this rank's shard (holdout, block split, standardisation),
and which of its rows each step uses (:mod:`.batches`).

Every rank reads only its own rows; the result never depends on the number of ranks. May
import numpy, mpi4py (collective agreement on sizes and statistics), :mod:`mpitrain.errors`
and :mod:`mpitrain.exact` (sums that are the same bits for any P); nothing of the models,
kernels or training.
"""

from __future__ import annotations

from mpitrain.data.dataset import Dataset, Shard, load_dataset
from mpitrain.data.memory import Arrays
from mpitrain.data.sharding import block_range
from mpitrain.data.sources import ReadOptions
from mpitrain.data.synthetic import SyntheticSpec

__all__ = ["Arrays", "Dataset", "ReadOptions", "Shard", "SyntheticSpec", "block_range",
           "load_dataset"]
