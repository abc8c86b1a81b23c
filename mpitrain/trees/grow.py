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

from collections.abc import Callable
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
    value: np.ndarray  # float64 (nodes, outputs): leaf values

    @classmethod
    def empty(cls, max_depth: int, outputs: int = 1) -> Tree:
        nodes = 2 ** (max_depth + 1) - 1
        return cls(feature=np.full(nodes, -1, np.int32), code=np.zeros(nodes, np.int32),
                   threshold=np.zeros(nodes), value=np.zeros((nodes, outputs)))


FeatureMask = Callable[[int, int], "np.ndarray | None"]


def grow_trees(comm: MPI.Comm, *, codes: np.ndarray, grad: np.ndarray, hess: np.ndarray,
               scales: tuple[np.ndarray, np.ndarray], bins: Bins, n_bins: int,
               options: GrowOptions, outputs: int = 1, counts: np.ndarray | None = None,
               features: FeatureMask | None = None) -> tuple[list[Tree], np.ndarray]:
    """Collective: ``k`` trees fitted to this rank's binned rows ``codes`` and every other
    rank's. Tree ``c`` fits the gradient columns ``c*outputs ... (c+1)*outputs - 1`` of
    ``grad`` (n, k*outputs; several outputs share one structure, the gains summed) and the
    hessian column ``c`` of ``hess`` (n, k). ``scales``: the fixed-point scales of the
    gradient and hessian columns (agreed by the caller). ``counts``: row weights counted
    against ``min_samples_leaf`` (0 leaves a row out; None: 1 each). ``features(c, node)``:
    a boolean mask of the features that node may split on (None: all). Returns the trees
    and each row's leaf per tree (k, n)."""
    n, k = hess.shape
    m = outputs
    d = codes.shape[1]
    counts = np.ones(n) if counts is None else np.ascontiguousarray(counts, np.float64)
    trees = [Tree.empty(options.max_depth, m) for _ in range(k)]
    nodes = len(trees[0].feature)
    node_of_row = np.zeros((k, n), dtype=np.int64)
    gq, hq = np.empty((k * m, n)), np.empty((k, n))
    for col in range(k * m):
        quantize(np.ascontiguousarray(grad[:, col]), float(scales[0][col]), gq[col])
    for c in range(k):
        quantize(np.ascontiguousarray(hess[:, c]), float(scales[1][c]), hq[c])
    # per tree: node → (G..., H, count) as fixed-point sums; node → its histogram
    stats = np.zeros((k, nodes, m + 2))
    hists: list[dict[int, np.ndarray]] = [{} for _ in range(k)]
    build: list[list[int]] = [[0] for _ in range(k)]  # nodes whose histogram is built here
    derive: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]  # (node, parent, sibling)
    for depth in range(options.max_depth):
        slots = [(c, node) for c in range(k) for node in build[c]]
        if not slots and not any(derive):
            break
        message = np.zeros((max(len(slots), 1), d, n_bins, m + 2))
        slot_of_node = np.full((k, nodes), -1, dtype=np.int64)
        for slot, (c, node) in enumerate(slots):
            slot_of_node[c, node] = slot
        for c in range(k):
            if build[c]:
                histograms(codes, node_of_row[c], slot_of_node[c], gq[c * m:(c + 1) * m],
                           hq[c], counts, message)
        allreduce(message, comm, algorithm=options.algorithm)
        level: list[list[int]] = [[] for _ in range(k)]
        for slot, (c, node) in enumerate(slots):
            hists[c][node] = message[slot]
            level[c].append(node)
        next_build: list[list[int]] = [[] for _ in range(k)]
        next_derive: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]
        for c in range(k):
            for node, parent, sibling in derive[c]:
                hists[c][node] = hists[c][parent] - hists[c][sibling]
                level[c].append(node)
            if depth == 0:
                stats[c, 0] = hists[c][0][0].sum(axis=0)
            tree = trees[c]
            tree_scales = (scales[0][c * m:(c + 1) * m], float(scales[1][c]))
            for node in sorted(level[c]):
                allowed = None if features is None else features(c, node)
                split = _best_split(hists[c][node], stats[c, node], bins, tree_scales,
                                    options, allowed)
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
                    small, large = (lc, rc) if left[-1] <= stats[c, rc, -1] else (rc, lc)
                    next_build[c].append(small)
                    next_derive[c].append((large, node, small))
            descend(codes, node_of_row[c], tree.feature, tree.code)
            hists[c] = {parent: hists[c][parent] for _, parent, _ in next_derive[c]}
        build, derive = next_build, next_derive
    for c in range(k):
        tree = trees[c]
        g = stats[c, :, :m] / scales[0][c * m:(c + 1) * m]
        h = stats[c, :, m] / float(scales[1][c])
        leaves = (tree.feature < 0) & (stats[c, :, m + 1] > 0)
        tree.value[leaves] = -options.lr * g[leaves] / (h[leaves] + options.l2)[:, None]
    return trees, node_of_row


def _best_split(hist: np.ndarray, total: np.ndarray, bins: Bins,
                scales: tuple[np.ndarray, float], options: GrowOptions,
                allowed: np.ndarray | None) -> tuple[int, int, np.ndarray] | None:
    """The best (feature, code, left fixed-point stats) of a node, or None (no split
    gains or satisfies the child constraints). Gains of several outputs add up. Ties: the
    lowest feature, then code."""
    m = hist.shape[-1] - 2
    cum = np.cumsum(hist, axis=1)[:, :-1]  # (d, bins - 1, m + 2): left stats at each code
    right = total - cum
    sg, sh = np.asarray(scales[0], dtype=np.float64), scales[1]
    lam = options.l2
    gl, hl, cl = cum[..., :m] / sg, cum[..., m] / sh, cum[..., m + 1]
    gr, hr, cr = right[..., :m] / sg, right[..., m] / sh, right[..., m + 1]
    g, h = total[:m] / sg, total[m] / sh
    parent = float((g * g).sum() / (h + lam))
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = ((gl * gl).sum(axis=-1) / (hl + lam) + (gr * gr).sum(axis=-1) / (hr + lam)
                - parent)
    edges = np.diff(bins.offsets)
    valid = ((cl >= options.min_samples_leaf) & (cr >= options.min_samples_leaf)
             & (hl >= options.min_child_weight) & (hr >= options.min_child_weight)
             & (np.arange(cum.shape[1])[None, :] < edges[:, None]) & np.isfinite(gain))
    if allowed is not None:
        valid &= allowed[:, None]
    gain = np.where(valid, gain, -np.inf)
    if gain.size == 0:  # no feature has two distinct values (e.g. one row): a leaf
        return None
    best = int(np.argmax(gain))
    feature, code = divmod(best, cum.shape[1])
    if not gain[feature, code] > 1e-12 * max(1.0, abs(parent)):
        return None
    return feature, code, cum[feature, code].copy()
