"""Memory pages of the arrays a dataset is read into: small ones.

numpy asks Linux for transparent huge pages (2 MiB, ``madvise``) for every array of 4 MiB
or more. Where the kernel's THP ``defrag`` setting is ``madvise`` (Debian's and many
clusters' default) a fault on such an array first compacts memory to find a free 2 MiB
page: reading an 846 MB libsvm file into 0.73 GB of CSR arrays in a fresh process spent
0.4-1.8 s of system time there (1.9-2.0 s in all with 4 KiB pages, 2.4-3.4 s with huge
pages; README, "Sparse logistic regression"). A dataset is written once and then read
row by row, so :func:`small_pages` turns numpy's advice off while one is read; the
model's buffers, allocated afterwards, keep numpy's default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

try:  # (numpy's own switch; private, so absent from some version is no error)
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # pragma: no cover - numpy 1.x
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def small_pages() -> Iterator[None]:
    """numpy's huge-page advice off inside, restored after (see the module docstring)."""
    if _set_madvise_hugepage is None:
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


def with_small_pages(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` run inside :func:`small_pages`."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with small_pages():
            return function(*args, **kwargs)

    return wrapper
