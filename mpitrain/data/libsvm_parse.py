"""numba kernels that scan and parse libsvm/svmlight text held in a byte buffer.

Both work on a chunk of the file (a ``uint8`` array) and stop at the last complete line
unless told the chunk ends the file; they return how many bytes they consumed, so the
caller keeps the rest for the next chunk. Progress lives in a small ``int64`` state array,
so a scan or parse can continue over any number of chunks.

A plain line (``label index:value ...``: decimal numbers, space or tab separated, an
optional comment) is read in one pass from its first byte to its newline, and its entries
are sorted only when its indices do not increase. Anything else on a line (``qid:``, an
index with a ``+``, white space other than spaces and tabs, a number the exact parser
cannot take, a line without data) hands the line to the general path, which finds the
line's end and comment first.

Numbers are parsed exactly (correctly rounded, as Python's ``float``): up to 18
significant digits by Clinger's fast path or an exact long division by a power of five.
Anything else (``inf``, ``nan``, longer mantissas, a bad token) stops the parser at that
line, which the caller parses in Python (naming the line if it is bad) before continuing.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from mpitrain.data.hashing import hashed_column, murmurhash3_32

#: Scan state slots: data lines seen, physical lines seen, any index 0, checkpoints kept,
#: colons in data (an upper bound on the entries, to size arrays once).
S_ROWS, S_LINES, S_ZERO, S_CHECKPOINTS, S_COLONS = 0, 1, 2, 3, 4
#: Parse state slots: next data row, next line number, wanted rows done, entries written,
#: and the start and end (in the chunk) of a line left to the caller.
P_ROW, P_LINE, P_DONE, P_NNZ, P_START, P_END = 0, 1, 2, 3, 4, 5
#: Why :func:`parse_chunk` returned.
NEED_MORE, FINISHED, PYTHON_LINE, NEED_ROOM = 0, 1, 2, 3

_NEWLINE, _HASH, _COLON = 10, 35, 58
_POW10 = np.array([10.0**i for i in range(23)])
_POW5 = np.array([5**i for i in range(27)], dtype=np.int64)
_TWO53 = 2**53
_MAX_DIGITS = 18


@numba.njit(cache=True, inline="always")
def _space(c: int) -> bool:
    """bytes.strip()'s white space (the newline ends lines before this is asked)."""
    return c == 32 or c == 9 or c == 13 or c == 11 or c == 12 or c == 10


@numba.njit(cache=True)
def _content_end(buf: np.ndarray, start: int, end: int) -> int:
    """End of a line's data: before a '#' comment and trailing white space."""
    stop = start
    while stop < end and buf[stop] != _HASH:
        stop += 1
    while stop > start and _space(buf[stop - 1]):
        stop -= 1
    return stop


@numba.njit(cache=True)
def _line_end(buf: np.ndarray, start: int, n: int) -> int:
    """Index of the newline ending the line at ``start``, or -1 if none before ``n``."""
    i = start
    while i < n:
        if buf[i] == _NEWLINE:
            return i
        i += 1
    return -1


@numba.njit(cache=True)
def scan_chunk(buf, n, final, stop, every, state, ck_rows, ck_offsets, ck_lines, ck_colons,
               base_offset):
    """Count data lines in ``buf[:n]`` whose first byte lies before ``stop`` (a chunk
    position), note any feature index 0 and keep a checkpoint (row, byte offset, line,
    colons before it) every ``every`` data lines. Returns (bytes consumed, whether ``stop``
    was reached)."""
    pos = 0
    while pos < n:
        if pos >= stop:
            return pos, True
        # one pass over the line: data before any '#'? an index 0 (a token [+]0+: )?
        i = pos
        while i < n and (buf[i] == 32 or buf[i] == 9 or 11 <= buf[i] <= 13):
            i += 1
        data = i < n and buf[i] != _NEWLINE and buf[i] != _HASH
        zero = state[S_ZERO] != 0
        colons = 0
        if data:
            while i < n:
                c = buf[i]
                if c == _COLON:
                    colons += 1
                    if not zero and i > pos and buf[i - 1] == 48:
                        j = i - 1
                        while j >= pos and buf[j] == 48:
                            j -= 1
                        if j >= pos and buf[j] == 43:  # '+'
                            j -= 1
                        zero = j < pos or _space(buf[j])
                elif c == _NEWLINE or c == _HASH:
                    break
                i += 1
        while i < n and buf[i] != _NEWLINE:  # a comment
            i += 1
        if i == n and not final:
            return pos, False
        if data:
            rows = state[S_ROWS]
            if rows % every == 0:
                k = state[S_CHECKPOINTS]
                ck_rows[k] = rows
                ck_offsets[k] = base_offset + pos
                ck_lines[k] = state[S_LINES]
                ck_colons[k] = state[S_COLONS]
                state[S_CHECKPOINTS] = k + 1
            state[S_ROWS] = rows + 1
            state[S_COLONS] += colons
            if zero:
                state[S_ZERO] = 1
        state[S_LINES] += 1
        pos = i + 1
    return min(pos, n), pos >= stop


@numba.njit(cache=True, inline="always")
def _bits(q: int) -> int:
    """Bit length of ``0 <= q < 2**63``."""
    if q == 0:
        return 0
    b = math.frexp(float(q))[1]  # may be one too many where float(q) rounds up
    if (q >> (b - 1)) == 0:
        b -= 1
    return b


@numba.njit(cache=True)
def _exact_quotient(m: int, k: int) -> float:
    """``m / 10**k`` correctly rounded, for 0 < m < 10**18 and 0 < k <= 26: the quotient
    by ``5**k`` to 55+ bits with a sticky remainder, rounded to 53 bits, times 2**-k."""
    d = _POW5[k]
    step = 62 - _bits(d)  # bits that can be brought down at once without overflow
    q = m // d
    r = m - q * d
    shift = 0
    qb = _bits(q)
    while qb < 55:
        s = min(step, 55 - qb)
        t = r << s
        add = t // d
        r = t - add * d
        q = (q << s) + add
        shift += s
        qb = _bits(q)
    extra = qb - 53
    top = q >> extra
    low = q & ((1 << extra) - 1)
    half = 1 << (extra - 1)
    if low > half or (low == half and (r != 0 or (top & 1) == 1)):
        top += 1
    return math.ldexp(float(top), extra - shift - k)


@numba.njit(cache=True)
def _number(buf: np.ndarray, start: int, end: int) -> tuple[float, int, bool]:
    """The number that starts at ``buf[start]`` (stopping at the first byte that cannot
    continue it, or at ``end``): (value, where it stopped, True), or (0, _, False) when this
    parser cannot give Python's exact result (no digits, a bare exponent, inf/nan, more
    than 18 significant digits)."""
    i = start
    negative = False
    if i < end and (buf[i] == 43 or buf[i] == 45):
        negative = buf[i] == 45
        i += 1
    m = 0
    digits = 0  # significant digits in m
    exp10 = 0
    seen = False
    point = False
    while i < end:
        c = buf[i]
        if 48 <= c <= 57:
            seen = True
            if m == 0 and c == 48:  # a leading zero
                if point:
                    exp10 -= 1
            else:
                if digits == _MAX_DIGITS:
                    return 0.0, i, False
                m = m * 10 + (c - 48)
                digits += 1
                if point:
                    exp10 -= 1
        elif c == 46 and not point:
            point = True
        else:
            break
        i += 1
    if not seen:
        return 0.0, i, False
    if i < end and (buf[i] == 101 or buf[i] == 69):  # e/E
        i += 1
        sign = 1
        if i < end and (buf[i] == 43 or buf[i] == 45):
            sign = -1 if buf[i] == 45 else 1
            i += 1
        e = 0
        first = i
        while i < end:
            c = buf[i]
            if not 48 <= c <= 57:
                break
            if e > 100000:
                return 0.0, i, False
            e = e * 10 + (c - 48)
            i += 1
        if i == first:
            return 0.0, i, False
        exp10 += sign * e
    if m == 0:
        value = 0.0
    elif m < _TWO53 and -22 <= exp10 <= 22:
        value = m * _POW10[exp10] if exp10 >= 0 else m / _POW10[-exp10]
    elif exp10 < 0 and -exp10 <= 26:
        value = _exact_quotient(m, -exp10)
    elif 0 <= exp10 <= 18 and m <= (2**63 - 1) // (10**exp10):
        value = float(m * 10**exp10)
    else:
        return 0.0, i, False
    return (-value if negative else value), i, True


@numba.njit(cache=True)
def parse_float(buf: np.ndarray, start: int, end: int) -> tuple[float, bool]:
    """The number in ``buf[start:end]`` and True, or (0, False) when this parser cannot
    give Python's exact result (bad text, inf/nan, more than 18 significant digits)."""
    value, stop, ok = _number(buf, start, end)
    if ok and stop == end:
        return value, True
    return 0.0, False


@numba.njit(cache=True)
def _parse_index(buf: np.ndarray, start: int, end: int, base: int) -> int:
    """A feature index ``base..2**31-1`` as its column, or -1."""
    i = start
    if i < end and buf[i] == 43:
        i += 1
    if i == end:
        return -1
    value = 0
    while i < end:
        c = buf[i]
        if not 48 <= c <= 57:
            return -1
        value = value * 10 + (c - 48)
        if value > 2**31 - 1:
            return -1
        i += 1
    if value < base:
        return -1
    return value - base


@numba.njit(cache=True)
def canonical_row(indices: np.ndarray, values: np.ndarray, lo: int, hi: int,
                  add: bool = False) -> int:
    """Sort a row's entries by column, keeping the last of duplicates (as assigning them to
    a dense row would) or, with ``add``, their sum (hashed features: a repeated name or a
    collision adds up, as scikit-learn's FeatureHasher); returns the row's new end."""
    sorted_ = True
    for j in range(lo + 1, hi):
        if indices[j] <= indices[j - 1]:
            sorted_ = False
            break
    if sorted_:
        return hi
    order = np.argsort(indices[lo:hi], kind="mergesort")  # stable: later duplicates after
    cols = indices[lo:hi][order]
    vals = values[lo:hi][order]
    out = lo
    total = 0.0
    for j in range(len(cols)):
        total = total + vals[j] if add else vals[j]
        if j + 1 < len(cols) and cols[j + 1] == cols[j]:
            continue  # a later entry for this column follows
        indices[out] = cols[j]
        values[out] = total
        total = 0.0
        out += 1
    return out


@numba.njit(cache=True, inline="always")
def _decimal(buf: np.ndarray, start: int, end: int) -> tuple[float, int, bool]:
    """:func:`_number` for its commonest form, ``[-]digits[.digits]`` with at most 18
    digits and a mantissa below 2**53, read in two tight loops (the same arithmetic, so
    the same result); any other form goes to :func:`_number`."""
    i = start
    if i < end and buf[i] == 45:
        i += 1
    m = 0
    first = i
    while i < end and 48 <= buf[i] <= 57:
        m = m * 10 + (buf[i] - 48)
        i += 1
    digits = i - first
    fraction = 0
    if i < end and buf[i] == 46:
        i += 1
        first = i
        while i < end and 48 <= buf[i] <= 57:
            m = m * 10 + (buf[i] - 48)
            i += 1
        fraction = i - first
    digits += fraction
    if (digits == 0 or digits > _MAX_DIGITS or m >= _TWO53
            or (i < end and (buf[i] == 101 or buf[i] == 69))):
        return _number(buf, start, end)
    value = m / _POW10[fraction] if fraction else float(m)
    return (-value if buf[start] == 45 else value), i, True


#: What :func:`_plain_row` found.
_ROW_OK, _ROW_OTHER, _ROW_MORE, _ROW_ROOM = 0, 1, 2, 3


@numba.njit(cache=True, inline="always")
def _delimiter(c: int) -> bool:
    """A byte that may follow a number: white space, the newline or a comment's '#'."""
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 35 or c == 11 or c == 12


@numba.njit(cache=True)
def _plain_row(buf, pos, n, final, base, indices, values, nnz):
    """One pass over the plain line at ``pos`` (``label index:value ...``, space or tab
    separated, plain decimal indices, an optional comment): the common case, read without
    first finding the line's end. Returns (what, label, newline position, entries end,
    whether the indices need sorting): _ROW_OK with the entries written from ``nnz``;
    _ROW_MORE when the chunk ends first (nothing kept); _ROW_ROOM when ``indices`` is
    full; _ROW_OTHER for anything else (not a data line, ``qid:``, a '+' index, an odd
    number or byte, an error), which the general path reads from ``pos`` again."""
    i = pos
    while i < n and (buf[i] == 32 or buf[i] == 9):
        i += 1
    if i == n or not (48 <= buf[i] <= 57 or buf[i] == 45 or buf[i] == 43 or buf[i] == 46):
        return _ROW_OTHER, 0.0, 0, nnz, False
    label, i, ok = _decimal(buf, i, n)
    if not ok or (i < n and not _delimiter(buf[i])):
        return _ROW_OTHER, 0.0, 0, nnz, False
    previous = -1
    unsorted = False
    room = len(indices)
    while True:
        if i >= n:
            if not final:
                return _ROW_MORE, 0.0, 0, nnz, False
            return _ROW_OK, label, n, nnz, unsorted
        c = buf[i]
        if c == 32 or c == 9 or c == 13:
            i += 1
            continue
        if c == _NEWLINE:
            return _ROW_OK, label, i, nnz, unsorted
        if c == _HASH:
            end = _line_end(buf, i, n)
            if end >= 0:
                return _ROW_OK, label, end, nnz, unsorted
            if not final:
                return _ROW_MORE, 0.0, 0, nnz, False
            return _ROW_OK, label, n, nnz, unsorted
        if nnz == room:
            return _ROW_ROOM, 0.0, 0, nnz, False
        col = 0
        j = i
        while j < n and 48 <= buf[j] <= 57:
            col = col * 10 + (buf[j] - 48)
            j += 1
        if (j == i or j == n or buf[j] != _COLON or j - i > 10 or col > 2**31 - 1
                or col < base):
            return _ROW_OTHER, 0.0, 0, nnz, False
        value, i, ok = _decimal(buf, j + 1, n)
        if not ok or (i < n and not _delimiter(buf[i])):
            return _ROW_OTHER, 0.0, 0, nnz, False
        col -= base
        if col <= previous:
            unsorted = True
        previous = col
        indices[nnz] = col
        values[nnz] = value
        nnz += 1


@numba.njit(cache=True)
def parse_chunk(buf, pos, n, final, base, bits, seed, wanted, state, y, indptr, indices,
                values, lines):
    """Parse the wanted data rows (sorted global row numbers) among the lines of
    ``buf[pos:n]``: labels into ``y``, entries into ``indices``/``values`` (CSR, sorted and
    without duplicates), row ends into ``indptr[1:]``, line numbers into ``lines``.

    ``bits`` > 0 hashes feature names (:mod:`.hashing`, with ``seed``): the name is the
    token up to its last colon (a token without one is a name with value 1), zero values
    are dropped and duplicates add up. ``bits`` = 0 reads integer indices from ``base``.

    Returns (bytes consumed, why): NEED_MORE, FINISHED (every wanted row done) or
    PYTHON_LINE (the line at state[P_START:P_END] needs the caller; nothing of it written)
    or NEED_ROOM (``indices``/``values`` are full: grow them and call again from there).
    """
    n_wanted = len(wanted)
    while pos < n:
        k = state[P_DONE]
        if k == n_wanted:
            return pos, FINISHED
        if bits == 0 and wanted[k] == state[P_ROW]:
            what, label, end, nnz, unsorted = _plain_row(buf, pos, n, final, base, indices,
                                                        values, state[P_NNZ])
            if what == _ROW_OK:
                if unsorted:
                    nnz = canonical_row(indices, values, state[P_NNZ], nnz)
                y[k] = label
                indptr[k + 1] = nnz
                lines[k] = state[P_LINE]
                state[P_NNZ] = nnz
                state[P_DONE] = k + 1
                state[P_ROW] += 1
                state[P_LINE] += 1
                pos = end + 1
                continue
            if what == _ROW_MORE:
                return pos, NEED_MORE
            if what == _ROW_ROOM:
                return pos, NEED_ROOM
        end = _line_end(buf, pos, n)
        if end < 0:
            if not final:
                return pos, NEED_MORE
            end = n
        content = _content_end(buf, pos, end)
        first = pos
        while first < content and _space(buf[first]):
            first += 1
        if first < content:
            row = state[P_ROW]
            k = state[P_DONE]
            if wanted[k] == row:
                nnz = state[P_NNZ]
                ok = True
                i = first
                token = 0
                label = 0.0
                while i < content:
                    while i < content and _space(buf[i]):
                        i += 1
                    t_end = i
                    colon = -1
                    while t_end < content and not _space(buf[t_end]):
                        if buf[t_end] == _COLON and (colon < 0 or bits > 0):
                            colon = t_end
                        t_end += 1
                    if token == 0:
                        label, ok = parse_float(buf, i, t_end)
                    elif colon < 0 and bits == 0:
                        ok = False
                    elif (colon - i == 3 and buf[i] == 113 and buf[i + 1] == 105
                          and buf[i + 2] == 100):  # qid:
                        pass
                    elif bits > 0:
                        if nnz == len(indices):
                            return pos, NEED_ROOM
                        value = 1.0
                        if colon >= 0:
                            value, ok = parse_float(buf, colon + 1, t_end)
                        h = murmurhash3_32(buf, i, t_end if colon < 0 else colon, seed)
                        if value != 0.0:
                            indices[nnz] = hashed_column(h, bits)
                            values[nnz] = value if h >= 0 else -value
                            nnz += 1
                    else:
                        if nnz == len(indices):
                            return pos, NEED_ROOM
                        col = _parse_index(buf, i, colon, base)
                        value, ok = parse_float(buf, colon + 1, t_end)
                        if col < 0:
                            ok = False
                        indices[nnz] = col
                        values[nnz] = value
                        nnz += 1
                    if not ok:
                        break
                    token += 1
                    i = t_end
                if not ok:
                    state[P_START] = pos
                    state[P_END] = end
                    return pos, PYTHON_LINE
                nnz = canonical_row(indices, values, state[P_NNZ], nnz, bits > 0)
                y[k] = label
                indptr[k + 1] = nnz
                lines[k] = state[P_LINE]
                state[P_NNZ] = nnz
                state[P_DONE] = k + 1
            state[P_ROW] = row + 1
        state[P_LINE] += 1
        pos = end + 1
    if state[P_DONE] == n_wanted:
        return min(pos, n), FINISHED
    return min(pos, n), NEED_MORE


@numba.njit(cache=True)
def take_rows(data, indices, indptr, y, lines, rows, out_data, out_indices, out_indptr,
              out_y, out_lines):
    """CSR rows ``rows`` (ascending) of ``(data, indices, indptr)`` with their labels and
    line numbers into the ``out_`` arrays (``out_indptr[0]`` must be 0). The outputs may
    be the inputs themselves: rows only move towards the front."""
    nnz = 0
    for k in range(len(rows)):
        r = rows[k]
        lo, hi = indptr[r], indptr[r + 1]
        for p in range(lo, hi):
            out_data[nnz] = data[p]
            out_indices[nnz] = indices[p]
            nnz += 1
        out_y[k] = y[r]
        out_lines[k] = lines[r]
        out_indptr[k + 1] = nnz
    return nnz


@numba.njit(cache=True)
def move(a, src, dst, n):
    """Move ``a[src:src + n]`` to ``a[dst:dst + n]`` in place (the ranges may overlap)."""
    if dst > src:
        for i in range(n - 1, -1, -1):
            a[dst + i] = a[src + i]
    elif dst < src:
        for i in range(n):
            a[dst + i] = a[src + i]
