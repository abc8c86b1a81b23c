"""Predictions from a trained model, for scripts and notebooks (no MPI needed).

``predict`` returns classes (their names when the labels were strings) or regression
values; ``predict_proba`` class probabilities. Both take a saved model (model.npz path or
:class:`SavedModel`) and raw features, one row (1-D) or many (2-D); the model's stored
standardisation is applied first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bound import BoundModel, ModelError
from .estimators import SavedEstimator
from .saved import SavedModel, load_model

PREDICT_ROWS = 4096


def predict(model: SavedModel | SavedEstimator | str | Path, X: np.ndarray) -> np.ndarray:
    """Class of each row (the arg-max of its probabilities; names when stored), its
    regression value, or (k-means) its cluster. One 1-D row gives one value."""
    saved = model if isinstance(model, SavedModel | SavedEstimator) else load_model(model)
    if isinstance(saved, SavedEstimator):
        out = saved.outputs(_rows(saved, saved.n_features, np.float64, X))
        if saved.classes is not None and not saved.regression:
            out = np.asarray(saved.classes)[out]
        return out[0] if np.ndim(X) == 1 else out
    saved, bound = _load(saved)
    scores = _scores(saved, bound, X)
    if bound.regression:
        out = scores[:, 0]
    else:
        out = np.argmax(scores, axis=1).astype(np.int64)
        if saved.classes is not None:
            out = np.asarray(saved.classes)[out]
    return out[0] if np.ndim(X) == 1 else out


def predict_proba(model: SavedModel | SavedEstimator | str | Path,
                  X: np.ndarray) -> np.ndarray:
    """Class probabilities, one row per input row and one column per class (in the order
    of the class indices, or of the stored class names)."""
    saved = model if isinstance(model, SavedModel | SavedEstimator) else load_model(model)
    if isinstance(saved, SavedEstimator):
        out = saved.probabilities(_rows(saved, saved.n_features, np.float64, X))
        return out[0] if np.ndim(X) == 1 else out
    saved, bound = _load(saved)
    if bound.regression:
        raise ModelError(f"predict_proba needs a classifier, but {bound.name} is a "
                         "regression model; use predict")
    scores = _scores(saved, bound, X)
    return scores[0] if np.ndim(X) == 1 else scores


def _load(saved: SavedModel) -> tuple[SavedModel, BoundModel]:
    return saved, saved.build()


def _rows(saved: SavedModel | SavedEstimator, n_features: int, dtype: np.dtype,
          X: np.ndarray) -> np.ndarray:
    """``X`` as C-contiguous rows of ``dtype`` (checked, standardised as in training)."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2:
        raise ModelError(f"X must be one row (1-D) or rows of features (2-D); got an array "
                         f"of shape {X.shape}")
    if X.shape[1] != n_features:
        raise ModelError(f"X has {X.shape[1]} features per row but the model was trained "
                         f"on {n_features}")
    try:
        X = X.astype(dtype)
    except (TypeError, ValueError):
        raise ModelError(f"X must hold numbers (got dtype {X.dtype})") from None
    if saved.mean is not None and saved.std is not None:
        X = (X - saved.mean.astype(dtype)) / saved.std.astype(dtype)
    return np.ascontiguousarray(X)


def _scores(saved: SavedModel, bound: BoundModel, X: np.ndarray) -> np.ndarray:
    """The predict kernel's output for every row of ``X`` (checked and standardised)."""
    dtype = saved.dtype
    X = _rows(saved, bound.n_features, dtype, X)
    params = saved.flat(bound.layout).astype(dtype)
    out = np.empty((len(X), bound.outputs), dtype=dtype)
    rows = max(1, min(PREDICT_ROWS, len(X)))
    work = bound.workspace(rows, dtype)
    order = np.arange(len(X), dtype=np.int64)
    for start in range(0, len(X), rows):
        chunk = order[start:start + rows]
        bound.predict_kernel(params, X, chunk, out[start:start + rows], work, bound.spec)
    return out
