"""How ``--tensor-parallel T`` cuts a dense network over the ``T`` ranks of a group.

Megatron-style: each hidden layer pair ``(2p, 2p + 1)`` of ``dims = [d, h1, ..., k]`` is
split, the first layer by columns (rank ``t`` holds ``W[:, c0:c1]`` and ``b[c0:c1]`` of
its block of the hidden units) and the second by rows (``W[c0:c1, :]``; its bias is
replicated, added once after the group sum). A last layer left without a partner (an odd
number of layers) is replicated. Blocks follow :func:`mpitrain.collectives.ring.chunk_offsets`
(the first ``h % T`` ranks hold one unit more). Every rank's parameters are one flat buffer
in its own :class:`~mpitrain.models.Layout` (``W0, b0, W1, b1, ...`` with the local shapes);
:meth:`TensorSplit.take` and :meth:`TensorSplit.put` move blocks between it and the full
model's layout. No MPI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpitrain.collectives.ring import chunk_offsets
from mpitrain.models import Layout

COLUMNS, ROWS, WHOLE = "columns", "rows", "whole"


@dataclass(frozen=True)
class TensorSplit:
    """The split of the network ``dims`` over ``ranks`` tensor-parallel ranks."""

    dims: tuple[int, ...]
    ranks: int

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per layer: split by ``columns``, by ``rows``, or ``whole`` (replicated)."""
        layers = len(self.dims) - 1
        return tuple(ROWS if layer % 2 else COLUMNS if layer + 1 < layers else WHOLE
                     for layer in range(layers))

    def block(self, layer: int, rank: int) -> tuple[int, int]:
        """``[start, stop)`` of the hidden units of layer ``layer``'s split that ``rank``
        holds (the columns of a column-split layer, the rows of a row-split one)."""
        width = self.dims[layer + 1] if self.kinds[layer] == COLUMNS else self.dims[layer]
        offsets = chunk_offsets(width, self.ranks)
        return int(offsets[rank]), int(offsets[rank + 1])

    def shapes(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Local tensor shapes of ``rank``, in buffer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer, kind in enumerate(self.kinds):
            fan_in, fan_out = self.dims[layer], self.dims[layer + 1]
            start, stop = self.block(layer, rank) if kind != WHOLE else (0, 0)
            if kind == COLUMNS:
                fan_out = stop - start
            elif kind == ROWS:
                fan_in = stop - start
            shapes[f"W{layer}"] = (fan_in, fan_out)
            shapes[f"b{layer}"] = (fan_out,)
        return shapes

    def layout(self, rank: int) -> Layout:
        """The flat buffer of ``rank``'s parameters (and gradients, optimizer state)."""
        return Layout.of(self.shapes(rank))

    def smallest_hidden(self) -> int:
        """The narrowest split hidden layer (each rank needs at least one unit of it)."""
        return min(self.dims[layer + 1] for layer, kind in enumerate(self.kinds)
                   if kind == COLUMNS)

    def _index(self, layer: int, rank: int) -> tuple[tuple[slice, ...], slice]:
        """Where ``rank``'s W and b blocks of ``layer`` sit in the full tensors."""
        kind = self.kinds[layer]
        every = slice(None)
        if kind == WHOLE:
            return (every, every), every
        block = slice(*self.block(layer, rank))
        if kind == COLUMNS:
            return (every, block), block
        return (block, every), every

    def take(self, rank: int, full: dict[str, np.ndarray],
             local: dict[str, np.ndarray]) -> None:
        """``local`` (views of ``rank``'s layout) <- its blocks of ``full`` (the model's)."""
        for layer in range(len(self.kinds)):
            w, b = self._index(layer, rank)
            local[f"W{layer}"][...] = full[f"W{layer}"][w]
            local[f"b{layer}"][...] = full[f"b{layer}"][b]

    def put(self, rank: int, local: dict[str, np.ndarray],
            full: dict[str, np.ndarray]) -> None:
        """``full`` <- ``rank``'s blocks from ``local`` (replicated tensors copied too)."""
        for layer in range(len(self.kinds)):
            w, b = self._index(layer, rank)
            full[f"W{layer}"][w] = local[f"W{layer}"]
            full[f"b{layer}"][b] = local[f"b{layer}"]

    def split_elements(self, rank: int) -> tuple[int, int]:
        """(elements of the split layers' tensors ``rank`` holds, their full count)."""
        local = self.shapes(rank)
        held = total = 0
        for layer, kind in enumerate(self.kinds):
            if kind == WHOLE:
                continue
            fan_in, fan_out = self.dims[layer], self.dims[layer + 1]
            held += int(np.prod(local[f"W{layer}"])) + int(np.prod(local[f"b{layer}"]))
            total += fan_in * fan_out + fan_out
        return held, total
