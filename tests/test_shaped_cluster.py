"""The rate-limited emulated cluster of ``tests/multinode/shaped-cluster`` (opt-in, root).

Brings the cluster up (node 2 in its own network namespace, a tbf-shaped veth pair to
node 1), runs the hierarchical and ring allreduces on 2x2 over it through
``tests/multinode/shaped-ssh``, and checks that MPI saw two nodes of two ranks, that the
results equal numpy's, and that the bytes crossed the shaped link: the tbf qdiscs' byte
counters grow by at least the bytes the algorithms send across nodes. Torn down in a
``finally`` (unless it was up before the test). Skipped, with the reason, when not root or
when network namespaces / veth / tc do not work here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from cluster import MPIEXEC, ROOT

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(600)]

SCRIPT = str(ROOT / "tests" / "multinode" / "shaped-cluster")
SHAPED_SSH = str(ROOT / "tests" / "multinode" / "shaped-ssh")
NAMESPACE = "mpitrain-shaped2"
ELEMENTS = 1 << 20  # float64: 8 MiB per allreduce

PROGRAM = f"""
import numpy as np
from mpi4py import MPI
from mpitrain.collectives import allreduce
comm = MPI.COMM_WORLD
node = comm.Split_type(MPI.COMM_TYPE_SHARED)
assert node.size == 2, node.size
for algorithm in ("hierarchical", "ring"):
    buf = np.arange({ELEMENTS}, dtype=np.float64) * (comm.rank + 1)
    allreduce(buf, comm, algorithm=algorithm)
    assert np.array_equal(buf, np.arange({ELEMENTS}, dtype=np.float64) * 10), algorithm
sizes = comm.gather(node.size)
if comm.rank == 0:
    print("ok", comm.size, sizes, flush=True)
"""


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the shaped cluster needs root (network namespace, veth, tc, /etc/hosts)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' (iproute2) not found"
    return None


def _sent_bytes() -> tuple[int, int]:
    """Bytes the tbf qdiscs sent: node 1 -> node 2, node 2 -> node 1."""
    host = _run(["tc", "-s", "qdisc", "show", "dev", "mpits-host"]).stdout
    node = _run(["ip", "netns", "exec", NAMESPACE, "tc", "-s", "qdisc", "show", "dev",
                 "mpits-node"]).stdout
    counts = [re.search(r"Sent (\d+) bytes", text) for text in (host, node)]
    assert all(counts), f"no tbf counters:\n{host}\n{node}"
    return int(counts[0].group(1)), int(counts[1].group(1))


def test_allreduce_crosses_the_shaped_link(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = _run([SCRIPT, "status"]).returncode == 0
    try:
        up = _run([SCRIPT, "up", "--rate", "1gbit"])
        if up.returncode != 0:
            pytest.skip(f"the shaped cluster cannot be brought up here: {up.stderr.strip()}")
        assert "tbf" in _run(["tc", "qdisc", "show", "dev", "mpits-host"]).stdout
        hosts = tmp_path / "hosts"
        hosts.write_text("mpitrain-shaped1:2\nmpitrain-shaped2:2\n")
        before = _sent_bytes()
        done = _run([MPIEXEC, "-launcher", "ssh", "-launcher-exec", SHAPED_SSH,
                     "-f", str(hosts), "-n", "4", sys.executable, "-c", PROGRAM],
                    timeout=300)
        assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        assert "ok 4 [2, 2, 2, 2]" in done.stdout, done.stdout
        after = _sent_bytes()
        # hierarchical: every rank sends half the message across (each way: 1 message);
        # ring: the two boundary ranks 1.5 messages each (each way: 1.5 messages)
        message = ELEMENTS * 8
        for direction, (start, end) in zip(("1->2", "2->1"), zip(before, after, strict=True),
                                           strict=True):
            assert end - start >= 2 * message, \
                f"only {end - start} bytes crossed the shaped link {direction}"
    finally:
        if not was_up:
            down = _run([SCRIPT, "down"])
            assert down.returncode == 0, down.stderr
