"""Handles returned by ``start_allreduce``: ``test()`` polls, ``wait()`` finishes."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AllreduceHandle(Protocol):
    """An allreduce in flight. The buffer must not be touched until ``wait()`` returns."""

    def test(self) -> bool:
        """Make progress without blocking; True once the result is in the buffer."""
        ...

    def wait(self) -> np.ndarray:
        """Block until the result is in the buffer and return the buffer."""
        ...


class DoneHandle:
    """A handle whose work already finished (empty buffer, or a single rank)."""

    def __init__(self, buf: np.ndarray) -> None:
        self._buf = buf

    def test(self) -> bool:
        return True

    def wait(self) -> np.ndarray:
        return self._buf
