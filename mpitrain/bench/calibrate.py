"""Calibration of the cost model (:mod:`mpitrain.collectives.cost`) on the communicator
at hand, for ``plan --measure``: the parameters as this machine delivers them while every
rank of the launch is busy, not as an idle ping-pong sees them.

- **Host share**: the ranks of the launch on each physical host (the same kernel: host
  name and boot id, so the emulated nodes of ``tests/cluster.py`` count as one host), the
  cores they may use (the union of their ``os.sched_getaffinity``), their ratio (the
  oversubscription: above 1, ranks time-share cores), and the load average (other work).
- **Compute**: the kernels' step time on one rank alone (the others sleep, giving their
  core back) and on every rank at once; their ratio is the measured time-sharing factor,
  against the ``max(1, ranks / cores)`` a dedicated machine would give.
- **Links**, per class: node-local (every node's ranks run a lock-step ring of
  ``Sendrecv`` on their node communicator, all nodes at once) and across nodes (the same
  ring over the whole communicator, whose slowest hop crosses nodes). ``alpha`` is one
  step's time with an 8-byte message, ``beta`` the extra bytes per second of a 1 MiB one.
  Every rank is active, as in a collective, so on an oversubscribed machine ``alpha``
  includes the wait for the receiving rank to get a core (MPI's progress is busy-polling:
  a rank waiting for a message holds a core until the scheduler preempts it).

Ranks that have nothing to do in a measurement wait in a sleeping barrier
(:func:`idle_barrier`), so they do not take cores from the ranks being timed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.cost import Links


def idle_barrier(comm: MPI.Comm, poll: float = 2e-4) -> None:
    """Collective: a barrier that sleeps between polls instead of spinning."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll)


def _host_key() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{os.uname().nodename}/{boot}"


def _cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def host_share(comm: MPI.Comm) -> dict[str, Any]:
    """Collective: the busiest host's ranks, usable cores, their ratio, and its load
    average (1, 5, 15 min; the same machine's other work included)."""
    every = comm.allgather((_host_key(), sorted(_cores())))
    hosts: dict[str, tuple[int, set[int]]] = {}
    for key, cores in every:
        count, union = hosts.get(key, (0, set()))
        hosts[key] = (count + 1, union | set(cores))
    ranks, cores = max(((count, len(union)) for count, union in hosts.values()),
                       key=lambda item: item[0] / item[1])
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"hosts": len(hosts), "ranks_on_host": ranks, "cores": cores,
            "oversubscription": ranks / cores, "load_average": load}


def ring_step_seconds(comm: MPI.Comm, nbytes: int, repeats: int) -> float:
    """Collective: seconds of one lock-step ring step (``Sendrecv`` of ``nbytes`` to the
    next rank, from the previous), every rank at once; the slowest rank's median over
    blocks of ``repeats`` steps (0 on one rank)."""
    size, rank = comm.Get_size(), comm.Get_rank()
    if size == 1:
        return 0.0
    send = np.ones(max(nbytes, 1), dtype=np.uint8)
    recv = np.empty_like(send)
    right, left = (rank + 1) % size, (rank - 1) % size
    blocks = []
    comm.Barrier()
    for _ in range(7):
        start = MPI.Wtime()
        for _ in range(repeats):
            comm.Sendrecv(send, right, 11, recv, left, 11)
        blocks.append((MPI.Wtime() - start) / repeats)
    return comm.allreduce(statistics.median(blocks[1:]), op=MPI.MAX)


def _alpha_beta(comm: MPI.Comm) -> tuple[float, float]:
    big = 1 << 20
    alpha = ring_step_seconds(comm, 8, 40)
    large = ring_step_seconds(comm, big, 4)
    return alpha, big / max(large - alpha, 1e-9)


def calibrate_links(comm: MPI.Comm, layout: Any) -> Links:
    """Collective: the links of the model, measured on ``comm`` (module docstring). A
    class the layout lacks (no node with two ranks, or one node) takes the other's
    values."""
    node = net = None
    if max(layout.sizes) > 1:
        if layout.node.Get_size() > 1:
            node = _alpha_beta(layout.node)
        idle_barrier(comm)
        node = comm.bcast(node, root=layout.node_of.index(
            max(range(layout.nodes), key=lambda i: layout.sizes[i])))
    if layout.nodes > 1:
        net = _alpha_beta(comm)
    node = node or net or (1e-6, 1e10)
    net = net or node
    return Links(net[0], net[1], node[0], node[1])


def compute_share(comm: MPI.Comm, step: Callable[[MPI.Comm], float]) -> dict[str, float]:
    """Collective: ``step(c)`` (collective on ``c``: seconds of one compute step) on rank
    0 alone while the others sleep, then on every rank at once; and their ratio."""
    alone = step(MPI.COMM_SELF) if comm.Get_rank() == 0 else 0.0
    idle_barrier(comm)
    alone = comm.bcast(alone, root=0)
    together = step(comm)
    return {"alone_seconds": alone, "together_seconds": together,
            "time_sharing": together / alone}
