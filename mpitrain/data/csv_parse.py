"""numba kernel that parses the wanted rows of a numeric CSV held in a byte buffer.

The fast path of :class:`mpitrain.data.text.CsvSource`: like
:func:`mpitrain.data.libsvm_parse.parse_chunk` it works chunk by chunk, stops at the last
complete line unless told the chunk ends the file and keeps its progress in a small state
array. Numbers are parsed exactly as Python's ``float`` (:func:`.libsvm_parse.parse_float`).
Anything else (a label that is a name, a line with another number of columns, ``inf``, a
long mantissa, a bad value) makes it give up, and the caller reads the rows the general
way, which also names the line of an error.
"""

from __future__ import annotations

import numba
import numpy as np

from mpitrain.data.libsvm_parse import _line_end, _space, parse_float

#: State slots: next data row, next line number, wanted rows done.
C_ROW, C_LINE, C_DONE = 0, 1, 2
#: Why :func:`parse_csv_chunk` returned.
NEED_MORE, FINISHED, GIVE_UP = 0, 1, 2
#: ``fields`` entries: a column that is skipped, and the label column.
SKIP, LABEL = -1, -2
_COMMA = 44


@numba.njit(cache=True)
def _field(buf: np.ndarray, start: int, end: int) -> tuple[float, bool]:
    """The number in ``buf[start:end]`` without surrounding white space."""
    while start < end and _space(buf[start]):
        start += 1
    while end > start and _space(buf[end - 1]):
        end -= 1
    return parse_float(buf, start, end)


@numba.njit(cache=True)
def parse_csv_chunk(buf, pos, n, final, fields, wanted, state, X, y, lines):
    """Parse the wanted data rows (sorted; blank lines are not rows) among the lines of
    ``buf[pos:n]``: column ``j`` goes to ``X[:, fields[j]]``, to ``y`` (``LABEL``) or
    nowhere (``SKIP``); line numbers into ``lines``. Returns (bytes consumed, why)."""
    n_wanted = len(wanted)
    n_fields = len(fields)
    while pos < n:
        if state[C_DONE] == n_wanted:
            return pos, FINISHED
        end = _line_end(buf, pos, n)
        if end < 0:
            if not final:
                return pos, NEED_MORE
            end = n
        first = pos
        while first < end and _space(buf[first]):
            first += 1
        if first < end:
            row = state[C_ROW]
            k = state[C_DONE]
            if wanted[k] == row:
                j = 0
                start = pos
                i = pos
                while i <= end:
                    if i == end or buf[i] == _COMMA:
                        if j >= n_fields:
                            return pos, GIVE_UP
                        target = fields[j]
                        if target != SKIP:
                            value, ok = _field(buf, start, i)
                            if not ok:
                                return pos, GIVE_UP
                            if target == LABEL:
                                y[k] = value
                            else:
                                X[k, target] = value
                        j += 1
                        start = i + 1
                    i += 1
                if j != n_fields:
                    return pos, GIVE_UP
                lines[k] = state[C_LINE]
                state[C_DONE] = k + 1
            state[C_ROW] = row + 1
        state[C_LINE] += 1
        pos = end + 1
    if state[C_DONE] == n_wanted:
        return min(pos, n), FINISHED
    return min(pos, n), NEED_MORE
