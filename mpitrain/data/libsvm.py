"""libsvm/svmlight files (``label index:value ... # comment``), read in parallel.

Opening on P ranks, rank r scans only bytes ``[r*S/P, (r+1)*S/P)`` of the file: it aligns to
the first line that starts in its range and counts data lines up to the first that starts
past it, keeping a checkpoint (row, byte offset, line number) every :data:`CHECKPOINT_ROWS`
data lines. One collective (:func:`share_scans`) then numbers the rows globally, so the
holdout and the block split are the same for any P. Reading seeks to the checkpoint before
the first wanted row and parses the wanted lines chunk by chunk into CSR
(:class:`~mpitrain.data.csr.Csr`) with numba (:mod:`.libsvm_parse`): a rank reads and
holds about 1/P of the file and never more than its rows.

A plain file (no ``.gz``, no ``--hash-bits``) skips the scan: each rank parses every row of
the lines that start in its byte range at once and keeps them (one rank: the whole file),
so the file is read once. One rank serves its reads from them (all rows: the arrays
themselves; a holdout split: the rows not asked for are copied out for the next read and
the asked ones compacted in place). On P ranks :func:`share_scans` shares the counts, which
number the kept rows globally, and :meth:`LibsvmSource.exchange` (collective) moves the
rows each rank's block needs from the neighbours that parsed them. A rank that finds a bad
line or runs out of memory scans instead; the ranks then read as above (from the file),
so errors name their line as before.

Feature indices may be 1-based (libsvm's convention) or 0-based (scikit-learn's
``dump_svmlight_file`` default): ``--zero-based auto`` decides by whether any index in the
file is 0, which the scan notes. Indices in a row may be unsorted or repeated (the last
value of a repeated index counts); ``qid:`` tokens are skipped.

With ``hash_bits`` (``--hash-bits B``) the tokens are feature *names* (``label name:value
name2 ...``, Vowpal Wabbit's way; numbers are names too): each is hashed to one of ``2**B``
columns with a sign (:mod:`.hashing`), a token without a value counts 1, and repeated names
and collisions add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from mpi4py import MPI

from mpitrain.data import libsvm_parse as kernels
from mpitrain.data.base import Block, Source
from mpitrain.data.csr import Csr
from mpitrain.data.files import is_gzip, open_bytes
from mpitrain.data.hashing import hash_name
from mpitrain.data.memory import request_rows, segment_sums
from mpitrain.errors import UserError

#: A checkpoint is kept every this many data lines.
CHECKPOINT_ROWS = 1024
#: Largest libsvm feature index accepted.
MAX_INDEX = 2**31 - 1
#: Bytes read at a time (a longer line grows the buffer).
CHUNK_BYTES = 4 << 20
_BOM = b"\xef\xbb\xbf"
#: Per rank and file in share_scans: libsvm? (_SCANNED or _PARSED), rows, lines, zero,
#: checkpoints, size, colons (entries, when parsed).
_FIELDS = 7
_SCANNED, _PARSED = 1, 2
_CHECKPOINT_ARRAYS = 4  # rows, byte offsets, line numbers, colons before


class LibsvmSource(Source):
    """A libsvm/svmlight file. ``part=(rank, size)`` parses (plain files) or scans only
    that rank's byte range; :func:`share_scans` (collective) then completes every rank's
    view, and :attr:`collective` says whether the rows are then read with
    :meth:`exchange` (every rank parsed its range) or :meth:`read`. With the default
    ``(0, 1)`` the whole file is opened and the source is ready at once.

    ``n_features`` is None: the width is the largest index over the whole file, known once
    every rank has read its rows. ``zero_based``: ``"true"`` (index 0 is column 0),
    ``"false"`` (index 1 is column 0; an index 0 is an error) or ``"auto"`` (0-based when
    the file has an index 0; :func:`mpitrain.data.sources.settle_libsvm_base` extends that
    to a training and a test file together, as scikit-learn's ``load_svmlight_files``).
    ``hash_bits`` > 0 hashes feature names into ``n_features = 2**hash_bits`` columns with
    MurmurHash3 seeded by ``hash_seed`` (see the module docstring).
    """

    n_features = None
    signed_labels = True

    def __init__(self, path: Path, *, option: str, zero_based: str = "auto",
                 part: tuple[int, int] = (0, 1), hash_bits: int = 0,
                 hash_seed: int = 0) -> None:
        super().__init__(option, path.name, f"'{path}'")
        self.path = path
        self.zero_based = zero_based
        self.hash_bits, self.hash_seed = hash_bits, hash_seed
        if hash_bits:
            self.n_features = 2**hash_bits  # type: ignore[assignment]
        try:
            self.file_size = path.stat().st_size
        except OSError as exc:
            raise self.error(f"cannot read {self.quoted} ({exc.strerror or exc})") from exc
        self.n_rows: int | None = None  # type: ignore[assignment]  # known once shared
        #: The rows parsed while opening (see :meth:`_parse_range`), until read.
        self._held: _Rows | None = None
        #: What :func:`share_scans` learns of a parsed range (table row, checkpoint).
        self._parsed: tuple[np.ndarray, np.ndarray] | None = None
        #: Whether the rows are read with the collective :meth:`exchange` (every rank
        #: parsed its byte range while opening; see :func:`share_scans`).
        self.collective = False
        self._rank = part[0]
        if is_gzip(path):  # a compressed stream has no byte ranges: every rank scans it all
            self.file_size, part = 2**62, (0, 1)
        elif not hash_bits and self._parse_range(*part):
            return
        self._scan(*part)
        if part[1] == 1:
            self.settle(self._local_table()[None, :], *self._local_checkpoints())

    def open_file(self) -> AbstractContextManager[IO[bytes]]:
        """The file as bytes (``.gz`` decompressed as it is read)."""
        return open_bytes(self, self.path)

    # ------------------------------------------------------------------ opening
    def _scan(self, rank: int, size: int) -> None:
        """Count the data lines that start in this rank's byte range (local)."""
        lo, hi = self.file_size * rank // size, self.file_size * (rank + 1) // size
        self._state = np.zeros(5, dtype=np.int64)
        capacity = 64
        ck = [np.empty(capacity, dtype=np.int64) for _ in range(_CHECKPOINT_ARRAYS)]
        with self.open_file() as fp:
            start = self._first_line(fp, lo)
            fp.seek(start)
            buf = np.empty(CHUNK_BYTES, dtype=np.uint8)
            offset, carry = start, 0
            while True:
                got = fp.readinto(memoryview(buf)[carry:])
                n = carry + got
                need = int(self._state[kernels.S_CHECKPOINTS]) + n // (2 * CHECKPOINT_ROWS) + 2
                if need > capacity:
                    capacity = max(2 * capacity, need)
                    ck = [np.resize(a, capacity) for a in ck]
                used, reached = kernels.scan_chunk(buf, n, got == 0, hi - offset,
                                                   CHECKPOINT_ROWS, self._state, *ck, offset)
                if reached or got == 0:
                    break
                buf, carry = _keep_tail(buf, used, n)
                offset += used
        k = int(self._state[kernels.S_CHECKPOINTS])
        self._checkpoints = [a[:k].copy() for a in ck]

    def _parse_range(self, rank: int, size: int) -> bool:
        """Open a plain file in one pass: parse every row of the lines that start in this
        rank's byte range (the indices as written; the base is known only later) and keep
        them, instead of a scan then a parse. Their row and line numbers are local until
        :func:`share_scans` (one rank: at once). False (nothing kept) when a line is bad,
        an index 0 must be one or memory runs out (the scan and :meth:`read` then say so
        as usual, with the global line number)."""
        self.base = 0  # the indices as written, for the Python path too
        lo, hi = self.file_size * rank // size, self.file_size * (rank + 1) // size
        capacity = max(1024, (hi - lo) // 256)
        out = _Parsed(np.arange(capacity, dtype=np.int64), (hi - lo) // 12 + 16)
        out.state[kernels.P_LINE] = 1
        try:
            with self.open_file() as fp:
                start = self._first_line(fp, lo)
                stop = self.file_size if rank == size - 1 else self._first_line(fp, hi)
                fp.seek(start)
                self._parse_stream(fp, out, every_row=True, limit=max(stop - start, 0))
        except (UserError, MemoryError):
            return False
        state, indices, values = out.state, out.indices, out.values
        y, lines, indptr = out.y, out.lines, out.indptr
        n, nnz = int(state[kernels.P_DONE]), int(state[kernels.P_NNZ])
        has_zero = bool(nnz) and int(indices[:nnz].min()) == 0
        if has_zero and self.zero_based == "false":
            return False
        for a in (y, lines):
            a.resize(n, refcheck=False)
        indptr.resize(n + 1, refcheck=False)
        if size == 1:  # read as they are; on P ranks the room left takes rows of others
            indices.resize(nnz, refcheck=False)
            values.resize(nnz, refcheck=False)
        self._held = _Rows(np.arange(n, dtype=np.int64), values, indices, indptr, y, lines)
        table = np.array([_PARSED, n, state[kernels.P_LINE] - 1, has_zero, 1, self.file_size,
                          nnz], dtype=np.int64)
        self._parsed = table, np.array([0, start, 0, 0], dtype=np.int64)
        if size == 1:
            self.settle(table[None, :], *self._local_checkpoints())
        return True

    def _first_line(self, fp: IO[bytes], lo: int) -> int:
        """Byte offset of the first line starting at or after ``lo`` (after a BOM at 0)."""
        if lo == 0:
            return len(_BOM) if fp.read(len(_BOM)) == _BOM else 0
        fp.seek(lo - 1)
        position = lo - 1
        while True:
            chunk = fp.read(1 << 16)
            if not chunk:
                return position
            newline = chunk.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(chunk)

    def _local_table(self) -> np.ndarray:
        if self._parsed is not None:
            return self._parsed[0]
        s = self._state
        return np.array([_SCANNED, s[kernels.S_ROWS], s[kernels.S_LINES], s[kernels.S_ZERO],
                         s[kernels.S_CHECKPOINTS], self.file_size, s[kernels.S_COLONS]],
                        dtype=np.int64)

    def _local_checkpoints(self) -> tuple[np.ndarray, np.ndarray]:
        if self._parsed is not None:
            return self._parsed[1], np.array([1], dtype=np.int64)
        counts = np.array([len(self._checkpoints[0])], dtype=np.int64)
        return np.concatenate(self._checkpoints), counts

    def settle(self, table: np.ndarray, checkpoints: np.ndarray, counts: np.ndarray) -> None:
        """Number the rows globally from every rank's scan (``table``: a row per rank of
        :func:`share_scans`'s fields; ``checkpoints``: each rank's rows, offsets, lines and
        colons before, with ``counts`` checkpoints per rank)."""
        before = [np.concatenate([[0], np.cumsum(table[:, i])]) for i in (1, 2, 6)]
        parts = np.split(checkpoints, np.cumsum(_CHECKPOINT_ARRAYS * counts)[:-1])
        ck: list[list[np.ndarray]] = [[], [], [], []]
        for owner, part in enumerate(parts):
            rows, offsets, lines, colons = part.reshape(_CHECKPOINT_ARRAYS, -1)
            ck[0].append(rows + before[0][owner])
            ck[1].append(offsets)
            ck[2].append(lines + before[1][owner] + 1)
            ck[3].append(colons + before[2][owner])
        self.ck_rows, self.ck_offsets, self.ck_lines, self.ck_colons = map(np.concatenate, ck)
        #: The first row each rank holds (parsed), then the row count (see exchange).
        self.offsets = before[0]
        if self._held is not None and len(table) > 1:  # the rows this rank parsed
            self._held.rows += before[0][self._rank]
            self._held.lines += before[1][self._rank]
        self.n_rows = int(before[0][-1])
        self.n_colons = int(before[2][-1])
        self.has_zero = bool(table[:, 3].any())
        #: The index that goes to column 0.
        self.base = 0 if self.zero_based == "true" or (
            self.zero_based == "auto" and self.has_zero) else 1
        if self.n_rows == 0:
            raise self.error(f"{self.quoted} has no data rows")

    # ------------------------------------------------------------------ reading
    def read(self, rows: np.ndarray) -> Block:
        held = self._held_rows(rows)
        if held is not None:
            nnz = int(held.indptr[-1])
            values, indices = held.values[:nnz], held.indices[:nnz]
            if self.base:
                indices -= self.base
            width = self.n_features or (int(indices.max()) + 1 if len(indices) else 0)
            X = Csr(values, indices, held.indptr, width)
            return Block(X=X, y=held.y, rows=rows, lines=held.lines)
        n = len(rows)
        out = _Parsed(np.ascontiguousarray(rows, dtype=np.int64),
                      self._entries_at_most(rows) + 16)
        if n:
            k = int(np.searchsorted(self.ck_rows, rows[0], side="right")) - 1
            out.state[kernels.P_ROW] = self.ck_rows[k]
            out.state[kernels.P_LINE] = self.ck_lines[k]
            with self.open_file() as fp:
                fp.seek(int(self.ck_offsets[k]))
                self._parse_stream(fp, out, every_row=False)
        state, indices, values = out.state, out.indices, out.values
        y, lines, indptr = out.y, out.lines, out.indptr
        if state[kernels.P_DONE] != n:
            raise self.error(f"{self.quoted} changed while being read")
        nnz = int(state[kernels.P_NNZ])
        indices.resize(nnz, refcheck=False)
        values.resize(nnz, refcheck=False)
        width = self.n_features or (int(indices.max()) + 1 if nnz else 0)
        X = Csr(values, indices, indptr, width)
        return Block(X=X, y=y, rows=rows, lines=lines)

    def exchange(self, comm: MPI.Comm, rows: np.ndarray) -> Block:
        """Collective (:attr:`collective` sources): the rows with the given sorted global
        numbers, from the ranks that parsed them while opening (each row once: the rows
        nobody asks for are kept for the next exchange). A rank's block differs from the
        rows it parsed only near the ends, so little moves: its own rows are moved (a run
        of rows: at most once) or compacted in place and the others received into the
        same arrays, which have room for them (memory: its share)."""
        rank = comm.Get_rank()
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        wanted, asked, requested = request_rows(comm, rows, self.offsets)
        held = self._held or _Rows.empty()
        at = np.searchsorted(held.rows, requested)
        gone = np.array([len(at) > 0 and (at[-1] >= len(held.rows) or not (held.rows[
            np.minimum(at, len(held.rows) - 1)] == requested).all())], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, gone, op=MPI.MAX)  # (every rank raises: none waits)
        if gone[0]:
            raise RuntimeError(f"{self.quoted}: rows asked for were read already (on some "
                               "rank)")
        ask_at = np.concatenate([[0], np.cumsum(asked)]).astype(np.int64)
        sent = held.take(np.concatenate([at[: ask_at[rank]], at[ask_at[rank + 1] :]]))
        rest = np.ones(len(held.rows), dtype=bool)
        rest[at] = False
        self._held = held.take(np.flatnonzero(rest), room=True) if rest.any() else None
        mine_at = at[ask_at[rank] : ask_at[rank + 1]]
        if len(mine_at) and mine_at[-1] - mine_at[0] + 1 == len(mine_at):
            own, own_row = held, int(mine_at[0])  # a run of rows: moved once, below
        else:
            own, own_row = held.take(mine_at, in_place=True, room=True), 0
        own_entry = int(own.indptr[own_row])
        own_nnz = int(own.indptr[own_row + len(mine_at)]) - own_entry
        send_rows, recv_rows = asked.copy(), wanted.copy()
        send_rows[rank] = recv_rows[rank] = 0  # our own rows stay where they are
        row_at = np.concatenate([[0], np.cumsum(wanted)]).astype(np.int64)
        n, first = len(rows), int(row_at[rank])
        lengths = np.empty(n, dtype=np.int64)
        lengths[first : first + len(mine_at)] = np.diff(
            own.indptr[own_row : own_row + len(mine_at) + 1])
        comm.Alltoallv([np.diff(sent.indptr), send_rows], [lengths, (recv_rows, row_at[:-1])])
        entry_at = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)[row_at]
        sent_lengths = np.diff(sent.indptr)
        send_entries, recv_entries = segment_sums(sent_lengths, send_rows), np.diff(entry_at)
        recv_entries[rank] = 0
        n_entries, first_entry = int(entry_at[-1]), int(entry_at[rank])
        by_rows = (send_rows, n, (recv_rows, row_at[:-1]), first)
        by_entries = (send_entries, n_entries, (recv_entries, entry_at[:-1]), first_entry)
        for mine, theirs, (src, kept), (send, room, recv, dst) in (
                (own.y, sent.y, (own_row, len(mine_at)), by_rows),
                (own.lines, sent.lines, (own_row, len(mine_at)), by_rows),
                (own.values, sent.values, (own_entry, own_nnz), by_entries),
                (own.indices, sent.indices, (own_entry, own_nnz), by_entries)):
            if room > len(mine):  # the entry arrays mostly have room already
                mine.resize(room, refcheck=False)
            kernels.move(mine, src, dst, kept)
            comm.Alltoallv([theirs, send], [mine, recv])
        indptr = own.indptr
        if n + 1 > len(indptr):
            indptr.resize(n + 1, refcheck=False)
        indptr = indptr[: n + 1]
        np.cumsum(lengths, out=indptr[1:])
        values, indices = own.values[:n_entries], own.indices[:n_entries]
        if self.base:
            indices -= self.base
        width = self.n_features or (int(indices.max()) + 1 if len(indices) else 0)
        return Block(X=Csr(values, indices, indptr, width), y=own.y[:n], rows=rows,
                     lines=own.lines[:n])

    def _held_rows(self, rows: np.ndarray) -> _Rows | None:
        """The kept rows ``rows`` (taken out of what is kept: the rest stays for the next
        read), or None when some are not kept (every kept row is then dropped)."""
        held, self._held = self._held, None
        if held is None:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == len(held.rows) and (rows == held.rows).all():
            return held
        at = np.searchsorted(held.rows, rows)
        if not (at < len(held.rows)).all() or not (held.rows[np.minimum(
                at, len(held.rows) - 1)] == rows).all() or (np.diff(at) <= 0).any():
            return None  # not all kept, or not ascending (in place needs ascending)
        rest = np.ones(len(held.rows), dtype=bool)
        rest[at] = False
        self._held = held.take(np.flatnonzero(rest))  # a copy: the rows not read yet
        return held.take(at, in_place=True)

    def _entries_at_most(self, rows: np.ndarray) -> int:
        """The colons between the checkpoints around ``rows``: room enough for their
        entries, so the arrays are allocated once."""
        if not len(rows):
            return 0
        first = int(np.searchsorted(self.ck_rows, rows[0], side="right")) - 1
        last = int(np.searchsorted(self.ck_rows, rows[-1], side="right"))
        end = self.ck_colons[last] if last < len(self.ck_colons) else self.n_colons
        return int(end - self.ck_colons[first])

    def _parse_stream(self, fp: IO[bytes], out: _Parsed, *, every_row: bool,
                      limit: int | None = None) -> None:
        """Parse ``out.wanted``'s rows from ``fp`` on, chunk by chunk, into ``out`` (with
        ``every_row``: every row to the end of the file, or of its next ``limit`` bytes,
        the row arrays grown as needed)."""
        buf = np.empty(CHUNK_BYTES, dtype=np.uint8)
        carry = 0
        while True:
            room = len(buf) - carry if limit is None else min(len(buf) - carry, limit)
            got = fp.readinto(memoryview(buf)[carry : carry + room])
            if limit is not None:
                limit -= got
            n_bytes, pos = carry + got, 0
            while True:
                pos, why = kernels.parse_chunk(
                    buf, pos, n_bytes, got == 0, self.base, self.hash_bits, self.hash_seed,
                    out.wanted, out.state, out.y, out.indptr, out.indices, out.values,
                    out.lines)
                if why == kernels.NEED_ROOM:
                    out.grow_entries(0)
                elif why == kernels.PYTHON_LINE:
                    self._python_line(buf, out)
                    pos = int(out.state[kernels.P_END]) + 1
                elif why == kernels.FINISHED and every_row and pos < n_bytes:
                    out.grow_rows()
                else:
                    break
            if got == 0 or (why == kernels.FINISHED and not every_row):
                return
            buf, carry = _keep_tail(buf, min(pos, n_bytes), n_bytes)

    def _python_line(self, buf: np.ndarray, out: _Parsed) -> None:
        """Parse the line the kernel left (unusual numbers, or an error to name) and record
        it as the kernel would have."""
        state = out.state
        raw = bytes(buf[state[kernels.P_START] : state[kernels.P_END]])
        number = int(state[kernels.P_LINE])
        label, entries = (self.parse_hashed_line(raw, number) if self.hash_bits
                          else self.parse_line(raw, number))
        k, nnz = int(state[kernels.P_DONE]), int(state[kernels.P_NNZ])
        if nnz + len(entries) > len(out.indices):
            out.grow_entries(len(entries))
        for j, column in enumerate(sorted(entries)):
            out.indices[nnz + j], out.values[nnz + j] = column, entries[column]
        out.y[k], out.lines[k] = label, number
        out.indptr[k + 1] = nnz + len(entries)
        state[kernels.P_NNZ] = nnz + len(entries)
        state[kernels.P_DONE] = k + 1
        state[kernels.P_ROW] += 1
        state[kernels.P_LINE] += 1

    def parse_line(self, raw: bytes, number: int) -> tuple[float, dict[int, float]]:
        """A line's label and ``{column: value}`` (the last value of a repeated index),
        token by token in Python; names the line and the token that is wrong."""
        text = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
        body = text.split("#", 1)[0].split()
        label = self._number(body[0], number, "label")
        entries: dict[int, float] = {}
        for pair in body[1:]:
            key, sep, value = pair.partition(":")
            if key == "qid":
                continue
            if not sep:
                raise self.error(f"{self.quoted} line {number} has {pair!r} (expected index:value)")
            column = self._index(key, number) - self.base
            entries.pop(column, None)
            entries[column] = self._number(value, number, "value")
        return label, entries

    def parse_hashed_line(self, raw: bytes, number: int) -> tuple[float, dict[int, float]]:
        """:meth:`parse_line` for hashed names: ``{column: signed sum of the values}``, the
        names hashed as the bytes they are in the file."""
        body = raw.strip().lstrip(b"\xef\xbb\xbf").split(b"#", 1)[0].split()
        label = self._number(body[0].decode("utf-8", errors="replace"), number, "label")
        entries: dict[int, float] = {}
        for token in body[1:]:
            name, sep, text = token.rpartition(b":")
            if not sep:
                name, text = token, b"1"
            if name == b"qid":
                continue
            value = self._number(text.decode("utf-8", errors="replace"), number, "value")
            column, sign = hash_name(name, bits=self.hash_bits, seed=self.hash_seed)
            if value != 0:
                entries[column] = entries.get(column, 0.0) + sign * value
        return label, entries

    def _number(self, text: str, number: int, what: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise self.error(
                f"{self.quoted} line {number} has a non-numeric {what} {text!r}"
            ) from None

    def _index(self, text: str, number: int) -> int:
        """A feature index, from ``base`` to MAX_INDEX."""
        try:
            index, hint = int(text), ""
        except ValueError:
            index, hint = -1, "; feature names need --hash-bits"
        if not self.base <= index <= MAX_INDEX:
            raise self.error(
                f"{self.quoted} line {number} has feature index {text!r} "
                f"(expected an integer from {self.base} to {MAX_INDEX}{hint})"
            )
        return index


class _Parsed:
    """What :func:`~.libsvm_parse.parse_chunk` fills: the wanted row numbers, the parse
    state, labels, line numbers and CSR arrays (``room`` entries to start with)."""

    def __init__(self, wanted: np.ndarray, room: int) -> None:
        n = len(wanted)
        self.wanted = wanted
        self.state = np.zeros(6, dtype=np.int64)
        self.y, self.lines = np.empty(n), np.empty(n, dtype=np.int64)
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        self.indices, self.values = np.empty(room, dtype=np.int32), np.empty(room)

    def grow_entries(self, extra: int) -> None:
        size = int(len(self.indices) * 1.5) + 16 + extra
        self.indices.resize(size, refcheck=False)
        self.values.resize(size, refcheck=False)

    def grow_rows(self) -> None:
        """Twice the room for rows (reading every row of a file)."""
        n = 2 * len(self.wanted)
        self.wanted = np.arange(n, dtype=np.int64)
        for a in (self.y, self.lines):
            a.resize(n, refcheck=False)
        self.indptr.resize(n + 1, refcheck=False)


@dataclass
class _Rows:
    """Parsed rows kept by a source: their row numbers, CSR arrays, labels, lines (the
    entry arrays may have room past ``indptr[-1]``)."""

    rows: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    y: np.ndarray
    lines: np.ndarray

    @staticmethod
    def empty() -> _Rows:
        """No rows."""
        return _Rows(np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int32),
                     np.zeros(1, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int64))

    def take(self, at: np.ndarray, *, in_place: bool = False, room: bool = False) -> _Rows:
        """The rows at positions ``at`` (ascending): new arrays, or these arrays reused
        and shrunk (``in_place``; this object is then spent). With ``room`` the entry
        arrays keep (or get) room for more entries, untouched so not resident: growing
        them later needs no copy (moving an array numpy advised huge pages for copies
        it)."""
        n = len(at)
        at = np.ascontiguousarray(at, dtype=np.int64)
        if in_place:
            out = self
        else:
            nnz = int((self.indptr[at + 1] - self.indptr[at]).sum())
            nnz += nnz // 8 + 1024 if room else 0
            out = _Rows(self.rows[at], np.empty(nnz), np.empty(nnz, dtype=np.int32),
                        np.zeros(n + 1, dtype=np.int64), np.empty(n),
                        np.empty(n, dtype=np.int64))
        nnz = kernels.take_rows(self.values, self.indices, self.indptr, self.y, self.lines,
                                at, out.values, out.indices, out.indptr, out.y, out.lines)
        if in_place:
            out.rows = self.rows[at]
            for a, size in ((out.values, nnz), (out.indices, nnz), (out.indptr, n + 1),
                            (out.y, n), (out.lines, n))[2 * room :]:
                a.resize(size, refcheck=False)
        return out


def _keep_tail(buf: np.ndarray, used: int, n: int) -> tuple[np.ndarray, int]:
    """Move the unconsumed ``buf[used:n]`` to the front (growing ``buf`` when a line fills
    it); returns the buffer and how many bytes it now holds."""
    carry = n - used
    if carry == len(buf):
        grown = np.empty(2 * len(buf), dtype=np.uint8)
        grown[:carry] = buf[:n]
        return grown, carry
    buf[:carry] = buf[used:n]
    return buf, carry


def share_scans(comm: MPI.Comm, sources: Sequence[Source | None]) -> None:
    """Collective: combine the ranks' scans of every libsvm source opened with a ``part``.

    Every rank passes as many sources, of any kinds, so the collectives match whatever each
    rank opened; ranks that opened different files (sizes or kinds) get one UserError.
    """
    size = comm.Get_size()
    message = None
    for source in sources:
        pending = isinstance(source, LibsvmSource) and source.n_rows is None
        mine = source._local_table() if pending else np.zeros(_FIELDS, dtype=np.int64)
        table = np.empty((size, _FIELDS), dtype=np.int64)
        comm.Allgather(mine, table)
        local = source._local_checkpoints()[0] if pending else np.empty(0, dtype=np.int64)
        counts = table[:, 4]
        gathered = np.empty(_CHECKPOINT_ARRAYS * int(counts.sum()), dtype=np.int64)
        comm.Allgatherv(local, (gathered, _CHECKPOINT_ARRAYS * counts))
        if not table[:, 0].any():
            continue
        if not (table[:, 0].all() and (table[:, 5] == table[0, 5]).all()):
            message = message or (
                f"{source.option if source else '--data'}: the ranks see different data "
                f"(file sizes: {', '.join(map(str, table[:, 5]))} bytes); is the file the "
                "same on every node?")
            continue
        try:
            source.settle(table, gathered, counts)  # type: ignore[union-attr]
        except UserError as exc:  # the same on every rank: all have the same table
            message = message or str(exc)
            continue
        # every rank parsed its range: the rows move between ranks (exchange), no rescan
        source.collective = size > 1 and bool((table[:, 0] == _PARSED).all())  # type: ignore[union-attr]
    if message:
        raise UserError(message)
