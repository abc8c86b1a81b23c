"""Alpha-beta cost model of every allreduce algorithm on ``N`` nodes of ``L`` ranks, for
planning runs larger than any machine at hand (``python -m mpitrain plan``).

A message of ``b`` bytes costs ``alpha + b / beta`` on a link. Two kinds of link
(:class:`Links`): between nodes (``alpha_net``, ``beta_net``: one node's network
bandwidth, shared by its ranks' simultaneous cross-node messages) and inside a node
(``alpha_node``: a message or a shared-memory barrier; ``beta_node``: one rank's copy
bandwidth). Ranks are placed node by node. ``P = N * L`` ranks, message ``n`` bytes:

- ``ring`` (:mod:`.ring`): ``2(P-1)`` steps of ``n/P`` bytes in lock step; each step
  waits for its slowest hop, which crosses nodes when ``N > 1`` (one rank per node sends
  across, so it has the node's bandwidth to itself)::

      2(P-1) * (alpha + n/P / beta)          alpha, beta = net if N > 1 else node

- ``hierarchical`` (:mod:`.hierarchical`): copy in, node-local sum of ``L`` slices, copy
  out (``3n`` bytes of memory traffic per rank and two barriers), and ``L`` rings over
  the ``N`` nodes, one per slice, sharing the node's bandwidth::

      2 alpha_node + 3n / beta_node + 2(N-1) * (alpha_net + n/(N L) / (beta_net / L))

- ``mpi``: MPICH's ``Allreduce``, on one kind of link the better of recursive doubling
  (``log2 P`` steps of ``n`` bytes) and Rabenseifner's reduce-scatter + allgather
  (``2 log2 P`` latencies, ``2n(1 - 1/P)`` bytes); across nodes MPICH's node-aware
  composition: a binomial reduce inside the node, that allreduce among one rank per node,
  a binomial broadcast inside the node (``2 log2 L`` node-local steps of ``n`` bytes);
- ``root``: binomial ``Reduce`` then ``Bcast`` of the whole message (``log2 N`` cross-node
  and ``log2 L`` node-local levels each way);
- ``shm`` (one node only): every rank copies its message in and reads all ``L``:
  ``alpha_node + (L + 1) n / beta_node``.

Non-power-of-two counts round ``log2`` up. The model ignores overlap of computation and
communication, congestion beyond one node's link, the network's topology and stragglers;
``plan --measure`` checks it against training runs with parameters calibrated on the
launch (:mod:`mpitrain.bench.calibrate`; method and measurements in ``docs/multinode.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODELLED = ("ring", "hierarchical", "mpi", "root", "shm")


@dataclass(frozen=True)
class Links:
    """The two links of the model: seconds of latency and bytes per second."""

    alpha_net: float
    beta_net: float
    alpha_node: float
    beta_node: float

    @classmethod
    def from_network(cls, *, gbps: float, latency_us: float, node_latency_us: float,
                     node_gbytes_per_s: float) -> Links:
        """From a link of ``gbps`` gigabits/s and ``latency_us`` us, and a node whose
        ranks copy ``node_gbytes_per_s`` GB/s with ``node_latency_us`` us per barrier."""
        return cls(latency_us * 1e-6, gbps * 1e9 / 8, node_latency_us * 1e-6,
                   node_gbytes_per_s * 1e9)


def _log2(count: int) -> int:
    return max(0, math.ceil(math.log2(count))) if count > 1 else 0


def ring(n: float, nodes: int, per_node: int, links: Links) -> float:
    """Seconds of the flat ring (module docstring)."""
    size = nodes * per_node
    if size <= 1:
        return 0.0
    alpha, beta = ((links.alpha_net, links.beta_net) if nodes > 1
                   else (links.alpha_node, links.beta_node))
    return 2 * (size - 1) * (alpha + n / size / beta)


def hierarchical(n: float, nodes: int, per_node: int, links: Links) -> float:
    """Seconds of the hierarchical allreduce (module docstring)."""
    if nodes * per_node <= 1:
        return 0.0
    local = 2 * links.alpha_node + 3 * n / links.beta_node
    across = 2 * (nodes - 1) * (links.alpha_net + n / nodes / links.beta_net)
    return local + across


def mpi(n: float, nodes: int, per_node: int, links: Links) -> float:
    """Seconds of MPICH's Allreduce (module docstring): node-aware across nodes."""
    size = nodes * per_node
    if size <= 1:
        return 0.0
    if nodes == 1:
        return _flat_mpi(n, size, links.alpha_node, links.beta_node)
    local = 2 * _log2(per_node) * (links.alpha_node + n / links.beta_node)
    return local + _flat_mpi(n, nodes, links.alpha_net, links.beta_net)


def _flat_mpi(n: float, size: int, alpha: float, beta: float) -> float:
    """The better of recursive doubling and Rabenseifner's algorithm on one link kind."""
    steps = _log2(size)
    doubling = steps * (alpha + n / beta)
    halving = 2 * steps * alpha + 2 * n * (1 - 1 / size) / beta
    return min(doubling, halving)


def root(n: float, nodes: int, per_node: int, links: Links) -> float:
    """Seconds of Reduce + Bcast through rank 0 (binomial trees)."""
    if nodes * per_node <= 1:
        return 0.0
    return 2 * (_log2(nodes) * (links.alpha_net + n / links.beta_net)
                + _log2(per_node) * (links.alpha_node + n / links.beta_node))


def shm(n: float, nodes: int, per_node: int, links: Links) -> float:
    """Seconds of the slot sum (one node only: infinite otherwise)."""
    if nodes > 1:
        return math.inf
    if per_node <= 1:
        return 0.0
    return links.alpha_node + (per_node + 1) * n / links.beta_node


MODELS = {"ring": ring, "hierarchical": hierarchical, "mpi": mpi, "root": root, "shm": shm}


def allreduce_seconds(algorithm: str, n: float, nodes: int, per_node: int,
                      links: Links) -> float:
    """Modelled seconds of one allreduce of ``n`` bytes by ``algorithm``."""
    return MODELS[algorithm](n, nodes, per_node, links)


def fastest(n: float, nodes: int, per_node: int, links: Links,
            algorithms: tuple[str, ...] = MODELLED) -> tuple[str, float]:
    """The algorithm the model says is fastest, and its seconds."""
    return min(((name, allreduce_seconds(name, n, nodes, per_node, links))
                for name in algorithms), key=lambda item: item[1])
