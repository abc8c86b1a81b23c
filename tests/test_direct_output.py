"""Recognising a local hydra mpiexec whose stdout pipe rank 0 may write to directly
(mpitrain.runtime.direct_output), on a made-up /proc tree; the end-to-end runs
(`mpiexec ... | head`) are in tests/test_runs.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpitrain.runtime import direct_output
from mpitrain.runtime.direct_output import bypass_launcher_output, hydra_launcher, open_pipe

ROOT = Path(__file__).resolve().parents[1]
RANK, PROXY, LAUNCHER, SHELL = 300, 200, 100, 50
BIN = "/opt/mpich/bin"


def _process(proc: Path, pid: int, *, parent: int, exe: str, fds: dict[str, str],
             cmdline: list[str] | None = None) -> Path:
    """A /proc/PID directory: stat (name with a space and a parenthesis, as comm may
    have), exe and fd/* links, cmdline."""
    root = proc / str(pid)
    (root / "fd").mkdir(parents=True)
    (root / "stat").write_text(f"{pid} (a b) c) S {parent} {pid} {pid} 0 -1\n")
    (root / "exe").symlink_to(exe)
    for fd, target in fds.items():
        (root / "fd" / fd).symlink_to(target)
    (root / "cmdline").write_bytes(b"\0".join(w.encode() for w in cmdline or [exe]) + b"\0")
    return root


def _tree(proc: Path, *, proxy: str = "hydra_pmi_proxy", launcher: str = "mpiexec",
          rank_stdout: str = "pipe:[77]", proxy_reads: str = "pipe:[77]",
          arguments: tuple[str, ...] = ("-n", "2")) -> Path:
    """rank → proxy → launcher → shell, as hydra's fork launcher starts them."""
    _process(proc, SHELL, parent=1, exe="/usr/bin/bash", fds={"1": "/dev/pts/0"})
    _process(proc, LAUNCHER, parent=SHELL, exe=f"{BIN}/{launcher}",
             fds={"1": "pipe:[10]", "2": "/dev/pts/0"},
             cmdline=[launcher, *arguments, "python", "-m", "mpitrain", "train", "--lr", "1"])
    _process(proc, PROXY, parent=LAUNCHER, exe=f"{BIN}/{proxy}",
             fds={"1": "pipe:[11]", "15": proxy_reads})
    return _process(proc, RANK, parent=PROXY, exe="/usr/bin/python3.11",
                    fds={"1": rank_stdout, "2": "pipe:[78]"})


@pytest.fixture(autouse=True)
def _no_config_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HYDRA_CONFIG_FILE", raising=False)
    monkeypatch.delenv(direct_output.SWITCH, raising=False)


@pytest.mark.parametrize("launcher", ["mpiexec", "mpiexec.hydra", "mpirun"])
def test_a_rank_of_a_local_hydra_mpiexec_is_recognised(tmp_path, launcher):
    proc = tmp_path / "proc"
    _tree(proc, launcher=launcher)
    assert hydra_launcher(proc=proc, pid=RANK) == LAUNCHER


@pytest.mark.parametrize("change", [
    {"proxy": "slurmstepd"},            # srun started the rank
    {"proxy": "orted"},                 # Open MPI
    {"launcher": "sshd"},               # hydra's proxy on another node, started over ssh
    {"launcher": "srun"},               # mpiexec inside an allocation: proxies via srun
    {"rank_stdout": "/tmp/rank.log"},   # the rank's output redirected (a wrapper script)
    {"rank_stdout": "/dev/pts/3"},
    {"proxy_reads": "pipe:[99]"},       # a pipe the proxy does not read
    {"arguments": ("-prepend-rank", "-n", "2")},
    {"arguments": ("-l", "-n", "2")},
    {"arguments": ("--outfile-pattern=out.%r", "-n", "2")},
    {"arguments": ("-outfile", "out.%r", "-n", "2")},
    {"arguments": ("-output-from", "1", "-n", "2")},
    {"arguments": ("-print-all-exitcodes", "-n", "2")},
    {"arguments": ("-configfile", "job.conf")},
])
def test_anything_else_is_not(tmp_path, change):
    proc = tmp_path / "proc"
    _tree(proc, **change)
    assert hydra_launcher(proc=proc, pid=RANK) is None


@pytest.mark.parametrize("where", ["HYDRA_CONFIG_FILE", "home", "prefix"])
def test_an_output_option_in_a_hydra_config_file_is_respected(tmp_path, monkeypatch, where):
    proc = tmp_path / "proc"
    _tree(proc)
    conf = {"HYDRA_CONFIG_FILE": tmp_path / "site.conf",
            "home": tmp_path / "home" / ".mpiexec.hydra.conf",
            "prefix": proc / "opt-mpich" / "etc" / "mpiexec.hydra.conf"}[where]
    if where == "prefix":  # PREFIX/etc beside PREFIX/bin/mpiexec
        (proc / str(LAUNCHER) / "exe").unlink()
        (proc / str(LAUNCHER) / "exe").symlink_to(proc / "opt-mpich" / "bin" / "mpiexec")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("-bind-to core\n")
    monkeypatch.setenv("HYDRA_CONFIG_FILE", str(tmp_path / "site.conf"))
    assert hydra_launcher(proc=proc, pid=RANK) == LAUNCHER  # harmless options
    conf.write_text("-bind-to core\n-prepend-rank\n")
    assert hydra_launcher(proc=proc, pid=RANK) is None


def test_a_process_that_has_gone_is_an_oserror(tmp_path):
    proc = tmp_path / "proc"
    _tree(proc)
    (proc / str(PROXY) / "stat").unlink()
    with pytest.raises(OSError):
        hydra_launcher(proc=proc, pid=RANK)


def test_open_pipe_writes_to_a_pipe_with_a_reader_and_blocks(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer = open_pipe(fifo)
        assert writer is not None
        try:
            assert os.get_blocking(writer)  # our own description: blocking like stdout
            os.write(writer, b"epoch 1\n")
            assert os.read(reader, 100) == b"epoch 1\n"
        finally:
            os.close(writer)
    finally:
        os.close(reader)


def test_open_pipe_without_a_reader_gives_a_broken_pipe(tmp_path):
    """`mpiexec ... | true`: the reader left before rank 0 started; the first write fails
    with EPIPE, which the progress lines turn into the usual warning."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = open_pipe(fifo)
    assert writer is not None
    try:
        with pytest.raises(BrokenPipeError):
            os.write(writer, b"epoch 1\n")
    finally:
        os.close(writer)


def test_open_pipe_leaves_files_and_terminals_alone(tmp_path):
    regular = tmp_path / "train.log"
    regular.write_text("")
    assert open_pipe(regular) is None


def test_switched_off_it_does_not_even_look(tmp_path, monkeypatch):
    monkeypatch.setattr(direct_output, "hydra_launcher", lambda **_: pytest.fail("looked"))
    monkeypatch.setenv(direct_output.SWITCH, "0")
    assert bypass_launcher_output(proc=tmp_path, pid=RANK) is False


def test_without_proc_nothing_changes(tmp_path):
    assert bypass_launcher_output(proc=tmp_path / "nothing", pid=RANK) is False


SNIPPET = """
import sys
from pathlib import Path
from mpitrain.runtime.direct_output import bypass_launcher_output
print("before", flush=True)
print(bypass_launcher_output(proc=Path(sys.argv[1]), pid=300), flush=True)
print("after", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("both", [False, True], ids=["stdout", "2>&1"])
def test_the_process_then_writes_into_the_launchers_pipe(tmp_path, both):
    """After the switch, stdout (and stderr when mpiexec's fd 2 is the same pipe, as with
    `2>&1 | head`) go into mpiexec's pipe, not to the process's own stdout."""
    proc = tmp_path / "proc"
    _tree(proc)
    fds = proc / str(LAUNCHER) / "fd"
    for name in ("1", "2"):
        (fds / name).unlink()
    os.mkfifo(fds / "1")
    (fds / "2").symlink_to(fds / "1" if both else "/dev/null")
    reader = os.open(fds / "1", os.O_RDONLY | os.O_NONBLOCK)
    try:
        ran = subprocess.run([sys.executable, "-c", SNIPPET, str(proc)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        piped = os.read(reader, 1000).decode()
    finally:
        os.close(reader)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "before\n"
    assert piped == ("True\nafter\n" if both else "True\n")
    assert ran.stderr == ("" if both else "after\n")
