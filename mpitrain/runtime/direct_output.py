"""Rank 0 writes its output straight into ``mpiexec``'s pipe, so ``mpiexec ... | head`` works.

Under MPICH's hydra, a rank's standard output goes through a pipe to ``hydra_pmi_proxy``,
which forwards it to ``mpiexec``, which writes it to its own standard output. When that is
a pipe whose reader has gone (``| head``), the write kills ``mpiexec`` with SIGPIPE (exit
status 141) and ``mpiexec`` takes every rank with it: the run stays ``running``. A rank
cannot change ``mpiexec``'s signals, but it can keep ``mpiexec`` from ever writing there.

:func:`bypass_launcher_output` does that for the process that prints (rank 0): when it
recognises a local hydra ``mpiexec`` that forwards its output unchanged into a pipe, it
opens that pipe itself (``/proc/MPIEXEC/fd/1``) and makes it its file descriptor 1 (and 2,
when ``mpiexec``'s standard error is the same pipe: ``2>&1 | head``). Lines reach the reader
as before, in the same order; when the reader goes away, it is rank 0 that gets EPIPE, and
:meth:`mpitrain.runtime.outputs.RunOutput.say` warns once and trains on.

Anything unexpected leaves the output alone, silently: another launcher (``srun``, Open
MPI), a rank on another node than ``mpiexec``, an output option of ``mpiexec``
(``-prepend-rank``, ``-outfile-pattern``, ... on its command line or in a hydra config file),
a redirected rank, standard output not a pipe, /proc not readable. ``MPITRAIN_DIRECT_OUTPUT=0``
turns it off.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from pathlib import Path

SWITCH = "MPITRAIN_DIRECT_OUTPUT"
PROXIES = frozenset({"hydra_pmi_proxy"})
LAUNCHERS = frozenset({"mpiexec", "mpiexec.hydra", "mpirun"})
# hydra options that change what mpiexec does with the ranks' output (prefixes, files,
# one rank only, an exit-code line, options read from a file): the ranks then leave it be
OUTPUT_OPTIONS = frozenset({"l", "prepend-rank", "prepend-pattern", "outfile-pattern",
                            "outfile", "errfile-pattern", "errfile", "output-from",
                            "print-all-exitcodes", "configfile"})


def bypass_launcher_output(*, proc: Path = Path("/proc"), pid: int | None = None) -> bool:
    """Point this process's standard output (and error, when ``mpiexec`` sends both into one
    pipe) at the pipe of the local hydra ``mpiexec`` that would forward it. True when done;
    False, with nothing changed, whenever the launch is not exactly that."""
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "no", "off", "false"):
        return False
    try:
        launcher = hydra_launcher(proc=proc, pid=os.getpid() if pid is None else pid)
        if launcher is None:
            return False
        pipe = open_pipe(proc / str(launcher) / "fd" / "1")
        if pipe is None:
            return False
        try:
            fds = proc / str(launcher) / "fd"
            both = _same_pipe(fds / "1", fds / "2")
            sys.stdout.flush()
            os.dup2(pipe, sys.stdout.fileno())
            if both:
                sys.stderr.flush()
                os.dup2(pipe, sys.stderr.fileno())
        finally:
            os.close(pipe)
    except (OSError, ValueError, LookupError, RuntimeError):
        return False
    return True


def hydra_launcher(*, proc: Path, pid: int) -> int | None:
    """The process id of the hydra ``mpiexec`` on this host that forwards the standard
    output of process ``pid`` unchanged (pid → hydra_pmi_proxy → mpiexec, the proxy reading
    pid's stdout pipe, no output option), else None. OSError when /proc says too little."""
    proxy = _parent(proc, pid)
    if _program(proc, proxy) not in PROXIES:
        return None
    launcher = _parent(proc, proxy)
    if _program(proc, launcher) not in LAUNCHERS:
        return None
    output = os.readlink(proc / str(pid) / "fd" / "1")
    if not output.startswith("pipe:"):
        return None  # redirected (a file, a terminal): not hydra's forwarding
    proxy_fds = proc / str(proxy) / "fd"
    if not any(os.readlink(proxy_fds / fd) == output for fd in os.listdir(proxy_fds)):
        return None
    arguments = (proc / str(launcher) / "cmdline").read_bytes().decode(errors="replace")
    if _output_option(arguments.split("\0")) or any(
            _output_option(path.read_text(errors="replace").split())
            for path in _config_files(proc, launcher) if path.is_file()):
        return None
    return launcher


def open_pipe(path: Path) -> int | None:
    """A blocking write descriptor on the pipe at ``path`` (``/proc/PID/fd/N``), or None when
    it is not a pipe or cannot be opened. Opening never blocks; when the reader has gone
    already (``| true``), the descriptor is that of another pipe without a reader, so the
    first write fails with EPIPE as one into ``path`` would."""
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            return None  # e.g. EACCES: not ours to open
        reader, fd = os.pipe()
        os.close(reader)
        return fd
    os.set_blocking(fd, True)  # only our open file description: mpiexec's is its own
    return fd


def _same_pipe(first: Path, second: Path) -> bool:
    with contextlib.suppress(OSError):
        a, b = os.stat(first), os.stat(second)
        return stat.S_ISFIFO(b.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    return False


def _parent(proc: Path, pid: int) -> int:
    text = (proc / str(pid) / "stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])  # after "pid (comm) state"


def _program(proc: Path, pid: int) -> str:
    return os.path.basename(os.readlink(proc / str(pid) / "exe"))


def _output_option(words: list[str]) -> bool:
    """Whether hydra arguments ``words`` hold an option of :data:`OUTPUT_OPTIONS` (any word
    that looks like one, even after the program: a false alarm only keeps the old path)."""
    return any(word.startswith("-") and word.lstrip("-").split("=")[0] in OUTPUT_OPTIONS
               for word in words)


def _config_files(proc: Path, launcher: int) -> list[Path]:
    """Where hydra reads default options: $HYDRA_CONFIG_FILE, ~/.mpiexec.hydra.conf and
    PREFIX/etc/mpiexec.hydra.conf beside the mpiexec binary."""
    binary = Path(os.readlink(proc / str(launcher) / "exe"))
    files = [Path.home() / ".mpiexec.hydra.conf",
             binary.parent.parent / "etc" / "mpiexec.hydra.conf"]
    if os.environ.get("HYDRA_CONFIG_FILE"):
        files.append(Path(os.environ["HYDRA_CONFIG_FILE"]))
    return files
