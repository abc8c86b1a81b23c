"""Stand-in for `python -m mpitrain train ...` in tests of the example batch scripts
(until the real CLI is tested there): run as `fake_train.py -m mpitrain train ARGS`.

Without --resume: each rank prints its rank and the world size, then exits 0.
With --resume (preemptible.sbatch): on the first run (SLURM_RESTART_COUNT unset or 0) wait
for SIGUSR1, then rank 0 writes OUT/checkpoint-marker and every rank exits 75 like
mpitrain does when stopped; on a requeued run, check the marker and exit 0 ("resumed").
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from mpi4py import MPI

args = sys.argv[1:]
assert args[:3] == ["-m", "mpitrain", "train"], args
out = Path(args[args.index("--out") + 1])
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
threads = os.environ.get("NUMBA_NUM_THREADS")
print(f"fake-train: rank {rank} of {size} restart {restart} threads {threads}", flush=True)
if "--resume" not in args:
    sys.exit(0)

marker = out / "checkpoint-marker"
if restart > 0:
    assert marker.exists(), f"requeued run finds no {marker}"
    print(f"fake-train: rank {rank} resumed from {marker.read_text().strip()}", flush=True)
    sys.exit(0)

got: list[int] = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
comm.Barrier()
print(f"fake-train: rank {rank} ready", flush=True)
deadline = time.monotonic() + 150
while not got and time.monotonic() < deadline:
    time.sleep(0.1)
if not got:
    print(f"fake-train: rank {rank} got no USR1", flush=True)
    sys.exit(3)
comm.Barrier()
if rank == 0:
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("checkpoint of run 0\n")
print(f"fake-train: rank {rank} got USR1, checkpointed, stopping", flush=True)
comm.Barrier()  # like mpitrain: no rank exits before rank 0 has written everything
sys.exit(75)  # like mpitrain.runtime.preemption.EXIT_PREEMPTED
