"""Growth of regression trees on gradient histograms, one exchange per growth step.

Two growth orders, the same machinery:

- level-wise (``max_leaves == 0``, XGBoost's default): every step splits every leaf of the
  deepest level that gains, so one step per level;
- best-first (``max_leaves > 0``, LightGBM's leaf-wise growth): every step splits the one
  leaf whose best split gains most (ties: the lowest node), until ``max_leaves`` leaves
  (and ``max_depth`` levels, when it is not 0).

Each step, every rank builds the histograms of the new children over its own rows (only
the smaller child of each split: the larger is its parent's histogram minus the smaller's,
"histogram subtraction"), all of them in one message. LightGBM's data-parallel exchange
then sums it: a reduce-scatter by feature gives each rank the summed histograms of its
block of features only (:func:`feature_blocks`); each rank searches the best split of
every new node over its features and ONE small allgather of those candidates agrees the
best (highest gain; ties: the lowest feature, as a scan of every feature on one rank),
with its left child's stats. Two collectives per level (level-wise) or per split
(best-first), and the split search, the subtraction and the histograms held shrink with
P. (``--reduce shm`` or ``root``, which have no reduce-scatter, allreduce the message
instead, then each rank takes its block.) Gradients travel as fixed-point integers in
float64 (:mod:`mpitrain.exact`), so the sums, the splits and the leaf values are the same
bits for any number of ranks. The ``k`` trees of a boosting round (one per class) grow
side by side in the same messages.

Split rule and leaf values as XGBoost/LightGBM: ``gain = GL²/(HL+λ) + GR²/(HR+λ) −
G²/(H+λ)``, leaf ``−lr·G/(H+λ)``. Missing values (NaN, the last histogram bin) go to the
side that gains more, as in LightGBM and scikit-learn's HistGradientBoosting; a split
whose node saw no missing value sends them to the child with more rows (scikit-learn's
rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import SCATTER_ALGORITHMS, allreduce, reduce_scatter
from mpitrain.kernels.trees import best_split as split_kernel
from mpitrain.kernels.trees import descend, histograms, quantize

from .binning import Bins


@dataclass(frozen=True, kw_only=True)
class GrowOptions:
    """How trees grow: at most ``max_depth`` levels of splits (0: no limit, only with
    ``max_leaves``) and ``max_leaves`` leaves grown best-first (0: level-wise); a child
    needs ``min_samples_leaf`` rows and ``min_child_weight`` hessian; ``l2`` regularises
    leaves; ``lr`` scales them."""

    max_depth: int
    l2: float
    min_child_weight: float
    min_samples_leaf: int
    lr: float
    max_leaves: int = 0
    algorithm: str = "auto"

    @property
    def nodes(self) -> int:
        """Most nodes a tree can have (the length of its arrays)."""
        by_depth = 2 ** (self.max_depth + 1) - 1 if self.max_depth else None
        if not self.max_leaves:
            assert by_depth is not None
            return by_depth
        by_leaves = 2 * self.max_leaves - 1
        return by_leaves if by_depth is None else min(by_depth, by_leaves)


#: The arrays a tree is made of, in the order the kernels take them.
TREE_ARRAYS = ("feature", "code", "threshold", "left", "right", "missing_left", "value")


@dataclass
class Tree:
    """One tree as arrays indexed by node (the root is 0; nodes are numbered in the order
    they are made); ``feature < 0`` marks a leaf (or an unused slot)."""

    feature: np.ndarray  # int32
    code: np.ndarray  # int32: rows with code <= code[i] go left
    threshold: np.ndarray  # float64: raw values <= threshold go left
    left: np.ndarray  # int32: children
    right: np.ndarray  # int32
    missing_left: np.ndarray  # int8: 1 when missing values (NaN) go left
    value: np.ndarray  # float64 (nodes, outputs): leaf values

    @classmethod
    def empty(cls, nodes: int, outputs: int = 1) -> Tree:
        return cls(feature=np.full(nodes, -1, np.int32), code=np.zeros(nodes, np.int32),
                   threshold=np.zeros(nodes), left=np.zeros(nodes, np.int32),
                   right=np.zeros(nodes, np.int32), missing_left=np.zeros(nodes, np.int8),
                   value=np.zeros((nodes, outputs)))

    def routing(self) -> tuple[np.ndarray, ...]:
        """What the binned-row kernels walk: (feature, code, left, right, missing_left)."""
        return self.feature, self.code, self.left, self.right, self.missing_left


@dataclass(frozen=True)
class Split:
    """The best split of a leaf: its gain, feature, code, whether missing values go left,
    and the left child's fixed-point stats (G..., H, count)."""

    gain: float
    feature: int
    code: int
    missing_left: bool
    left: np.ndarray


FeatureMask = Callable[[int, int], "np.ndarray | None"]


@dataclass
class _Growing:
    """One tree while it grows: its nodes' stats, depths, histograms and open splits."""

    tree: Tree
    stats: np.ndarray  # (nodes, m + 2) fixed point: G..., H, count
    depth: np.ndarray  # (nodes,)
    used: int = 1  # nodes made
    leaves: int = 1
    hists: dict[int, np.ndarray] | None = None
    candidates: dict[int, Split] | None = None  # leaves that may split: their best split


def grow_trees(comm: MPI.Comm, *, codes: np.ndarray, grad: np.ndarray, hess: np.ndarray,
               scales: tuple[np.ndarray, np.ndarray], bins: Bins, n_bins: int,
               options: GrowOptions, outputs: int = 1, counts: np.ndarray | None = None,
               features: FeatureMask | None = None) -> tuple[list[Tree], np.ndarray]:
    """Collective: ``k`` trees fitted to this rank's binned rows ``codes`` and every other
    rank's. Tree ``c`` fits the gradient columns ``c*outputs ... (c+1)*outputs - 1`` of
    ``grad`` (n, k*outputs; several outputs share one structure, the gains summed) and the
    hessian column ``c`` of ``hess`` (n, k). ``scales``: the fixed-point scales of the
    gradient and hessian columns (agreed by the caller). ``n_bins``: codes of present
    values (``bins.missing`` is the code of NaN). ``counts``: row weights counted against
    ``min_samples_leaf`` (0 leaves a row out; None: 1 each). ``features(c, node)``: a
    boolean mask of the features that node may split on (None: all). Returns the trees
    and each row's leaf per tree (k, n)."""
    n, k = hess.shape
    m = outputs
    d = codes.shape[1]
    width = n_bins + 1  # the last bin holds the missing values
    counts = np.ones(n) if counts is None else np.ascontiguousarray(counts, np.float64)
    nodes = options.nodes
    grown = [_Growing(Tree.empty(nodes, m), np.zeros((nodes, m + 2)), np.zeros(nodes, np.int64),
                      hists={}, candidates={}) for _ in range(k)]
    node_of_row = np.zeros((k, n), dtype=np.int64)
    gq, hq = np.empty((k * m, n)), np.empty((k, n))
    for col in range(k * m):
        quantize(np.ascontiguousarray(grad[:, col]), float(scales[0][col]), gq[col])
    for c in range(k):
        quantize(np.ascontiguousarray(hess[:, c]), float(scales[1][c]), hq[c])
    blocks = feature_blocks(d, comm.Get_size())
    lo, hi = blocks[comm.Get_rank()], blocks[comm.Get_rank() + 1]
    for g, total in zip(grown, _root_totals(comm, gq, hq, counts, m), strict=True):
        g.stats[0] = total
    build: list[list[int]] = [[0] for _ in range(k)]  # nodes whose histogram is built here
    derive: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]  # (node, parent, sibling)
    while any(build):
        slots = [(c, node) for c in range(k) for node in build[c]]
        message = np.zeros((len(slots), d, width, m + 2))
        slot_of_node = np.full((k, nodes), -1, dtype=np.int64)
        for slot, (c, node) in enumerate(slots):
            slot_of_node[c, node] = slot
        for c in range(k):
            if build[c]:
                histograms(codes, node_of_row[c], slot_of_node[c], gq[c * m:(c + 1) * m],
                           hq[c], counts, message)
        mine = _exchange(comm, message, blocks, options.algorithm)  # own features, summed
        searched: list[tuple[int, int]] = []  # (tree, node) of every new node, in order
        for c, g in enumerate(grown):
            assert g.hists is not None
            new = []
            for slot, (cc, node) in enumerate(slots):
                if cc == c:
                    g.hists[node] = mine[slot]
                    new.append(node)
            for node, parent, sibling in derive[c]:
                g.hists[node] = g.hists.pop(parent) - g.hists[sibling]
                new.append(node)
            searched += [(c, node) for node in sorted(new)]
        found = np.empty((len(searched), _FOUND + m + 2))
        for i, (c, node) in enumerate(searched):
            g = grown[c]
            assert g.hists is not None
            allowed = None if features is None else features(c, node)
            tree_scales = (scales[0][c * m:(c + 1) * m], float(scales[1][c]))
            found[i] = best_split(g.hists[node], g.stats[node], bins, tree_scales, options,
                                  None if allowed is None else allowed[lo:hi], first=lo)
        for (c, node), split in zip(searched, _agree_splits(comm, found, m), strict=True):
            if split is not None:
                candidates = grown[c].candidates
                assert candidates is not None
                candidates[node] = split
        for g in grown:  # keep the histograms of the leaves that may split (to derive from)
            assert g.hists is not None and g.candidates is not None
            g.hists = {node: g.hists[node] for node in g.candidates}
        build, derive = _split_leaves(grown, options, bins)
        for c, g in enumerate(grown):
            descend(codes, node_of_row[c], g.tree.routing(), bins.missing)
    for c, g in enumerate(grown):
        tree, stats = g.tree, g.stats
        gs = stats[:, :m] / scales[0][c * m:(c + 1) * m]
        h = stats[:, m] / float(scales[1][c])
        leaves = (tree.feature < 0) & (stats[:, m + 1] > 0)
        tree.value[leaves] = -options.lr * gs[leaves] / (h[leaves] + options.l2)[:, None]
    return [g.tree for g in grown], node_of_row


def feature_blocks(d: int, ranks: int) -> list[int]:
    """Rank ``r`` searches the splits of features ``blocks[r] ... blocks[r + 1] - 1``:
    contiguous blocks in feature order (the first ``d % ranks`` ranks one more)."""
    q, extra = divmod(d, ranks)
    return [r * q + min(r, extra) for r in range(ranks + 1)]


def _root_totals(comm: MPI.Comm, gq: np.ndarray, hq: np.ndarray, counts: np.ndarray,
                 m: int) -> np.ndarray:
    """Collective: each tree's root stats (k, m + 2): the fixed-point G..., H and count of
    every rank's counted rows (integer-valued sums: exact in any order, so the same bits
    as the root histogram's sum over the bins of any feature)."""
    k = len(hq)
    kept = counts != 0.0
    local = np.empty((k, m + 2))
    local[:, :m] = gq[:, kept].sum(axis=1).reshape(k, m)
    local[:, m] = hq[:, kept].sum(axis=1)
    local[:, m + 1] = counts[kept].sum()
    if comm.Get_size() == 1:
        return local
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    return total


def _exchange(comm: MPI.Comm, message: np.ndarray, blocks: list[int],
              algorithm: str) -> np.ndarray:
    """Collective: the histograms (slots, features, bins, stats) of this rank's block of
    features summed over the ranks. A reduce-scatter (``--reduce`` auto, ring or mpi),
    LightGBM's data-parallel exchange: each rank receives only the block it searches,
    half an allreduce's traffic; another ``--reduce`` algorithm (shm, root): that
    allreduce, then this rank's block. Fixed-point integers in float64: the sums are exact
    in any order."""
    size, rank = comm.Get_size(), comm.Get_rank()
    lo, hi = blocks[rank], blocks[rank + 1]
    if size == 1:
        return message
    if algorithm not in SCATTER_ALGORITHMS:
        return allreduce(message, comm, algorithm=algorithm)[:, lo:hi]
    # The kernel fills slot after slot (each row adds into one slot's contiguous
    # histograms: faster); one copy lays the blocks out as the reduce-scatter's equal
    # chunks, rank r's at r * chunk (zero padding when the blocks differ by a feature).
    slots, rest = len(message), message.shape[2:]
    per_feature = slots * int(np.prod(rest))
    chunk = max(b - a for a, b in pairwise(blocks)) * per_feature
    by_block = np.empty(size * chunk)  # every element written once (no memset first)
    for r, (a, b) in enumerate(pairwise(blocks)):
        filled = r * chunk + (b - a) * per_feature
        by_block[r * chunk:filled].reshape(slots, b - a, *rest)[...] = message[:, a:b]
        by_block[filled:(r + 1) * chunk] = 0.0
    mine = reduce_scatter(by_block, comm, algorithm=algorithm)
    return mine[:(hi - lo) * per_feature].reshape(slots, hi - lo, *rest)


#: Leading fields of a searched split: gain, feature, code, missing_left, parent gain term.
_FOUND = 5


def _agree_splits(comm: MPI.Comm, found: np.ndarray, m: int) -> list[Split | None]:
    """Collective: every searched node's best split over all features, from each rank's
    best over its own (``found`` rows as :func:`best_split` fills them; one allgather).
    The highest gain wins; ties go to the lowest rank, whose features come first, so the
    split is the one a single rank's scan of every feature finds (the first best)."""
    size = comm.Get_size()
    if size == 1:
        every = found[None]
    else:
        every = np.empty((size, *found.shape))
        comm.Allgather(found, every)
    splits: list[Split | None] = []
    for i in range(found.shape[0]):
        best = every[0, i]
        for r in range(1, size):
            if every[r, i, 0] > best[0]:
                best = every[r, i]
        gain, feature, parent = float(best[0]), int(best[1]), float(best[4])
        if feature < 0 or not gain > 1e-12 * max(1.0, abs(parent)):
            splits.append(None)
            continue
        splits.append(Split(gain, feature, int(best[2]), bool(best[3]),
                            best[_FOUND:_FOUND + m + 2].copy()))
    return splits


def _split_leaves(grown: list[_Growing], options: GrowOptions,
                  bins: Bins) -> tuple[list[list[int]], list[list[tuple[int, int, int]]]]:
    """Split the leaves this step splits (every candidate level-wise, the best one
    best-first) and say which children to build and which to derive next step."""
    build: list[list[int]] = [[] for _ in grown]
    derive: list[list[tuple[int, int, int]]] = [[] for _ in grown]
    for c, g in enumerate(grown):
        assert g.candidates is not None
        if options.max_leaves:
            if g.leaves >= options.max_leaves or not g.candidates:
                continue
            best = max(g.candidates, key=lambda node: (g.candidates[node].gain, -node))
            chosen = [best]
        else:
            chosen = sorted(g.candidates)
        for node in chosen:
            split = g.candidates.pop(node)
            lc, rc = _apply(g, node, split, bins)
            room = (not options.max_depth or g.depth[lc] < options.max_depth) and (
                not options.max_leaves or g.leaves < options.max_leaves)
            if room:
                small, large = ((lc, rc) if g.stats[lc, -1] <= g.stats[rc, -1] else (rc, lc))
                build[c].append(small)
                derive[c].append((large, node, small))
        if not options.max_leaves:
            g.candidates.clear()  # level-wise: a leaf that did not split now never will
    return build, derive


def _apply(g: _Growing, node: int, split: Split, bins: Bins) -> tuple[int, int]:
    """Make ``node`` a split with two new leaf children; their numbers."""
    tree = g.tree
    lc, rc = g.used, g.used + 1
    g.used += 2
    g.leaves += 1
    tree.feature[node], tree.code[node] = split.feature, split.code
    edges = bins.feature_edges(split.feature)
    tree.threshold[node] = edges[split.code] if split.code < len(edges) else np.inf
    tree.left[node], tree.right[node] = lc, rc
    tree.missing_left[node] = 1 if split.missing_left else 0
    g.stats[lc] = split.left
    g.stats[rc] = g.stats[node] - split.left
    g.depth[lc] = g.depth[rc] = g.depth[node] + 1
    return lc, rc


def best_split(hist: np.ndarray, total: np.ndarray, bins: Bins,
               scales: tuple[np.ndarray, float], options: GrowOptions,
               allowed: np.ndarray | None, *, first: int = 0) -> np.ndarray:
    """The best split of a node over the features ``first ... first + len(hist) - 1``
    whose histogram (features, bins + 1 missing, m + 2) is ``hist`` (the numba kernel
    :func:`mpitrain.kernels.trees.best_split`), as a row ``(gain, feature, code,
    missing_left, parent term, left child's stats (m + 2))``; gain ``-inf`` and feature -1
    when no split satisfies the child constraints (:func:`_agree_splits` then also drops
    splits that do not gain). Gains of several outputs add up. Ties: the lowest feature,
    then code, then missing values going right. A split may also send every present value
    left and the missing ones right."""
    m = hist.shape[-1] - 2
    d = hist.shape[0]
    found = np.zeros(5)
    mask = np.ones(d, dtype=np.bool_) if allowed is None else allowed
    split_kernel(hist, total, np.diff(bins.offsets)[first:first + d],
                 np.asarray(scales[0], np.float64), float(scales[1]), float(options.l2),
                 float(options.min_samples_leaf), float(options.min_child_weight), mask, found)
    out = np.zeros(_FOUND + m + 2)
    out[0], out[1], out[4] = found[0], -1.0, found[4]
    feature = int(found[1])
    if feature < 0:
        return out
    code, way = int(found[2]), int(found[3])
    chosen = hist[feature, :code + 1].sum(axis=0)
    missing = hist[feature, -1]
    if way == 1:
        chosen = chosen + missing
    if missing[m + 1] > 0:
        missing_left = way == 1
    else:  # no missing value here: they go to the child with more rows
        missing_left = bool(chosen[m + 1] > total[m + 1] - chosen[m + 1])
    out[1:4] = first + feature, code, 1.0 if missing_left else 0.0
    out[_FOUND:] = chosen
    return out
