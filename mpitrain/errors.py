"""User errors and how every rank agrees on them.

A user error (bad option, unreadable file, bad data) must end the job with one message,
printed once, exit status 2, on every rank at once. Checks whose outcome can differ between
ranks (a rank's shard has NaNs, a rank cannot read its rows) go through :func:`agree` or
:func:`checked`, which are collective: every rank learns about a failure on any rank
before anybody enters the next collective, so nobody is left waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mpi4py import MPI

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input: reported once by rank 0, exit status 2.

    ``agreed`` is true once every rank is known to hold the same error (it came out of
    :func:`agree`); the CLI then exits cleanly. A UserError that did not pass through
    :func:`agree` may exist on one rank only, so the CLI aborts the job to be safe.
    """

    agreed: bool = False


def agree(comm: MPI.Comm, message: str | None) -> None:
    """Collective: raise :class:`UserError` on every rank if any rank passes a message.

    The message of the lowest failing rank wins, so the report does not depend on timing.
    """
    messages = comm.allgather(message)
    for text in messages:
        if text is not None:
            raise shared_error(text)


def shared_error(message: str) -> UserError:
    """A UserError for a condition every rank has observed identically (e.g. a loss after
    the allreduce): safe to raise without another collective."""
    error = UserError(message)
    error.agreed = True
    return error


def checked(comm: MPI.Comm, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Collective: run ``fn`` on every rank and turn a UserError on any rank into one on all.

    ``fn`` must not itself call collectives on ``comm`` (a rank that failed early would
    not reach them).
    """
    result = None
    message = None
    try:
        result = fn(*args, **kwargs)
    except UserError as exc:
        message = str(exc)
    agree(comm, message)
    return result  # type: ignore[return-value]


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
