"""An emulated multi-node cluster on this machine (shared test helpers, see
tests/test_multinode.py).

MPICH decides which ranks share a node by the host its launcher placed them on. A hostfile
naming hosts that resolve to loopback addresses (``mpitrain-node1``, ``-node2``, ...) and a
stand-in for ssh that runs hydra's proxy on this machine (``tests/multinode/fake-ssh``)
give several "nodes": ``Split_type(COMM_TYPE_SHARED)`` splits by them, and messages
between them go through MPICH's network module over loopback, not shared memory::

    mpiexec -launcher ssh -launcher-exec tests/multinode/fake-ssh -f HOSTFILE -n P ...

:func:`ensure_hosts` adds the names to ``/etc/hosts`` when they do not resolve (root only,
idempotent); :func:`skip_reason` says why the cluster cannot run here, or None.

With ``MPITRAIN_TEST_RANKS_PER_NODE=k`` in the environment, every ``mpiexec`` of
:mod:`cli_runner` runs on such a cluster, ``k`` ranks per node (the last node holds the
rest: 3 ranks with ``k=2`` is the uneven layout 2+1), so the end-to-end tests of the CLI
run across nodes unchanged.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
FAKE_SSH = str(ROOT / "tests" / "multinode" / "fake-ssh")
HOSTS_FILE = Path("/etc/hosts")
MAX_NODES = 4
# node i resolves to 127.0.1.i: loopback, but not an address of this machine's interfaces
# (so hydra starts its proxy through the launcher, as on a real cluster)
NODES = {f"mpitrain-node{i}": f"127.0.1.{i}" for i in range(1, MAX_NODES + 1)}
RANKS_PER_NODE = "MPITRAIN_TEST_RANKS_PER_NODE"
LAYOUT = "MPITRAIN_TEST_LAYOUT"  # the layout a test run expects to see, e.g. "2x2", "2+1"


def _resolves(name: str) -> bool:
    try:
        socket.gethostbyname(name)
    except OSError:
        return False
    return True


def ensure_hosts(hosts_file: Path = HOSTS_FILE) -> str | None:
    """Make every node name resolve: add the missing ones to ``hosts_file`` when root
    (one line each, never twice). None when they all resolve, else why they cannot."""
    missing = [name for name in NODES if not _resolves(name)]
    if not missing:
        return None
    if os.geteuid() != 0:
        return (f"the emulated cluster needs {', '.join(missing)} in {hosts_file} "
                f"(added automatically when the tests run as root)")
    try:
        text = hosts_file.read_text()
    except OSError as exc:
        return f"cannot read {hosts_file} ({exc.strerror})"
    known = {word for line in text.splitlines() for word in line.split("#")[0].split()[1:]}
    lines = [f"{NODES[name]} {name}" for name in missing if name not in known]
    if lines:
        try:
            with hosts_file.open("a") as out:
                out.write(("" if text.endswith("\n") or not text else "\n")
                          + "\n".join(lines) + "\n")
        except OSError as exc:
            return f"cannot add the node names to {hosts_file} ({exc.strerror})"
    still = [name for name in NODES if not _resolves(name)]
    return f"{', '.join(still)} do not resolve after adding them to {hosts_file}" if still \
        else None


def skip_reason() -> str | None:
    """Why the emulated cluster cannot run here (None: it can)."""
    if not os.access(FAKE_SSH, os.X_OK):
        return f"{FAKE_SSH} is not executable"
    return ensure_hosts()


def layout_sizes(ranks: int, per_node: int) -> list[int]:
    """Ranks on each node: ``per_node`` each, the last node the rest."""
    full, rest = divmod(ranks, per_node)
    return [per_node] * full + ([rest] if rest else [])


def describe(sizes: list[int]) -> str:
    """``2x2`` for even layouts, ``2+1`` for uneven ones (as NodeLayout.describe)."""
    if len(set(sizes)) == 1:
        return f"{len(sizes)}x{sizes[0]}"
    return "+".join(str(size) for size in sizes)


def hostfile(sizes: list[int], directory: Path) -> Path:
    """A hydra hostfile with ``sizes[i]`` slots on node ``i``."""
    if len(sizes) > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} emulated nodes (got {len(sizes)})")
    path = directory / f"hosts-{os.getpid()}-{'-'.join(map(str, sizes))}"
    names = list(NODES)[: len(sizes)]
    path.write_text("".join(f"{name}:{size}\n" for name, size in zip(names, sizes, strict=True)))
    return path


def mpiexec_prefix(sizes: list[int], directory: Path) -> list[str]:
    """``mpiexec ... -n P`` placing ``sizes[i]`` ranks on emulated node ``i``."""
    return [MPIEXEC, "-launcher", "ssh", "-launcher-exec", FAKE_SSH,
            "-f", str(hostfile(sizes, directory)), "-n", str(sum(sizes))]


def launcher(ranks: int, environ: dict[str, str] | None = None) -> list[str]:
    """``mpiexec -n ranks``, on the emulated cluster when ``MPITRAIN_TEST_RANKS_PER_NODE``
    is set (what :func:`cli_runner.run_mpi` runs; the hostfile goes to the temporary
    directory, one per process and layout)."""
    environ = os.environ if environ is None else environ
    per_node = environ.get(RANKS_PER_NODE)
    if not per_node:
        return [MPIEXEC, "-n", str(ranks)]
    return mpiexec_prefix(layout_sizes(ranks, int(per_node)), Path(tempfile.gettempdir()))
