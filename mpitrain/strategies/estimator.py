"""What the strategies of non-gradient models (``--model gbdt|forest|kmeans``) share.

They run on the same loop, checkpoints and outputs as the gradient strategies, but own
their model (trees, centers) instead of a flat parameter buffer of a
:class:`~mpitrain.models.Model`; ``--model`` names them (:data:`ESTIMATORS
<mpitrain.strategies.ESTIMATORS>`), ``--mode`` stays ``sync``. Each says how it loads its
data (:meth:`data_options`), describes itself for summary.json and gives its trained
model (saved as model.npz by :mod:`mpitrain.models.estimators`).
"""

from __future__ import annotations

import os
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import UserError
from ..kernels.trees import add_tree_codes
from ..models.estimators import SavedEstimator
from ..trees.binning import agree_bins
from ..trees.grow import TREE_ARRAYS, GrowOptions, Tree
from .base import Strategy, Unit

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..config import TrainConfig
    from ..data import Dataset

# gradient-training options an estimator does not take: (field, default)
_NOT_HONOURED = ("mode", "compress", "overlap", "shard")


def _resident_mb() -> float | None:
    """This process's resident memory now (MiB; None where /proc is missing): the float
    rows loaded and dropped, it is the codes' working set (peak RSS keeps the loading)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


class EstimatorStrategy(Strategy):
    """A strategy that fits a model of its own (see the module docstring)."""

    kind: str  # the model's name and saved kind
    dataset: Dataset
    finished: bool = False  # converged or stopped early: no more units

    def units(self, start: int) -> Iterator[Unit]:
        """One unit per period (a boosting round, a Lloyd iteration) until
        :attr:`total_units` or until the model says it is finished."""
        for index in range(start, self.total_units):
            if self.finished:
                return
            yield Unit(index=index, period=index, step=0, period_end=True)

    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        from ..config import FIELDS, flag

        for name in _NOT_HONOURED:
            value = getattr(config, name)
            if value != FIELDS[name].default:
                raise UserError(f"--{flag(name)} {value} applies to gradient models; "
                                f"--model {cls.kind} trains its own way (drop --{flag(name)})")
        if config.oob_score and cls.kind != "forest":
            raise UserError(f"--oob-score applies to --model forest (got --model {cls.kind})")

    @classmethod
    def kernels(cls, config: TrainConfig, *, ranks: int) -> frozenset[str]:
        return frozenset()  # its numba kernels compile on first use (kernels/trees.py)

    @classmethod
    @abstractmethod
    def data_options(cls, config: TrainConfig) -> dict[str, Any]:
        """``task`` and ``standardize`` to load the data with."""

    @classmethod
    @abstractmethod
    def fit(cls, config: TrainConfig, *, dataset: Dataset,
            comm: MPI.Comm) -> EstimatorStrategy:
        """Collective: the strategy, ready to run on ``dataset``."""

    @classmethod
    def build(cls, config: TrainConfig, *, model: Any = None, params: Any = None,
              dataset: Dataset, comm: MPI.Comm) -> EstimatorStrategy:
        return cls.fit(config, dataset=dataset, comm=comm)

    @abstractmethod
    def model_arrays(self) -> dict[str, np.ndarray]:
        """The arrays model.npz stores (the trained model so far)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The ``model`` section of summary.json (also stored as the model's info)."""

    def trained(self, *, version: str) -> SavedEstimator:
        """The trained model as model.npz holds it (``predict(result.model, X)``)."""
        data = self.dataset
        return SavedEstimator(kind=self.kind, arrays=self.model_arrays(),
                              n_features=data.n_features, n_classes=data.n_classes,
                              info=self.describe(), mean=data.mean, std=data.std,
                              classes=data.classes, version=version)


class TreeEnsembleStrategy(EstimatorStrategy):
    """What gbdt and the forest share: one unit per tree (round), data loaded without
    standardising (trees do not need it; raw values keep the thresholds exact), and every
    rank's rows binned with the edges agreed over the ranks (:meth:`bin_data`)."""

    unit_name: ClassVar[str] = "tree"
    period_name: ClassVar[str] = "tree"
    length_option: ClassVar[str] = "trees"
    trees: dict[str, np.ndarray]  # every tree's arrays (TREE_ARRAYS), one row per tree
    per_unit_arrays: ClassVar[bool] = True  # --trees may grow on resume
    rss_mb_after_binning: float | None = None  # measured by summary() (its first call)

    def restore_trees(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy checkpointed trees into :attr:`trees` (which may have room for more
        trees than the checkpointed run asked for: ``--trees`` grew)."""
        for name, value in self.trees.items():
            rows = min(len(value), len(arrays[name]))
            value[:rows] = arrays[name][:rows]

    @classmethod
    def data_options(cls, config: TrainConfig) -> dict[str, Any]:
        task = "regression" if config.loss == "squared" else "classification"
        return {"task": task, "standardize": False, "missing": True}

    def bin_data(self, config: TrainConfig, dataset: Dataset, comm: MPI.Comm) -> None:
        """Collective: ``bins`` (agreed edges), ``n_bins`` (histogram width), ``codes`` and
        ``test_codes`` (this rank's binned rows). Then the float rows are dropped (the
        shards of :attr:`dataset` keep their labels, ``X`` has 0 rows): training, the
        held-out metrics and the out-of-bag scores read the codes, so a rank holds its uint8
        codes and histograms (the caller must not keep the loaded dataset either)."""
        started = time.perf_counter()
        train = dataset.train
        self.bins = agree_bins(comm, train.X, first_row=train.start, rows=train.n_total,
                               seed=config.seed, max_bins=config.max_bins)
        self.n_bins = self.bins.n_bins  # codes of present values; NaN is bins.missing
        self.codes = self.bins.codes(train.X)
        self.test_codes = self.bins.codes(dataset.test.X)
        # a new empty array, not a view (``X[:0]`` would keep the whole float rows alive)
        self.dataset = replace(dataset, **{
            name: replace(shard, X=np.empty((0, shard.X.shape[1]), shard.X.dtype))
            for name, shard in (("train", train), ("test", dataset.test))})
        self.binning_seconds = time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """Also the binning seconds and ``rss_mb_after_binning``: the resident memory at
        the first call, before the loop, once the caller dropped the loaded dataset (so the
        float rows are gone): the codes' working set over the interpreter's."""
        if self.rss_mb_after_binning is None:
            self.rss_mb_after_binning = _resident_mb()
        return {"model": self.describe(), "binning_seconds": self.binning_seconds,
                "rss_mb_after_binning": self.rss_mb_after_binning}

    @staticmethod
    def grow_options(config: TrainConfig, **fixed: Any) -> GrowOptions:
        """The tree shape options of ``config`` (``fixed`` overrides some)."""
        values = dict(max_depth=config.max_depth, max_leaves=config.max_leaves,
                      l2=config.l2, min_child_weight=config.min_child_weight,
                      min_samples_leaf=config.min_samples_leaf, lr=config.lr,
                      algorithm=config.reduce)
        return GrowOptions(**{**values, **fixed})

    @staticmethod
    def empty_trees(count: int, nodes: int, outputs: int | None) -> dict[str, np.ndarray]:
        """Room for ``count`` trees of ``nodes`` nodes (``value`` (count, nodes) when
        ``outputs`` is None, else (count, nodes, outputs))."""
        empty = Tree.empty(nodes, outputs or 1)
        trees = {name: np.repeat(getattr(empty, name)[None], count, axis=0)
                 for name in TREE_ARRAYS}
        if outputs is None:
            trees["value"] = trees["value"][..., 0].copy()
        return trees

    def add_tree(self, codes: np.ndarray, t: int, value: np.ndarray, out: np.ndarray,
                 column: int) -> None:
        """``out[:, column] +=`` the leaf ``value`` (per node) of stored tree ``t`` that each
        binned row of ``codes`` falls into."""
        routing = tuple(self.trees[name][t]
                        for name in ("feature", "code", "left", "right", "missing_left"))
        add_tree_codes(codes, routing, self.bins.missing, np.ascontiguousarray(value),
                       out, column)

    def store_tree(self, t: int, tree: Tree) -> None:
        """Keep ``tree`` as stored tree ``t``."""
        for name in TREE_ARRAYS:
            value = getattr(tree, name)
            target = self.trees[name]
            target[t] = value[:, 0] if value.ndim > target.ndim - 1 else value

    def saved_trees(self, count: int) -> dict[str, np.ndarray]:
        """What model.npz keeps of the first ``count`` trees (routing on raw values)."""
        return {name: self.trees[name][:count]
                for name in ("feature", "threshold", "left", "right", "missing_left")}
