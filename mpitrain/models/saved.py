"""model.npz: named parameter arrays plus metadata, readable with allow_pickle=False.

Metadata (``meta_*`` entries): the model's name (a built-in such as ``mlp`` or a user's
``module:Class``) and constructor options as JSON, so :meth:`SavedModel.build` re-creates
the model object; the data's feature and class counts; the standardisation; the class
names when the labels were strings; the feature hashing (``--hash-bits``, ``--hash-seed``)
when the features were hashed names; the mpitrain version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bound import BoundModel, ModelError
from .estimators import SavedEstimator, read_estimator
from .layout import Layout
from .registry import make_model, options_text


@dataclass(frozen=True, kw_only=True)
class SavedModel:
    """A trained model as stored in model.npz."""

    model: str
    params: dict[str, np.ndarray]
    n_features: int
    n_classes: int
    options: dict[str, Any] = field(default_factory=dict)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    classes: np.ndarray | None = None
    version: str = ""
    #: ``--hash-bits`` / ``--hash-seed`` of the training data (0 bits: not hashed):
    #: ``mpitrain predict`` hashes the feature names of new rows the same way.
    hash_bits: int = 0
    hash_seed: int = 0

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def build(self) -> BoundModel:
        """The model object, bound to the stored feature and class counts (imports a
        user's class; ModelError with the reason when it cannot)."""
        try:
            model = make_model(self.model, options=self.options)
        except ModelError as exc:
            raise ModelError(f"this model.npz was trained with {self.model!r}, which cannot "
                             f"be re-created here: {exc}") from None
        bound = BoundModel(model, self.n_features, self.n_classes)
        stored = {name: tuple(array.shape) for name, array in self.params.items()}
        if stored != dict(bound.layout.shapes):
            raise ModelError(f"this model.npz holds tensors {stored} but {self.model} "
                             f"with options {self.options} has {dict(bound.layout.shapes)}")
        return bound

    def flat(self, layout: Layout) -> np.ndarray:
        """The parameters as one flat buffer in ``layout``'s order."""
        return np.concatenate([self.params[name].ravel() for name, _ in layout.shapes])


def trained_model(model: BoundModel, flat: np.ndarray, *, mean: np.ndarray | None,
                  std: np.ndarray | None, version: str,
                  classes: np.ndarray | None = None, hash_bits: int = 0,
                  hash_seed: int = 0) -> SavedModel:
    """The model trained into ``flat`` as model.npz stores it (parameters are views of
    ``flat``), ready for :func:`~mpitrain.models.predict.predict` without a file."""
    return SavedModel(model=model.name, params=model.layout.views(flat),
                      options=json.loads(options_text(model.model)),
                      n_features=model.n_features, n_classes=model.n_classes, mean=mean,
                      std=std, version=version,
                      classes=None if classes is None else np.asarray(classes).astype(str),
                      hash_bits=hash_bits, hash_seed=hash_seed)


def save_model(path: Path, saved: SavedModel) -> None:
    """Write parameters (by tensor name) and metadata (``meta_*``) to ``path``."""
    arrays: dict[str, np.ndarray] = dict(saved.params)
    arrays["meta_model"] = np.array(saved.model)
    arrays["meta_options"] = np.array(json.dumps(saved.options))
    arrays["meta_tensors"] = np.array(list(saved.params))
    arrays["meta_n_features"] = np.array(saved.n_features)
    arrays["meta_n_classes"] = np.array(saved.n_classes)
    arrays["meta_version"] = np.array(saved.version)
    if saved.mean is not None and saved.std is not None:
        arrays["meta_mean"] = np.asarray(saved.mean)
        arrays["meta_std"] = np.asarray(saved.std)
    if saved.classes is not None:
        arrays["meta_classes"] = saved.classes
    if saved.hash_bits:
        arrays["meta_hash_bits"] = np.array(saved.hash_bits)
        arrays["meta_hash_seed"] = np.array(saved.hash_seed, dtype=np.int64)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def load_model(path: str | Path) -> SavedModel | SavedEstimator:
    """Read a model.npz written by :func:`save_model` (or by mpitrain before 0.3, which
    stored built-in networks by their layer sizes), or a tree ensemble / k-means model
    (:mod:`.estimators`)."""
    with np.load(path, allow_pickle=False) as data:
        if "meta_kind" in data:
            return read_estimator(data)
        name = str(data["meta_model"])
        if "meta_tensors" in data:
            names = [str(n) for n in data["meta_tensors"]]
            options = json.loads(str(data["meta_options"]))
            n_features = int(data["meta_n_features"])
            n_classes = int(data["meta_n_classes"])
        else:  # layer sizes only: a built-in dense network
            dims = [int(d) for d in data["meta_dims"]]
            names = [name for name, _ in Layout.dense(tuple(dims)).shapes]
            options = {"hidden": dims[1:-1]} if name == "mlp" else {}
            n_features = dims[0]
            n_classes = {"linear": 1, "logistic": 2}.get(name, dims[-1])
        return SavedModel(
            model=name, params={n: data[n] for n in names}, options=options,
            n_features=n_features, n_classes=n_classes,
            mean=data["meta_mean"] if "meta_mean" in data else None,
            std=data["meta_std"] if "meta_std" in data else None,
            classes=data["meta_classes"] if "meta_classes" in data else None,
            version=str(data["meta_version"]),
            hash_bits=int(data["meta_hash_bits"]) if "meta_hash_bits" in data else 0,
            hash_seed=int(data["meta_hash_seed"]) if "meta_hash_seed" in data else 0)

