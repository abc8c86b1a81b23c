"""Opening text files for reading, plain or gzip-compressed (``.gz``), as one byte stream.

A ``.gz`` file is decompressed as it is read: no decompressed copy is written or held.
Seeking forward in it decompresses up to that point, so each rank reading a compressed file
reads it from the start (a plain file is read from the rank's own offset).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from mpitrain.data.base import Source

#: What a damaged or truncated compressed file raises while it is read.
READ_ERRORS = (OSError, EOFError, zlib.error)


def is_gzip(path: Path) -> bool:
    """Whether ``path`` names a gzip-compressed file (by its suffix)."""
    return path.suffix.lower() == ".gz"


def format_suffix(path: Path) -> str:
    """The suffix that names the format: ``.svm`` for ``a.svm`` and ``a.svm.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return suffixes[-2]
    return path.suffix.lower()


@contextmanager
def open_bytes(source: Source, path: Path) -> Iterator[IO[bytes]]:
    """``path`` opened for binary reading (decompressing ``.gz``); a file that cannot be
    opened or read (missing, damaged, truncated) raises ``source``'s UserError naming it."""
    try:
        fp: IO[bytes] = gzip.open(path, "rb") if is_gzip(path) else path.open("rb")
    except OSError as exc:
        raise source.error(f"cannot read {source.quoted} ({exc.strerror or exc})") from exc
    try:
        with fp:
            yield fp
    except READ_ERRORS as exc:
        raise source.error(f"cannot read {source.quoted} ({exc})") from exc
