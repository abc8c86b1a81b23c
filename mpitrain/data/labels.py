"""Class labels given as text (``cat``, ``dog``): which labels are names, and the classes.

A label that parses as a number is a number, anything else is a name, decided label by
label, so the outcome never depends on which rank read which row. When no rank has a
name, labels are class indices as before. Otherwise every distinct label is a class:
numbers first in numeric order (written as ``1``, ``0.5``), then the names in code-point
order (Python's ``sorted``), agreed over all ranks with buffer collectives, and the labels
become indices into that list.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from mpitrain.data.base import Block, Source
from mpitrain.errors import agree, shared_error

#: Most distinct labels accepted when some are names (each becomes an output of the model).
MAX_CLASSES = 65536


def split_labels(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Local: the labels of some rows, given as text → ``(y, label_names, label_codes)`` of
    a :class:`Block` (names and codes None when every label is a number)."""
    seen: dict[str, int] = {}
    index = np.fromiter((seen.setdefault(t, len(seen)) for t in texts), dtype=np.int64,
                        count=len(texts))
    texts = list(seen)
    values = np.empty(len(texts))
    name_id = np.full(len(texts), -1, dtype=np.int64)
    names: list[str] = []
    for i, text in enumerate(texts):
        try:
            values[i] = float(text)
        except ValueError:
            values[i] = math.nan
            name_id[i] = len(names)
            names.append(text)
    y = values[index] if len(index) else np.empty(0)
    if not names:
        return y, None, None
    return y, np.array(names, dtype=str), name_id[index]


def as_texts(values: Sequence[object]) -> list[str]:
    """Labels of a string array as text (bytes are decoded as UTF-8)."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def name_labels(
    comm: MPI.Comm, parts: list[tuple[Block, Source]]
) -> tuple[list[Block], np.ndarray | None]:
    """Collective: turn labels into class indices when any rank has a name among them.

    Returns the blocks (labels as indices when there are names) and the class names, or
    None when every label of every rank is a number (then labels are indices already).
    Every rank must pass the same sources in the same order.
    """
    blocks = [block for block, _ in parts]
    names = _union([b.label_names for b in blocks if b.label_names is not None])
    if not _global_max(comm, int(len(names) > 0)):
        return blocks, None
    numbers = _union([b.y[_numeric(b)] for b in blocks])
    source = parts[0][1]
    if _global_max(comm, len(names) + len(numbers)) > MAX_CLASSES:
        raise shared_error(  # every rank holds the same reduced count
            f"{source.option}: {source.quoted} has more than {MAX_CLASSES} distinct labels, "
            "some of them not numbers (expected class names such as 'cat' and 'dog')")
    message = None
    for block, part in parts:
        bad = _numeric(block) & ~np.isfinite(block.y)
        if bad.any():
            i = int(np.argmax(bad))
            message = (f"{part.option}: {part.quoted} has label {block.y[i]:g} in "
                       f"{block.where(i)} (expected a class name or a finite number)")
            break
    agree(comm, message)
    all_numbers = np.unique(_allgather_floats(comm, numbers))
    all_names = sorted(set(allgather_strings(comm, names.tolist())))
    sorted_names = np.array(all_names, dtype=str)
    mapped = []
    for block in blocks:
        y = np.searchsorted(all_numbers, block.y).astype(np.float64)
        if block.label_names is not None and block.label_codes is not None:
            at = np.searchsorted(sorted_names, block.label_names) + len(all_numbers)
            named = block.label_codes >= 0
            y[named] = at[block.label_codes[named]]
        mapped.append(dataclasses.replace(block, y=y, label_names=None, label_codes=None))
    classes = np.array([_number_text(v) for v in all_numbers] + all_names, dtype=str)
    return mapped, classes


def _global_max(comm: MPI.Comm, value: int) -> int:
    """Collective: the largest ``value`` over the ranks."""
    local = np.array([value], dtype=np.int64)
    largest = np.empty_like(local)
    comm.Allreduce(local, largest, op=MPI.MAX)
    return int(largest[0])


def _numeric(block: Block) -> np.ndarray:
    """Rows of a block whose label is a number (finite or not)."""
    if block.label_codes is None:
        return np.ones(len(block.y), dtype=bool)
    return block.label_codes < 0


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.empty(0)
    return np.unique(np.concatenate(arrays))


def _number_text(value: float) -> str:
    """A numeric class label as a name: ``1`` for 1.0, ``0.5`` for 0.5."""
    return str(int(value)) if value == int(value) else repr(float(value))


def _allgather_floats(comm: MPI.Comm, local: np.ndarray) -> np.ndarray:
    """Collective: every rank's float64 values, concatenated in rank order."""
    local = np.ascontiguousarray(local[np.isfinite(local)], dtype=np.float64)
    counts = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([len(local)], dtype=np.int64), counts)
    out = np.empty(int(counts.sum()), dtype=np.float64)
    comm.Allgatherv(local, [out, counts])
    return out


def allgather_strings(comm: MPI.Comm, strings: list[str]) -> list[str]:
    """Collective: every rank's strings, in rank order, with buffer calls (UTF-8 bytes)."""
    encoded = [s.encode("utf-8") for s in strings]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    sizes = np.array([len(lengths), len(data)], dtype=np.int64)
    all_sizes = np.empty((comm.Get_size(), 2), dtype=np.int64)
    comm.Allgather(sizes, all_sizes)
    all_lengths = np.empty(int(all_sizes[:, 0].sum()), dtype=np.int64)
    comm.Allgatherv(lengths, [all_lengths, all_sizes[:, 0]])
    all_data = np.empty(int(all_sizes[:, 1].sum()), dtype=np.uint8)
    comm.Allgatherv(data, [all_data, all_sizes[:, 1]])
    raw = all_data.tobytes()
    ends = np.cumsum(all_lengths)
    return [raw[end - n : end].decode("utf-8") for n, end in zip(all_lengths, ends, strict=True)]
