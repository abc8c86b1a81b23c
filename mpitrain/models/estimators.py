"""Saved tree ensembles and k-means models: the arrays of model.npz and their predictions.

Not gradient models (no flat parameter buffer, no model class): a ``meta_kind`` entry
(``gbdt`` or ``kmeans``) says which, the arrays are stored by name, readable with
``allow_pickle=False``. ``gbdt``: trees as node arrays, one row per tree (``feature``,
``threshold``, ``left``, ``right``, ``missing_left``: where NaN goes, ``value``;
``column``: the class each tree scores; ``base``: the initial scores) and ``loss``; models
saved before ``left``/``right`` existed are in heap order (children of ``i``: ``2i + 1``,
``2i + 2``). ``forest``: the same arrays, ``value`` (trees, nodes, outputs)
already divided by the number of trees, so the sum is the forest's average (class shares
or the regression value). ``kmeans``: ``centers`` (k, d); ``predict`` gives a row's cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpitrain.kernels.trees import nearest, predict_trees

from .bound import ModelError

KINDS = ("gbdt", "forest", "kmeans")


@dataclass(frozen=True, kw_only=True)
class SavedEstimator:
    """A trained tree ensemble or k-means model as stored in model.npz."""

    kind: str
    arrays: dict[str, np.ndarray]
    n_features: int
    n_classes: int  # 0: regression (gbdt squared loss) or clustering
    info: dict[str, Any]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    classes: np.ndarray | None = None
    version: str = ""

    @property
    def regression(self) -> bool:
        """No class probabilities: a regressor, or k-means (clusters)."""
        return self.kind == "kmeans" or self.info.get("loss") == "squared"

    @property
    def missing_values(self) -> bool:
        """Whether rows may have missing values (NaN): trees learn where they go."""
        return self.kind != "kmeans"

    @property
    def task(self) -> str:
        return "regression" if self.regression else "classification"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64)  # thresholds and centers compare in float64

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """gbdt: the raw scores (n, columns) of standardised rows ``X`` (float64)."""
        base = self.arrays["base"]
        out = np.tile(base, (len(X), 1))
        predict_trees(X, self.routing(), self.arrays["value"], self.arrays["column"], out)
        return out

    def routing(self) -> tuple[np.ndarray, ...]:
        """(feature, threshold, left, right, missing_left) of every tree; heap order for
        models saved without children (NaN then went right)."""
        arrays = self.arrays
        feature = arrays["feature"]
        if "left" in arrays:
            return (feature, arrays["threshold"], arrays["left"], arrays["right"],
                    arrays["missing_left"])
        heap = np.broadcast_to(np.arange(feature.shape[1], dtype=np.int32), feature.shape)
        return (feature, arrays["threshold"], np.ascontiguousarray(2 * heap + 1),
                np.ascontiguousarray(2 * heap + 2), np.zeros(feature.shape, np.int8))

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """What ``predict`` returns before class names: cluster, class or value."""
        if self.kind == "kmeans":
            labels, dist = np.empty(len(X), np.int64), np.empty(len(X))
            nearest(X, self.arrays["centers"], labels, dist)
            return labels
        raw = self.raw_scores(X)
        if self.info["loss"] == "squared":
            return raw[:, 0]
        if self.kind == "forest":
            return np.argmax(raw, axis=1).astype(np.int64)
        if self.info["loss"] == "logistic":
            return (raw[:, 0] > 0).astype(np.int64)
        return np.argmax(raw, axis=1).astype(np.int64)

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        if self.regression:
            raise ModelError(f"predict_proba needs a classifier, but this {self.kind} "
                             "model is not one; use predict")
        raw = self.raw_scores(X)
        if self.kind == "forest":
            return raw  # averaged class shares
        if self.info["loss"] == "logistic":
            p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            return np.column_stack([1.0 - p, p])
        raw = np.exp(raw - raw.max(axis=1, keepdims=True))
        return raw / raw.sum(axis=1, keepdims=True)


def save_estimator(path: Path, saved: SavedEstimator) -> None:
    """Write an estimator's arrays and metadata (``meta_*``) to ``path``."""
    out = {name: np.asarray(value) for name, value in saved.arrays.items()}
    out.update(meta_kind=np.array(saved.kind), meta_model=np.array(saved.kind),
               meta_arrays=np.array(sorted(saved.arrays)),
               meta_info=np.array(json.dumps(saved.info)),
               meta_n_features=np.array(saved.n_features),
               meta_n_classes=np.array(saved.n_classes), meta_version=np.array(saved.version))
    if saved.mean is not None and saved.std is not None:
        out["meta_mean"], out["meta_std"] = np.asarray(saved.mean), np.asarray(saved.std)
    if saved.classes is not None:
        out["meta_classes"] = np.asarray(saved.classes).astype(str)
    with open(path, "wb") as file:
        np.savez(file, **out)


def read_estimator(data: Any) -> SavedEstimator:
    """The estimator in an open model.npz (an ``np.load`` result with ``meta_kind``)."""
    return SavedEstimator(
        kind=str(data["meta_kind"]),
        arrays={str(name): data[str(name)] for name in data["meta_arrays"]},
        n_features=int(data["meta_n_features"]), n_classes=int(data["meta_n_classes"]),
        info=json.loads(str(data["meta_info"])),
        mean=data["meta_mean"] if "meta_mean" in data else None,
        std=data["meta_std"] if "meta_std" in data else None,
        classes=data["meta_classes"] if "meta_classes" in data else None,
        version=str(data["meta_version"]))
