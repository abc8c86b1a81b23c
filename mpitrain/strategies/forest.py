"""``--model forest``: random forest (classifier, or regressor with ``--loss squared``),
the same forest for any number of ranks.

One unit is one tree. ``contribute`` draws this rank's bootstrap: per-row Poisson(1)
weights from uniform numbers keyed by (seed, tree, global row), so a row has the same
weight on any rank; the targets become weighted sums (class indicators for a classifier,
so the summed gain is the Gini decrease; the value for a regressor: variance decrease).
``reduce`` grows the tree level by level, fixed-point histograms reduce-scattered by
feature and the best splits agreed once per level (:mod:`mpitrain.trees.grow`), each node
splitting on ``--max-features`` features drawn with a generator keyed by (seed, tree,
node). Leaves hold class shares (or means); the forest averages them. ``--oob-score``:
each training row is also scored by the trees whose bootstrap gave it weight 0 (accuracy
of the summed class shares, or R² of the mean, over the rows some tree left out, as
scikit-learn's ``oob_score_``), from exact sums.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exact import exact_column_sums, fixed_scale, global_max
from ..kernels.trees import keyed_uniform, poisson_weights
from ..models.layout import Layout
from ..trees.grow import grow_trees
from .base import StopRequested, Unit
from .estimator import TreeEnsembleStrategy

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..config import TrainConfig
    from ..data import Dataset

#: Keyed-uniform streams of the bootstrap: tree t draws from stream BOOTSTRAP_STREAM + t.
BOOTSTRAP_STREAM = 1 << 20


def features_per_node(config: TrainConfig, n_features: int, classify: bool) -> int:
    """``--max-features`` as a count: auto means sqrt for a classifier, all for a
    regressor (scikit-learn's defaults)."""
    rule = config.max_features
    if rule == "auto":
        rule = "sqrt" if classify else "all"
    count = {"sqrt": math.isqrt(n_features), "log2": int(math.log2(max(n_features, 1))),
             "all": n_features}[rule]
    return max(1, count)


class ForestStrategy(TreeEnsembleStrategy):
    """Random forest on histograms over MPI collectives."""

    kind = "forest"

    @classmethod
    def fit(cls, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm) -> ForestStrategy:
        return cls(config, dataset=dataset, comm=comm)

    def __init__(self, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm) -> None:
        self.config, self.dataset, self.comm = config, dataset, comm
        train = dataset.train
        self.classify = config.loss != "squared"
        self.outputs = dataset.n_classes if self.classify else 1
        self.bin_data(config, dataset, comm)
        self.targets = self._targets(train.y)
        self.max_features = features_per_node(config, dataset.n_features, self.classify)
        self.options = self.grow_options(config, l2=0.0, lr=-1.0)
        nodes, t, m = self.options.nodes, config.trees, self.outputs
        self.trees = self.empty_trees(t, nodes, m)
        self.layout = Layout.of({"value": (t, nodes, m)})
        self.done = 0
        self.oob_score: float | None = None
        self._reset_sums()

    @property
    def params(self) -> np.ndarray:  # type: ignore[override]
        return self.trees["value"]

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Per-row targets (n, outputs): class indicators, or the value."""
        if not self.classify:
            return np.asarray(y, dtype=np.float64)[:, None]
        onehot = np.zeros((len(y), self.outputs))
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
        return onehot

    def _reset_sums(self) -> None:
        """Sums over the trees so far of the leaf values of every train and test row."""
        self.sums = np.zeros((len(self.codes), self.outputs))
        self.test_sums = np.zeros((len(self.test_codes), self.outputs))
        self.oob_sums = np.zeros((len(self.codes), self.outputs))
        self.oob_counts = np.zeros(len(self.codes))
        for t in range(self.done):
            self._add_tree(t)
            if self.config.oob_score:
                self._add_out_of_bag(t, self._bootstrap(t))

    def _bootstrap(self, t: int) -> np.ndarray:
        """This rank's rows' Poisson(1) weights for tree ``t``, keyed by global row."""
        uniform = np.empty(len(self.codes))
        keyed_uniform(self.config.seed, BOOTSTRAP_STREAM + t, self.dataset.train.start,
                      uniform)
        weights = np.empty(len(self.codes))
        poisson_weights(uniform, weights)
        return weights

    def _add_out_of_bag(self, t: int, weights: np.ndarray) -> None:
        """Add tree ``t``'s leaf values to the out-of-bag sums of the rows it left out."""
        out = weights == 0
        leaf = np.zeros((len(self.codes), self.outputs))
        for c in range(self.outputs):
            self.add_tree(self.codes, t, self.trees["value"][t][:, c], leaf, c)
        self.oob_sums[out] += leaf[out]
        self.oob_counts[out] += 1

    def _add_tree(self, t: int) -> None:
        value = self.trees["value"][t]
        for c in range(self.outputs):
            self.add_tree(self.codes, t, value[:, c], self.sums, c)
            self.add_tree(self.test_codes, t, value[:, c], self.test_sums, c)

    # -- the loop's hooks -------------------------------------------------------------------
    @property
    def total_units(self) -> int:
        return self.config.trees

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        self.weights = self._bootstrap(unit.index)
        # leaf value = -lr * G / H with lr = -1: the weighted mean of the targets
        self.grad = self.targets * self.weights[:, None]
        message = np.zeros(self.outputs + 2)
        message[:self.outputs] = np.abs(self.grad).max(axis=0, initial=0.0)
        message[self.outputs] = self.weights.max(initial=0.0)
        message[-1] = 1.0 if stop_requested() else 0.0
        self.message = message

    def reduce(self, unit: Unit) -> bool:
        top = global_max(self.comm, self.message)
        rows = self.dataset.train.n_total
        scales = (np.array([fixed_scale(v, rows) for v in top[:self.outputs]]),
                  np.array([fixed_scale(top[self.outputs], rows)]))
        seed, d, count = self.config.seed, self.dataset.n_features, self.max_features

        def features(_: int, node: int) -> np.ndarray:
            mask = np.zeros(d, dtype=bool)
            mask[np.random.default_rng([seed, unit.index, node]).choice(
                d, size=count, replace=False)] = True
            return mask

        (self.grown,), _ = grow_trees(
            self.comm, codes=self.codes, grad=self.grad, hess=self.weights[:, None],
            scales=scales, bins=self.bins, n_bins=self.n_bins, options=self.options,
            outputs=self.outputs, counts=self.weights, features=features)
        return bool(top[-1] > 0)

    def apply(self, unit: Unit) -> None:
        self.store_tree(unit.index, self.grown)
        self._add_tree(unit.index)
        if self.config.oob_score:
            self._add_out_of_bag(unit.index, self.weights)
        self.done = unit.index + 1

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        train, test = self.dataset.train, self.dataset.test
        metrics: dict[str, Any] = {"tree": unit.index + 1}
        for split, sums, y, rows in (("train", self.sums, train.y, train.n_total),
                                     ("test", self.test_sums, test.y, test.n_total)):
            if rows == 0:
                continue
            if self.classify:
                score = (np.argmax(sums, axis=1) == y).astype(np.float64)
                name = "accuracy"
            else:
                score = np.square(sums[:, 0] / self.done - y)
                name = "loss"
            metrics[f"{split}_{name}"] = float(
                exact_column_sums(self.comm, score[:, None], rows)[0] / rows)
        if self.config.oob_score:
            metrics["oob_score"] = self.oob_score = self._out_of_bag_score()
        metrics["samples"] = train.n_total
        return metrics

    def _out_of_bag_score(self) -> float | None:
        """Collective: accuracy (classifier) or R² (regressor) of the out-of-bag
        predictions over the rows some tree left out; None while there are none."""
        y, rows = self.dataset.train.y, self.dataset.train.n_total
        seen = self.oob_counts > 0
        if self.classify:
            hit = seen & (np.argmax(self.oob_sums, axis=1) == y)
            total = exact_column_sums(self.comm, np.column_stack([seen, hit]).astype(float),
                                      rows)
            return None if total[0] == 0 else float(total[1] / total[0])
        y = np.asarray(y, dtype=np.float64)
        mean = np.divide(self.oob_sums[:, 0], self.oob_counts, out=np.zeros(len(y)),
                         where=seen)
        first = exact_column_sums(self.comm, np.column_stack([seen, seen * y]), rows)
        if first[0] == 0:
            return None
        centre = first[1] / first[0]
        second = exact_column_sums(self.comm, np.column_stack(
            [seen * np.square(mean - y), seen * np.square(y - centre)]), rows)
        return float(1.0 - second[0] / second[1]) if second[1] > 0 else None

    # -- checkpoints and outputs ------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({name: value.copy() for name, value in self.trees.items()},
                {"trees_done": self.done})

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.restore_trees(arrays)
        self.done = int(meta["trees_done"])
        self._reset_sums()

    def model_arrays(self) -> dict[str, np.ndarray]:
        done = max(self.done, 1)
        return {**self.saved_trees(self.done),
                "value": self.trees["value"][:self.done] / done,  # the forest averages
                "column": np.zeros(self.done, dtype=np.int64),
                "base": np.zeros(self.outputs)}

    def describe(self) -> dict[str, Any]:
        return {"name": "forest", "loss": "squared" if not self.classify else "gini",
                "trees": self.done, "max_depth": self.config.max_depth,
                "max_leaves": self.config.max_leaves,
                "max_features": self.max_features, "bins": self.n_bins,
                **({"oob_score": self.oob_score} if self.config.oob_score else {})}
