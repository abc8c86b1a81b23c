"""Kernels of the histogram tree learners and of k-means (pure functions, no MPI).

Rows are binned once into ``uint8`` codes (:func:`bin_rows`: code ``b`` means
``edges[b - 1] < x <= edges[b]``; a missing value (NaN) gets the code ``missing``, above
every feature's codes), so "code <= b goes left" is "x <= edges[b]" on raw values. Trees
are arrays indexed by node: ``left``/``right`` children, ``feature < 0`` marks a leaf,
``missing_left`` says where a missing value goes (a split learns it, as LightGBM and
scikit-learn's HistGradientBoosting do). Gradient sums travel as *fixed-point integers
held in float64* (:func:`quantize`): integer-valued doubles below 2**53 add exactly in
any order, so the histograms, and hence the trees, are the same for any number of ranks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kmeans import warm as warm_kmeans

SQUARED, LOGISTIC, SOFTMAX = 0, 1, 2
LOSSES = {"squared": SQUARED, "logistic": LOGISTIC, "softmax": SOFTMAX}


#: Cells of a feature's value grid in :func:`edge_grid` (an edge count per cell: int32).
GRID_CELLS = 2048


@njit(cache=True, nogil=True)
def edge_grid(edges, offsets, starts, lows, scales):  # pragma: no cover - numba
    """Fill ``starts`` (d, cells): for feature ``j`` the edges below each cell of the equal
    cells between its first and last edge (``lows[j]``, ``scales[j]`` = cells per unit),
    so :func:`bin_rows` starts its search next to the answer."""
    d, cells = starts.shape
    for j in range(d):
        lo, hi = offsets[j], offsets[j + 1]
        lows[j], scales[j] = 0.0, 0.0
        if hi - lo < 2:
            continue
        lows[j] = edges[lo]
        scales[j] = cells / (edges[hi - 1] - edges[lo])
        pos = lo
        for c in range(cells):
            start = edges[lo] + c / scales[j]
            while pos < hi and edges[pos] < start:
                pos += 1
            starts[j, c] = pos - lo


@njit(cache=True, nogil=True)
def bin_rows(X, edges, offsets, starts, lows, scales, missing, out):  # pragma: no cover
    """``out[i, j]`` = number of edges of feature ``j`` below ``X[i, j]`` (edges of feature
    ``j`` are ``edges[offsets[j]:offsets[j + 1]]``, sorted), ``missing`` for NaN.

    The value's grid cell (:func:`edge_grid`) bounds a short binary search; two walks
    then make the count exact whatever the rounding of the cell (about half the time of a
    binary search over all the edges)."""
    n, d = X.shape
    last_cell = starts.shape[1] - 1
    for i in range(n):  # rows outer: X is row-major
        for j in range(d):
            x = np.float64(X[i, j])
            if x != x:
                out[i, j] = missing
                continue
            first, end = offsets[j], offsets[j + 1]
            if end == first or x <= edges[first]:
                out[i, j] = 0
                continue
            if x > edges[end - 1]:
                out[i, j] = end - first
                continue
            c = min(max(int((x - lows[j]) * scales[j]), 0), last_cell)
            lo = first + starts[j, c]
            hi = first + starts[j, c + 1] if c < last_cell else end
            while lo < hi:  # first edge >= x in the cell
                mid = (lo + hi) // 2
                if edges[mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            while lo > first and edges[lo - 1] >= x:
                lo -= 1
            while lo < end and edges[lo] < x:
                lo += 1
            out[i, j] = lo - first


@njit(cache=True, nogil=True)
def gradients(loss, raw, y, grad, hess):  # pragma: no cover - numba
    """Per-row gradient and hessian of ``loss`` at the raw scores ``raw`` (n, k)."""
    n, k = raw.shape
    for i in range(n):
        if loss == SQUARED:
            grad[i, 0] = raw[i, 0] - y[i]
            hess[i, 0] = 1.0
        elif loss == LOGISTIC:
            p = 1.0 / (1.0 + math.exp(-raw[i, 0]))
            grad[i, 0] = p - y[i]
            hess[i, 0] = max(p * (1.0 - p), 1e-16)
        else:
            top = raw[i, 0]
            for c in range(1, k):
                top = max(top, raw[i, c])
            total = 0.0
            for c in range(k):
                total += math.exp(raw[i, c] - top)
            label = int(y[i])
            for c in range(k):
                p = math.exp(raw[i, c] - top) / total
                grad[i, c] = p - (1.0 if c == label else 0.0)
                hess[i, c] = max(p * (1.0 - p), 1e-16)


@njit(cache=True, nogil=True)
def row_losses(loss, raw, y, out, correct):  # pragma: no cover - numba
    """Per-row loss (squared error, or cross-entropy) into ``out``; ``correct[i]`` 1.0 when
    the predicted class is the label (classification)."""
    n, k = raw.shape
    for i in range(n):
        if loss == SQUARED:
            diff = raw[i, 0] - y[i]
            out[i] = diff * diff
            correct[i] = 0.0
        elif loss == LOGISTIC:
            z = raw[i, 0]
            # log(1 + exp(-z)) for label 1, log(1 + exp(z)) for label 0, stably
            s = -z if y[i] > 0.5 else z
            out[i] = max(s, 0.0) + math.log1p(math.exp(-abs(s)))
            correct[i] = 1.0 if (z > 0.0) == (y[i] > 0.5) else 0.0
        else:
            top = raw[i, 0]
            best = 0
            for c in range(1, k):
                if raw[i, c] > top:
                    top = raw[i, c]
                    best = c
            total = 0.0
            for c in range(k):
                total += math.exp(raw[i, c] - top)
            label = int(y[i])
            out[i] = math.log(total) + top - raw[i, label]
            correct[i] = 1.0 if best == label else 0.0


@njit(cache=True, nogil=True)
def quantize(values, scale, out):  # pragma: no cover - numba
    """``out = rint(values * scale)``: fixed-point integers held in float64."""
    for i in range(values.shape[0]):
        out[i] = np.rint(values[i] * scale)


@njit(cache=True, nogil=True)
def histograms(codes, node_of_row, slot_of_node, grad, hess, counts, out):  # pragma: no cover
    """Add each row whose node has a slot (``slot_of_node[node] >= 0``) to that slot's
    histogram: ``out[slot, feature, code] += (grad[0..m-1, row], hess[row], counts[row])``
    (``grad`` is (m, n): m outputs per tree; ``out`` C-contiguous). One output (boosting)
    has its own loop: three adds per row and feature, at flat offsets."""
    n, d = codes.shape
    m = grad.shape[0]
    slots, _, width, stride = out.shape
    flat = out.reshape(slots, d * width * stride)
    for i in range(n):
        slot = slot_of_node[node_of_row[i]]
        if slot < 0:
            continue
        w = counts[i]
        if w == 0.0:
            continue
        h = hess[i]
        row = flat[slot]
        if m == 1:
            g = grad[0, i]
            for j in range(d):
                k = (j * width + codes[i, j]) * 3
                row[k] += g
                row[k + 1] += h
                row[k + 2] += w
        else:
            for j in range(d):
                k = (j * width + codes[i, j]) * stride
                for c in range(m):
                    row[k + c] += grad[c, i]
                row[k + m] += h
                row[k + m + 1] += w


@njit(cache=True, nogil=True)
def best_split(hist, total, n_edges, grad_scales, hess_scale, l2, min_count, min_hess,
               allowed, found):  # pragma: no cover - numba
    """The best split of one node from its histogram ``hist`` (d, bins + 1, m + 2; the
    last bin holds the missing values; fixed-point G..., H, count) and its totals
    ``total``: ``found = (gain, feature, code, missing_left)``, feature -1 when no split
    is valid. Present codes ``<= code`` go left; the missing values go right
    (``missing_left`` 0) or left (1); "every present value left, missing right" is the
    code ``n_edges[feature]``. Gain ``GL²/(HL+λ) + GR²/(HR+λ) − G²/(H+λ)`` (outputs
    summed); a child needs ``min_count`` count and ``min_hess`` hessian. Ties: the first
    in (feature, code, missing right before left) order."""
    d, width, s = hist.shape
    m = s - 2
    parent = 0.0
    for c in range(m):
        v = total[c] / grad_scales[c]
        parent += v * v
    best = -np.inf
    found[0] = -np.inf
    found[1] = -1.0
    if not total[m] / hess_scale + l2 > 0.0:
        return
    parent /= total[m] / hess_scale + l2
    left = np.empty(s)
    side = np.empty(s)
    for j in range(d):
        if not allowed[j]:
            continue
        left[:] = 0.0
        last = n_edges[j]
        # no missing value here: "missing left" is the same split as "right" (never better)
        ways = 2 if hist[j, width - 1, m + 1] != 0.0 else 1
        for b in range(last + 1):
            for c in range(s):
                left[c] += hist[j, b, c]
            for way in range(ways):
                if way == 1 and b == last:
                    continue
                for c in range(s):
                    side[c] = left[c] + (hist[j, width - 1, c] if way == 1 else 0.0)
                cl = side[m + 1]
                cr = total[m + 1] - cl
                hl = side[m] / hess_scale
                hr = (total[m] - side[m]) / hess_scale
                if cl < min_count or cr < min_count or hl < min_hess or hr < min_hess:
                    continue
                if not (hl + l2 > 0.0 and hr + l2 > 0.0):
                    continue
                gl = 0.0
                gr = 0.0
                for c in range(m):
                    a = side[c] / grad_scales[c]
                    r = (total[c] - side[c]) / grad_scales[c]
                    gl += a * a
                    gr += r * r
                gain = gl / (hl + l2) + gr / (hr + l2) - parent
                if gain > best:
                    best = gain
                    found[0] = gain
                    found[1] = j
                    found[2] = b
                    found[3] = way
    found[4] = parent


@njit(cache=True, nogil=True)
def poisson_weights(uniform, out):  # pragma: no cover - numba
    """Poisson(1) counts by inversion of the given uniform numbers (bootstrap weights)."""
    for i in range(uniform.shape[0]):
        u = uniform[i]
        k = 0
        p = math.exp(-1.0)
        cdf = p
        while u > cdf and k < 30:
            k += 1
            p /= k
            cdf += p
        out[i] = k


@njit(cache=True, nogil=True)
def goes_left(c, node, code, missing_left, missing):  # pragma: no cover - numba
    """Whether binned value ``c`` goes to ``node``'s left child."""
    if c == missing:
        return missing_left[node] != 0
    return c <= code[node]


@njit(cache=True, nogil=True)
def descend(codes, node_of_row, tree, missing):  # pragma: no cover - numba
    """Move each row from its node to the child its split sends it to (nodes with
    ``feature < 0`` keep their rows). ``tree``: (feature, code, left, right,
    missing_left)."""
    feature, code, left, right, missing_left = tree
    for i in range(codes.shape[0]):
        node = node_of_row[i]
        f = feature[node]
        if f >= 0:
            go = goes_left(codes[i, f], node, code, missing_left, missing)
            node_of_row[i] = left[node] if go else right[node]


@njit(cache=True, nogil=True)
def add_tree_codes(codes, tree, missing, value, raw, column):  # pragma: no cover - numba
    """``raw[i, column] += value`` of the leaf binned row ``i`` falls into (``tree`` as
    for :func:`descend`)."""
    feature, code, left, right, missing_left = tree
    for i in range(codes.shape[0]):
        node = 0
        while feature[node] >= 0:
            go = goes_left(codes[i, feature[node]], node, code, missing_left, missing)
            node = left[node] if go else right[node]
        raw[i, column] += value[node]


@njit(cache=True, nogil=True)
def predict_trees(X, tree, value, column, out):  # pragma: no cover - numba
    """``out[i, column[t] + c] += value[t, leaf, c]`` for the leaf of tree ``t`` that row
    ``i`` (raw features; NaN goes where ``missing_left`` says) falls into, for every tree.
    ``tree``: (feature, threshold, left, right, missing_left), one row per tree; ``value``
    is (trees, nodes, m)."""
    feature, threshold, left, right, missing_left = tree
    m = value.shape[2]
    for t in range(feature.shape[0]):
        first = column[t]
        for i in range(X.shape[0]):
            node = 0
            while feature[t, node] >= 0:
                x = np.float64(X[i, feature[t, node]])
                if x != x:
                    go = missing_left[t, node] != 0
                else:
                    go = x <= threshold[t, node]
                node = left[t, node] if go else right[t, node]
            for c in range(m):
                out[i, first + c] += value[t, node, c]


@njit(cache=True, nogil=True)
def nearest(X, centers, labels, dist):  # pragma: no cover - numba
    """Index of each row's nearest center (lowest index on ties) and the squared distance,
    in float64."""
    k, d = centers.shape
    for i in range(X.shape[0]):
        best = np.inf
        arg = 0
        for c in range(k):
            s = 0.0
            for j in range(d):
                diff = np.float64(X[i, j]) - centers[c, j]
                s += diff * diff
            if s < best:
                best = s
                arg = c
        labels[i] = arg
        dist[i] = best


@njit(cache=True, nogil=True)
def keyed_uniform(seed, stream, first_row, out):  # pragma: no cover - numba
    """Uniform [0, 1) numbers keyed by (seed, stream, global row ``first_row + i``):
    splitmix64 of the three, so a row draws the same number on any rank."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(out.shape[0]):
        z = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(stream) * np.uint64(0xBF58476D1CE4E5B9)
             + np.uint64(first_row + i) * np.uint64(0x94D049BB133111EB)) & mask
        for _ in range(2):
            z = (z + np.uint64(0x9E3779B97F4A7C15)) & mask
            z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & mask
            z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & mask
            z = z ^ (z >> np.uint64(31))
        out[i] = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def warm(dtype: np.dtype) -> None:
    """Compile (or load from the cache) every kernel here for data of ``dtype``, on tiny
    arrays of the argument types the learners pass."""
    X = np.zeros((2, 1), dtype=dtype)
    edges, offsets = np.zeros(1), np.array([0, 1], dtype=np.int64)
    codes = np.zeros((2, 1), dtype=np.uint8)
    starts, lows, scales = np.zeros((1, 2), np.int32), np.zeros(1), np.zeros(1)
    edge_grid(edges, offsets, starts, lows, scales)
    bin_rows(X, edges, offsets, starts, lows, scales, 2, codes)
    raw, y, g, h = np.zeros((2, 1)), np.zeros(2), np.zeros((2, 1)), np.zeros((2, 1))
    for loss in (SQUARED, LOGISTIC, SOFTMAX):
        gradients(loss, raw, y, g, h)
        row_losses(loss, raw, y, np.zeros(2), np.zeros(2))
    quantize(np.zeros(2), 1.0, np.zeros(2))
    nodes = np.zeros(2, dtype=np.int64)
    histograms(codes, nodes, np.zeros(3, dtype=np.int64), np.zeros((1, 2)), np.zeros(2),
               np.ones(2), np.zeros((1, 1, 3, 3)))
    best_split(np.zeros((1, 3, 3)), np.zeros(3), np.zeros(1, np.int64), np.ones(1), 1.0, 0.0,
               1.0, 0.0, np.ones(1, np.bool_), np.zeros(5))
    poisson_weights(np.zeros(2), np.zeros(2))
    feature, code, child = np.full(3, -1, np.int32), np.zeros(3, np.int32), np.zeros(3, np.int32)
    tree = (feature, code, child, child, np.zeros(3, np.int8))
    descend(codes, nodes, tree, 2)
    add_tree_codes(codes, tree, 2, np.zeros(3), raw, 0)
    for rows in (X, X.astype(np.float64)):
        predict_trees(rows, (feature[None, :], np.zeros((1, 3)), child[None, :],
                             child[None, :], np.zeros((1, 3), np.int8)),
                      np.zeros((1, 3, 1)), np.zeros(1, np.int64), np.zeros((2, 1)))
        labels = np.zeros(2, np.int64)
        nearest(rows, np.zeros((1, 1)), labels, np.zeros(2))
    keyed_uniform(0, 0, 0, np.zeros(2))
    warm_kmeans(dtype)
