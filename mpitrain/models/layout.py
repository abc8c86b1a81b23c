"""Parameter layout: one flat contiguous buffer with a named view per tensor.

A model declares named tensor shapes (:meth:`mpitrain.models.Model.shapes`); they are laid
out one after another, in that order, in one flat buffer. The same layout serves
parameters, gradients and optimizer state, so a whole gradient is one message.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of every tensor in the flat buffer."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, shapes: Mapping[str, tuple[int, ...]]) -> Layout:
        """Layout of named shapes, in the mapping's order."""
        return cls(tuple((str(name), tuple(int(d) for d in shape))
                         for name, shape in shapes.items()))

    @classmethod
    def dense(cls, dims: tuple[int, ...]) -> Layout:
        """A stack of dense layers ``dims = [d, h1, ..., k]``: ``W{l}`` of shape
        ``(dims[l], dims[l+1])`` then ``b{l}`` of shape ``(dims[l+1],)`` per layer."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
            shapes[f"W{layer}"] = (fan_in, fan_out)
            shapes[f"b{layer}"] = (fan_out,)
        return cls.of(shapes)

    @property
    def tensors(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, offset) of each tensor, in buffer order."""
        out = []
        offset = 0
        for name, shape in self.shapes:
            out.append((name, shape, offset))
            offset += int(np.prod(shape))
        return out

    @property
    def size(self) -> int:
        """Number of parameters."""
        return sum(int(np.prod(shape)) for _, shape in self.shapes)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (no copies) into ``flat[:size]``."""
        return {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
                for name, shape, offset in self.tensors}

    def describe(self) -> str:
        """``W0 (64, 10), b0 (10,)``: for messages."""
        return ", ".join(f"{name} {shape}" for name, shape in self.shapes)
