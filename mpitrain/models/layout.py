"""Parameter layout: one flat contiguous buffer with a named view per layer tensor.

A model is a stack of dense layers ``dims = [d, h1, ..., hm, k]``; layer ``l`` holds
``W{l}`` of shape ``(dims[l], dims[l+1])`` followed by ``b{l}`` of shape ``(dims[l+1],)``.
The same layout serves parameters, gradients and optimizer state, so a whole gradient is
one message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpitrain.kernels.network import BINARY_XENT, SOFTMAX_XENT, SQUARED

_LOSS = {"linear": SQUARED, "logistic": BINARY_XENT, "softmax": SOFTMAX_XENT,
         "mlp": SOFTMAX_XENT}
MODELS = tuple(_LOSS)


def loss_kind(model: str) -> int:
    """The kernels' loss constant for a model name."""
    return _LOSS[model]


def task_of(model: str) -> str:
    """'regression' for linear, 'classification' for the others."""
    return "regression" if model == "linear" else "classification"


def network_dims(model: str, *, n_features: int, n_classes: int,
                 hidden: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Layer sizes of a model: one output for linear/logistic, one per class otherwise."""
    if model in ("linear", "logistic"):
        return (n_features, 1)
    if model == "softmax":
        return (n_features, n_classes)
    return (n_features, *hidden, n_classes)


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of every tensor in the flat buffer."""

    dims: tuple[int, ...]

    @property
    def tensors(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, offset) of each tensor, in buffer order."""
        out = []
        offset = 0
        for layer, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:],
                                                      strict=True)):
            for name, shape in ((f"W{layer}", (fan_in, fan_out)), (f"b{layer}", (fan_out,))):
                out.append((name, shape, offset))
                offset += int(np.prod(shape))
        return out

    @property
    def size(self) -> int:
        """Number of parameters."""
        return sum(int(np.prod(shape)) for _, shape, _ in self.tensors)

    @property
    def dims_array(self) -> np.ndarray:
        """dims as the int64 array the kernels take."""
        return np.asarray(self.dims, dtype=np.int64)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (no copies) into ``flat[:size]``."""
        return {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
                for name, shape, offset in self.tensors}
