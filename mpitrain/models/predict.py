"""Predictions from a trained model, for scripts and notebooks (no MPI needed).

``predict`` returns classes (their names when the labels were strings) or regression
values; ``predict_proba`` class probabilities. Both take a saved model (model.npz path or
:class:`SavedModel`) and raw features, one row (1-D) or many (2-D); the model's stored
standardisation is applied first. ``X`` may also be sparse (a scipy.sparse matrix): for
``linear``, ``logistic`` and ``softmax`` trained without standardisation (as ``--sparse``
trains them) the CSR kernels predict from it as it is, never dense; other models see it
made dense a chunk of :data:`PREDICT_ROWS` rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from .bound import BoundModel, ModelError
from .estimators import SavedEstimator
from .saved import SavedModel, load_model
from .sparse import has_sparse_variant, sparse_variant

PREDICT_ROWS = 4096


def predict(model: SavedModel | SavedEstimator | str | Path, X: Any) -> np.ndarray:
    """Class of each row (the arg-max of its probabilities; names when stored), its
    regression value, or (k-means) its cluster. One 1-D row gives one value. ``X`` may be
    a scipy.sparse matrix (see :func:`sparse_rows`)."""
    saved = model if isinstance(model, SavedModel | SavedEstimator) else load_model(model)
    if isinstance(saved, SavedEstimator):
        out = _estimator(saved, saved.outputs, X)
        if saved.classes is not None and not saved.regression:
            out = np.asarray(saved.classes)[out]
        return out[0] if _one_row(X) else out
    saved, bound = _load(saved)
    scores = _scores(saved, bound, X)
    if bound.regression:
        out = scores[:, 0]
    else:
        out = np.argmax(scores, axis=1).astype(np.int64)
        if saved.classes is not None:
            out = np.asarray(saved.classes)[out]
    return out[0] if _one_row(X) else out


def predict_proba(model: SavedModel | SavedEstimator | str | Path, X: Any) -> np.ndarray:
    """Class probabilities, one row per input row and one column per class (in the order
    of the class indices, or of the stored class names). ``X`` may be a scipy.sparse
    matrix."""
    saved = model if isinstance(model, SavedModel | SavedEstimator) else load_model(model)
    if isinstance(saved, SavedEstimator):
        out = _estimator(saved, saved.probabilities, X)
        return out[0] if _one_row(X) else out
    saved, bound = _load(saved)
    if bound.regression:
        raise ModelError(f"predict_proba needs a classifier, but {bound.name} is a "
                         "regression model; use predict")
    scores = _scores(saved, bound, X)
    return scores[0] if _one_row(X) else scores


class SparseRows:
    """Rows in CSR form as the sparse kernels take them (``arrays``), with their shape."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 shape: tuple[int, int]) -> None:
        self.arrays = (data, indices, indptr)
        self.shape = shape

    def dense(self, start: int, stop: int, dtype: np.dtype) -> np.ndarray:
        """Rows ``start:stop`` as a dense array."""
        data, indices, indptr = self.arrays
        lo, hi = int(indptr[start]), int(indptr[stop])
        out = np.zeros((stop - start, self.shape[1]), dtype=dtype)
        rows = np.repeat(np.arange(stop - start), np.diff(indptr[start:stop + 1]))
        np.add.at(out, (rows, indices[lo:hi]), data[lo:hi])
        return out


def sparse_rows(X: Any, n_features: int) -> SparseRows | None:
    """``X`` as CSR rows when it is sparse: a scipy.sparse matrix or array (any format;
    repeated entries add up, as in scipy), or any object with CSR ``data``, ``indices``,
    ``indptr`` and ``shape`` (mpitrain's own CSR rows); None for dense ``X``."""
    if scipy.sparse.issparse(X):
        X = X.tocsr()
    elif not all(hasattr(X, name) for name in ("data", "indices", "indptr", "shape")):
        return None
    if len(X.shape) != 2:
        raise ModelError(f"X must be rows of features (2-D); got a sparse matrix of shape "
                         f"{X.shape}")
    if X.shape[1] != n_features:
        raise ModelError(f"X has {X.shape[1]} features per row but the model was trained "
                         f"on {n_features}")
    data = np.asarray(X.data)
    if data.dtype.kind not in "biuf":
        raise ModelError(f"X must hold numbers (got dtype {data.dtype})")
    indices = np.asarray(X.indices)
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return SparseRows(data, indices, np.asarray(X.indptr, dtype=np.int64),
                      (int(X.shape[0]), int(X.shape[1])))


def _one_row(X: Any) -> bool:
    """A dense 1-D row (its prediction is one value, not an array of one)."""
    return not scipy.sparse.issparse(X) and not hasattr(X, "indptr") and np.ndim(X) == 1


def _estimator(saved: SavedEstimator, method: Callable[[np.ndarray], np.ndarray],
               X: Any) -> np.ndarray:
    """A tree ensemble's or k-means' ``method`` on ``X`` (sparse rows made dense a chunk
    of :data:`PREDICT_ROWS` at a time)."""
    rows = sparse_rows(X, saved.n_features)
    if rows is None:
        return method(_rows(saved, saved.n_features, np.float64, X))
    n = rows.shape[0]
    parts = [method(rows.dense(start, min(n, start + PREDICT_ROWS), np.float64))
             for start in range(0, n, PREDICT_ROWS)]
    return np.concatenate(parts) if parts else method(np.zeros((0, saved.n_features)))


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


def _scores(saved: SavedModel, bound: BoundModel, X: Any) -> np.ndarray:
    """The predict kernel's output for every row of ``X`` (checked and standardised).

    Sparse ``X`` stays sparse for models with CSR kernels (:mod:`.sparse`) that were
    trained without standardisation; other models get its rows made dense a chunk of
    :data:`PREDICT_ROWS` at a time."""
    dtype = saved.dtype
    sparse = sparse_rows(X, bound.n_features)
    params = saved.flat(bound.layout).astype(dtype)
    if sparse is None:
        X = _rows(saved, bound.n_features, dtype, X)
    elif has_sparse_variant(bound.model) and saved.mean is None:
        data, indices, indptr = sparse.arrays
        X = SparseRows(np.ascontiguousarray(data, dtype=dtype), indices, indptr, sparse.shape)
        bound = BoundModel(sparse_variant(bound.model), bound.n_features, bound.n_classes)
    n = len(X) if sparse is None else sparse.shape[0]
    out = np.empty((n, bound.outputs), dtype=dtype)
    rows = max(1, min(PREDICT_ROWS, n))
    work = bound.workspace(rows, dtype)
    order = np.arange(n, dtype=np.int64)
    for start in range(0, n, rows):
        chunk = order[start:start + rows]
        if sparse is not None and not isinstance(X, SparseRows):  # made dense by chunks
            part = _rows(saved, bound.n_features, dtype,
                         sparse.dense(start, start + len(chunk), dtype))
            bound.predict_kernel(params, part, chunk - start, out[start:start + rows], work,
                                 bound.spec)
        else:
            bound.predict_kernel(params, X, chunk, out[start:start + rows], work, bound.spec)
    return out
