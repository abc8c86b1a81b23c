"""Level-wise growth of regression trees on gradient histograms, one collective per level.

Each level, every rank builds the histograms of the nodes that need one over its own rows
(only the smaller child of each split: the larger is its parent's histogram minus the
smaller's, "histogram subtraction"), all of them in one message, summed with one
allreduce. Gradients travel as fixed-point integers in float64
(:mod:`mpitrain.collectives.fixed`), so the sums, the splits and the leaf values are the
same bits for any number of ranks. The ``k`` trees of a boosting round (one per class)
grow side by side in the same messages. Split rule and leaf values as XGBoost/LightGBM:
``gain = GL²/(HL+λ) + GR²/(HR+λ) − G²/(H+λ)``, leaf ``−lr·G/(H+λ)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import allreduce
from mpitrain.kernels.trees import descend, histograms, quantize

from .binning import Bins


@dataclass(frozen=True, kw_only=True)
class GrowOptions:
    """How trees grow: ``max_depth`` levels of splits; a child needs ``min_samples_leaf``
    rows and ``min_child_weight`` hessian; ``l2`` regularises leaves; ``lr`` scales them."""

    max_depth: int
    l2: float
    min_child_weight: float
    min_samples_leaf: int
    lr: float
    algorithm: str = "auto"


@dataclass
class Tree:
    """One tree in heap order (children of ``i``: ``2i+1``, ``2i+2``); ``feature < 0``
    marks a leaf (or an unused slot)."""

    feature: np.ndarray  # int32
    code: np.ndarray  # int32: rows with code <= code[i] go left
    threshold: np.ndarray  # float64: raw values <= threshold go left
    value: np.ndarray  # float64 leaf values

    @classmethod
    def empty(cls, max_depth: int) -> Tree:
        nodes = 2 ** (max_depth + 1) - 1
        return cls(feature=np.full(nodes, -1, np.int32), code=np.zeros(nodes, np.int32),
                   threshold=np.zeros(nodes), value=np.zeros(nodes))


def grow_trees(comm: MPI.Comm, *, codes: np.ndarray, grad: np.ndarray, hess: np.ndarray,
               scales: tuple[np.ndarray, np.ndarray], bins: Bins, n_bins: int,
               options: GrowOptions) -> tuple[list[Tree], np.ndarray]:
    """Collective: one tree per column of ``grad``/``hess`` (n, k), fitted to this rank's
    binned rows ``codes`` and every other rank's. ``scales``: per column, the fixed-point
    scales of gradients and hessians (agreed by the caller). Returns the trees and each
    row's leaf per tree (k, n)."""
    n, k = grad.shape
    d = codes.shape[1]
    trees = [Tree.empty(options.max_depth) for _ in range(k)]
    nodes = len(trees[0].feature)
    node_of_row = np.zeros((k, n), dtype=np.int64)
    gq, hq = np.empty((k, n)), np.empty((k, n))
    for c in range(k):
        quantize(np.ascontiguousarray(grad[:, c]), float(scales[0][c]), gq[c])
        quantize(np.ascontiguousarray(hess[:, c]), float(scales[1][c]), hq[c])
    # per tree: node → (G, H, count) as fixed-point sums; node → its histogram
    stats = np.zeros((k, nodes, 3))
    hists: list[dict[int, np.ndarray]] = [{} for _ in range(k)]
    build: list[list[int]] = [[0] for _ in range(k)]  # nodes whose histogram is built here
    derive: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]  # (node, parent, sibling)
    for depth in range(options.max_depth):
        slots = [(c, node) for c in range(k) for node in build[c]]
        if not slots and not any(derive):
            break
        message = np.zeros((max(len(slots), 1), d, n_bins, 3))
        slot_of_node = np.full((k, nodes), -1, dtype=np.int64)
        for slot, (c, node) in enumerate(slots):
            slot_of_node[c, node] = slot
        for c in range(k):
            if build[c]:
                histograms(codes, node_of_row[c], slot_of_node[c], gq[c], hq[c], message)
        allreduce(message, comm, algorithm=options.algorithm)
        level: list[list[int]] = [[] for _ in range(k)]
        for slot, (c, node) in enumerate(slots):
            hists[c][node] = message[slot]
            level[c].append(node)
        for c in range(k):
            for node, parent, sibling in derive[c]:
                hists[c][node] = hists[c][parent] - hists[c][sibling]
                level[c].append(node)
            if depth == 0:
                stats[c, 0] = hists[c][0][0].sum(axis=0)
        next_build: list[list[int]] = [[] for _ in range(k)]
        next_derive: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]
        for c in range(k):
            tree = trees[c]
            for node in sorted(level[c]):
                split = _best_split(hists[c][node], stats[c, node], bins,
                                    (float(scales[0][c]), float(scales[1][c])), options)
                if split is None:
                    continue
                feature, code, left = split
                tree.feature[node] = feature
                tree.code[node] = code
                tree.threshold[node] = bins.feature_edges(feature)[code]
                lc, rc = 2 * node + 1, 2 * node + 2
                stats[c, lc] = left
                stats[c, rc] = stats[c, node] - left
                if depth + 1 < options.max_depth:
                    small, large = (lc, rc) if left[2] <= stats[c, rc, 2] else (rc, lc)
                    next_build[c].append(small)
                    next_derive[c].append((large, node, small))
            descend(codes, node_of_row[c], tree.feature, tree.code)
            hists[c] = {parent: hists[c][parent] for _, parent, _ in next_derive[c]}
        build, derive = next_build, next_derive
    for c in range(k):
        tree = trees[c]
        g = stats[c, :, 0] / float(scales[0][c])
        h = stats[c, :, 1] / float(scales[1][c])
        leaves = (tree.feature < 0) & (stats[c, :, 2] > 0)
        tree.value[leaves] = -options.lr * g[leaves] / (h[leaves] + options.l2)
    return trees, node_of_row


def _best_split(hist: np.ndarray, total: np.ndarray, bins: Bins,
                scales: tuple[float, float], options: GrowOptions,
                ) -> tuple[int, int, np.ndarray] | None:
    """The best (feature, code, left fixed-point stats) of a node, or None (no split
    gains or satisfies the child constraints). Ties: the lowest feature, then code."""
    cum = np.cumsum(hist, axis=1)[:, :-1]  # (d, bins - 1, 3): left stats at each code
    right = total - cum
    sg, sh = scales
    lam = options.l2
    gl, hl, cl = cum[..., 0] / sg, cum[..., 1] / sh, cum[..., 2]
    gr, hr, cr = right[..., 0] / sg, right[..., 1] / sh, right[..., 2]
    g, h = total[0] / sg, total[1] / sh
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = gl * gl / (hl + lam) + gr * gr / (hr + lam) - g * g / (h + lam)
    edges = np.diff(bins.offsets)
    valid = ((cl >= options.min_samples_leaf) & (cr >= options.min_samples_leaf)
             & (hl >= options.min_child_weight) & (hr >= options.min_child_weight)
             & (np.arange(cum.shape[1])[None, :] < edges[:, None]) & np.isfinite(gain))
    gain = np.where(valid, gain, -np.inf)
    best = int(np.argmax(gain))
    feature, code = divmod(best, cum.shape[1])
    if not gain[feature, code] > 1e-12 * max(1.0, abs(g * g / (h + lam))):
        return None
    return feature, code, cum[feature, code].copy()
