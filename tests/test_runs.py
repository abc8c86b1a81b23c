"""What users meet around a run, end to end through the CLI (issue 11, "Runs"): Ctrl-C,
a read-only or full --out, runs that save nothing, --resume --overwrite on a finished run,
output piped to a reader that goes away, the first-run kernel compilation, and the
command line's own errors (no command, a misspelt flag or keyword)."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_runner import ROOT, run_mpi, run_train
from cluster import launcher
from test_reliability import (
    CHAOS,
    error_lines,
    metrics_epochs,
    model_arrays,
    signal_while_held,
    status,
)

from mpitrain.checkpoint.store import list_checkpoints, load_checkpoint
from mpitrain.errors import UserError
from mpitrain.runtime.compile import compile_notice

pytestmark = pytest.mark.timeout(300)

SMALL = ["--data", "synthetic", "--samples", "600", "--features", "8", "--classes", "3",
         "--model", "mlp", "--hidden", "16", "--epochs", "6", "--batch-size", "64",
         "--quiet"]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def launcher_lines(stderr: str) -> list[str]:
    """stderr without MPICH's own notes about forwarding Ctrl-C ('[mpiexec@host] ...')."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("[mpiexec@")]


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("to", ["mpiexec", "process group"])
def test_ctrl_c_to_mpiexec_stops_every_rank_with_a_checkpoint(tmp_path, to):
    """SIGINT to mpiexec, which MPICH passes on to every rank, or to the whole process
    group (what Ctrl-C in a terminal does: launcher, proxies and ranks all get it): the
    ranks stop at the same step, checkpoint, record "stopped" and exit 130 with one line:
    no traceback, no BAD TERMINATION banner. --resume then finishes the run."""
    out, pids = tmp_path / "run", tmp_path / "pids"
    send = ((lambda job: job.send_signal(signal.SIGINT)) if to == "mpiexec" else
            (lambda job: os.killpg(job.pid, signal.SIGINT)))
    job, stdout, stderr = signal_while_held(
        [*SMALL, "--checkpoint-every", "5", "--out", str(out)], pids=pids, send=send,
        session=to != "mpiexec")
    assert job.returncode == 130, stderr
    assert launcher_lines(stderr) == [
        f"mpitrain: stopped on SIGINT (Ctrl-C): wrote a checkpoint to {out}/checkpoints; "
        "continue with --resume (exit status 130)"], stderr
    assert "BAD TERMINATION" not in stdout + stderr
    assert status(out) == "stopped"
    stopped_at = [index for index, _ in list_checkpoints(out / "checkpoints")][-1]
    assert 8 < stopped_at < 48
    resumed = run_train([*SMALL, "--checkpoint-every", "5", "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert status(out) == "finished" and metrics_epochs(out) == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_outside_training_is_one_line():
    """A KeyboardInterrupt outside the training loop (here: while the parser runs) ends
    the command with status 130 and one line, no traceback."""
    code = ("import sys, mpitrain.cli as cli\n"
            "def interrupted(*a, **k):\n    raise KeyboardInterrupt\n"
            "cli.build_parser = interrupted\n"
            "sys.exit(cli.main(['show', '.']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 130, done.stderr
    assert error_lines(done) == ["mpitrain: interrupted (Ctrl-C)"]


# ---------------------------------------------------------------- --out that cannot be written


@pytest.fixture
def tmpfs(tmp_path):
    """Mount tiny tmpfs file systems under tmp_path (root only); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                       check=True)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_out_is_refused_before_training(tmp_path, tmpfs):
    if os.geteuid() == 0:
        read_only = tmpfs("ro", "ro,size=64k")
        cause = "Read-only file system (EROFS)"
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
        cause = "Permission denied (EACCES)"
    for out in (read_only, read_only / "sub"):
        done = run_train([*SMALL, "--out", str(out)])
        assert done.returncode == 2, done.stderr
        assert error_lines(done) == [f"mpitrain: error: --out: cannot write to '{out}': "
                                     f"{cause}"]
    assert not list(read_only.iterdir())


def assert_failed(done: subprocess.CompletedProcess[str], out: Path, message: str) -> None:
    """Exit status 2, the one error line on stderr, and summary.json: failed, that error."""
    assert done.returncode == 2, done.stderr
    assert error_lines(done) == [f"mpitrain: error: {message}"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == ("failed", message)


@ROOT_ONLY
def test_full_disk_during_the_run_fails_cleanly_and_keeps_the_last_checkpoint(tmpfs):
    """--out on a 200 KiB tmpfs: the third checkpoint (~72 KiB each: a 5,890-parameter MLP
    with Adam's two moments) does not fit. Every rank ends with one error line, status 2,
    summary.json says failed, the two checkpoints before stay intact, no temp file is left."""
    disk = tmpfs("small", "size=200k")
    out = disk / "run"
    args = ["--data", "synthetic", "--samples", "2000", "--features", "20", "--hidden", "256",
            "--optimizer", "adam", "--epochs", "10", "--checkpoint-every", "10", "--keep", "3",
            "--quiet", "--out", str(out)]
    assert_failed(run_train(args, ranks=2), out,
                  f"cannot write a checkpoint to {out}/checkpoints: No space left on device "
                  "(ENOSPC); training stopped, the last good checkpoint is kept")
    saved = list_checkpoints(out / "checkpoints")
    assert [index for index, _ in saved] == [10, 20]
    for _, path in saved:
        assert load_checkpoint(path).meta["next_unit"] in (10, 20)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ckpt-000000010.npz", "ckpt-000000020.npz"]
    assert not (out / "model.npz").exists()


def test_file_system_turning_read_only_during_the_run_fails_cleanly(tmp_path):
    """The write of epoch 3's metrics line fails with EROFS (tests/chaos.py): one error on
    every rank, status failed, the checkpoints written before are kept."""
    out = tmp_path / "run"
    done = run_mpi([CHAOS, "train", *SMALL, "--checkpoint-every", "4", "--out", str(out)],
                   ranks=2, env={"CHAOS_WRITE_ERROR": "3:EROFS"})
    assert_failed(done, out, f"cannot write {out}/metrics.jsonl: Read-only file system "
                             "(EROFS); training stopped, the last good checkpoint is kept")
    assert metrics_epochs(out) == [1, 2]
    assert [index for index, _ in list_checkpoints(out / "checkpoints")] == [12, 16, 20]


# ---------------------------------------------------------------- runs that save nothing


@pytest.mark.parametrize(("extra", "expected"), [
    ([], ["mpitrain: note: no --out given, so the model, metrics and checkpoints are not "
          "saved"]),
    (["--quiet"], []),
    (["--quiet", "--checkpoint-every", "5"],
     ["mpitrain: warning: --checkpoint-every 5 has no effect without --out: no "
      "checkpoints, model or metrics will be saved"]),
])
def test_a_run_without_out_says_once_that_nothing_is_saved(extra, expected):
    args = [a for a in SMALL if a != "--quiet"]
    done = run_train([*args, "--epochs", "1", *extra], ranks=2)
    assert done.returncode == 0, done.stderr
    assert error_lines(done) == expected


# ---------------------------------------------------------------- --resume --overwrite


def test_resume_overwrite_continues_a_finished_run_in_place(tmp_path):
    """A finished 3-epoch run refuses --resume alone; with --overwrite too it continues
    from its final checkpoint to --epochs 6, keeping its metrics: the same model and
    metrics.jsonl epochs as a 6-epoch run (constant learning rate, same ranks)."""
    base = [a for a in SMALL if a not in ("--epochs", "6")]
    whole = tmp_path / "whole"
    assert run_train([*base, "--epochs", "6", "--out", str(whole)]).returncode == 0
    out = tmp_path / "run"
    assert run_train([*base, "--epochs", "3", "--out", str(out)]).returncode == 0
    again = run_train([*base, "--epochs", "6", "--out", str(out), "--resume"])
    assert again.returncode == 2
    assert error_lines(again) == [
        f"mpitrain: error: --out: '{out}' holds a finished run; pass --overwrite too to "
        "continue it (e.g. with more --epochs), or choose another directory"]
    done = run_train([*base, "--epochs", "6", "--out", str(out), "--resume", "--overwrite"])
    assert done.returncode == 0, done.stderr
    assert status(out) == "finished" and metrics_epochs(out) == [1, 2, 3, 4, 5, 6]
    got, want = model_arrays(out), model_arrays(whole)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    # without --resume, --overwrite still starts over
    fresh = run_train([*base, "--epochs", "2", "--out", str(out), "--overwrite"])
    assert fresh.returncode == 0 and metrics_epochs(out) == [1, 2]


# ---------------------------------------------------------------- | head


def test_closed_stdout_stops_progress_lines_not_training(tmp_path):
    """`python -m mpitrain train ... | head -1`: the reader goes away after the first
    line; training finishes (status 0, "finished"), with one warning on stderr."""
    out = tmp_path / "run"
    args = [a for a in SMALL if a != "--quiet"]
    command = [sys.executable, "-m", "mpitrain", "train", *args, "--epochs", "40",
               "--out", str(out)]
    with subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as job:
        first = job.stdout.readline()
        job.stdout.close()  # like head, after its line
        stderr = job.stderr.read()
        job.wait(timeout=120)
    assert first.startswith("epoch 1/40"), first
    assert job.returncode == 0, stderr
    assert error_lines(subprocess.CompletedProcess([], 0, "", stderr)) == [
        "mpitrain: warning: standard output was closed (broken pipe); training goes on "
        "without progress lines"]
    assert status(out) == "finished" and len(metrics_epochs(out)) == 40


PIPED = [a for a in SMALL if a not in ("--quiet", "--epochs", "6")] + ["--epochs", "60"]
WARNING = ("mpitrain: warning: standard output was closed (broken pipe); training goes on "
           "without progress lines")


def _pipeline(command: list[str], tail: str, *, env: dict[str, str] | None = None,
              ) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """``bash -c 'COMMAND TAIL'`` like a user's shell (TAIL e.g. ``| head -n 2``), and the
    exit statuses of the pipeline's commands (PIPESTATUS, printed last on stderr)."""
    script = f"{shlex.join(command)} {tail}; echo \"pipeline: ${{PIPESTATUS[*]}}\" >&2"
    try:
        done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True,
                              text=True, timeout=240, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out (a hang?): {script}\n{exc.stdout}\n{exc.stderr}")
    *rest, last = done.stderr.splitlines() or [""]
    assert last.startswith("pipeline: "), done.stderr
    return (subprocess.CompletedProcess(done.args, done.returncode, done.stdout,
                                        "\n".join(rest)), [int(w) for w in last.split()[1:]])


def epoch_lines(stdout: str) -> list[str]:
    """The progress lines of ``stdout`` (not the run header's lines before them)."""
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def _train(out: Path, *, ranks: int = 2, options: tuple[str, ...] = ()) -> list[str]:
    first, *more = launcher(ranks)
    return [first, *options, *more, sys.executable, "-m", "mpitrain", "train", *PIPED,
            "--out", str(out)]


def test_mpiexec_piped_to_head_finishes_the_run(tmp_path):
    """`mpiexec -n 2 python -m mpitrain train ... | head -n 2`: hydra's mpiexec used to
    write the third line into the closed pipe, die of SIGPIPE (141) and kill the ranks,
    leaving "running". Rank 0 now writes into that pipe itself: it warns once, trains on,
    and mpiexec exits 0."""
    out = tmp_path / "run"
    done, statuses = _pipeline(_train(out), "| head -n 3")
    assert statuses == [0, 0], done.stderr
    header, *epochs = done.stdout.splitlines()
    assert header.startswith("reduce: ")  # the run header: which reduction runs
    assert [line.split("  ")[0] for line in epochs] == ["epoch 1/60", "epoch 2/60"]
    assert error_lines(done) == [WARNING]
    assert status(out) == "finished" and len(metrics_epochs(out)) == 60
    assert (out / "model.npz").is_file()


def test_mpiexec_with_stderr_piped_to_head_finishes_the_run(tmp_path):
    """`2>&1 | head`: stderr goes into the same closed pipe; the warning is dropped there
    instead of killing mpiexec."""
    out = tmp_path / "run"
    done, statuses = _pipeline(_train(out), "2>&1 | head -n 2")
    assert statuses == [0, 0], done.stderr
    assert len(done.stdout.splitlines()) == 2 and "Traceback" not in done.stderr
    assert status(out) == "finished" and len(metrics_epochs(out)) == 60


def test_mpiexec_piped_to_a_reader_that_left_already(tmp_path):
    out = tmp_path / "run"
    done, statuses = _pipeline(_train(out), "| true")
    assert statuses == [0, 0], done.stderr
    assert error_lines(done) == [WARNING]
    assert status(out) == "finished"


def test_piped_output_is_the_same_as_into_a_file(tmp_path):
    """A reader that reads everything gets the lines a file gets (a file: mpiexec's own
    forwarding, as before), timings aside."""
    done, statuses = _pipeline(_train(tmp_path / "piped"), "| cat")
    assert statuses == [0, 0] and error_lines(done) == [], done.stderr
    log = tmp_path / "train.log"
    filed, _ = _pipeline(_train(tmp_path / "filed"), f"> {shlex.quote(str(log))}")
    assert filed.returncode == 0, filed.stderr

    def lines(text: str) -> list[str]:
        return [line.split(" samples/s")[0].rsplit("  ", 1)[0] for line in text.splitlines()]

    assert lines(done.stdout) == lines(log.read_text())
    assert len(epoch_lines(done.stdout)) == 60


def test_mpiexec_output_options_keep_hydras_forwarding(tmp_path):
    """-prepend-rank (an option that changes the output) keeps the old path: every line
    still carries hydra's rank prefix."""
    done, statuses = _pipeline(_train(tmp_path / "run", options=("-prepend-rank",)), "| cat")
    assert statuses == [0, 0], done.stderr
    lines = [line for line in done.stdout.splitlines() if " epoch " in line]
    assert len(lines) == 60 and all(line.startswith("[0] epoch") for line in lines), lines


def test_switched_off_direct_output_uses_hydras_forwarding(tmp_path):
    """MPITRAIN_DIRECT_OUTPUT=0 (or a launch that is not recognised): output as before."""
    out = tmp_path / "run"
    done, statuses = _pipeline(_train(out), "| cat", env={"MPITRAIN_DIRECT_OUTPUT": "0"})
    assert statuses == [0, 0] and error_lines(done) == [], done.stderr
    assert len(epoch_lines(done.stdout)) == 60 and status(out) == "finished"


# ---------------------------------------------------------------- first run


class _Stream(io.StringIO):
    """A stream that reports when a text has been written to it."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.seen = wanted, threading.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        if self.wanted in self.getvalue():
            self.seen.set()
        return count


def test_compile_notice_appears_only_for_a_long_load():
    quick = _Stream("compiling")
    with compile_notice(True, after=60, stream=quick):
        pass
    assert quick.getvalue() == ""
    slow = _Stream("compiling kernels (first run only)…")
    with compile_notice(True, after=0.01, stream=slow):
        assert slow.seen.wait(30)  # the load is still going on when the notice comes
    assert slow.getvalue().startswith("mpitrain: compiling kernels (first run only)…")
    assert slow.getvalue().endswith(" s\n") and " done in " in slow.getvalue()
    silent = _Stream("x")
    with compile_notice(False, after=0.0, stream=silent):
        pass
    assert silent.getvalue() == ""


def test_first_run_with_an_empty_kernel_cache_announces_the_compilation(tmp_path):
    done = run_train([*[a for a in SMALL if a != "--quiet"], "--epochs", "1",
                      "--out", str(tmp_path / "run")], ranks=1, timeout=280,
                     env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].startswith(
        "mpitrain: compiling kernels (first run only)…"), lines
    assert lines[0].endswith(" s") and " done in " in lines[0]


# ---------------------------------------------------------------- the command line itself


def test_no_command_prints_usage_and_one_error():
    done = run_mpi(["-m", "mpitrain"], ranks=2, timeout=60)
    assert done.returncode == 2
    lines = error_lines(done)
    assert lines[0].startswith("usage: mpitrain ") and "COMMAND" in lines[0]
    assert lines[-1] == ("mpitrain: error: no command given: choose one of train, predict, "
                         "show, plot, tensorboard, checkpoint, tune, plan, bench (python -m "
                         "mpitrain COMMAND --help)")
    assert sum("error" in line for line in lines) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--epoch", "3"],
     "unrecognized arguments: --epoch 3 (did you mean --epochs?)"),
    (["train", "--hiden=3"], "unrecognized arguments: --hiden=3 (did you mean --hidden?)"),
    (["bench", "train", "--repeat", "2"],
     "unrecognized arguments: --repeat 2 (did you mean --repeats?)"),
    (["train", "--zzz"], "unrecognized arguments: --zzz"),
])
def test_misspelt_flags_get_a_hint(argv, message):
    done = run_mpi(["-m", "mpitrain", *argv], ranks=2, timeout=60)
    assert done.returncode == 2
    assert error_lines(done) == [f"mpitrain: error: {message}"]


def test_misspelt_keywords_of_train_get_a_hint():
    from mpitrain import TrainConfig, train

    with pytest.raises(UserError, match=r"^train\(\): unknown keyword 'hiden' \(did you mean "
                                        r"'hidden'\?\)$"):
        train(hiden=3)
    with pytest.raises(UserError, match=r"unknown keyword 'epoch' \(did you mean 'epochs'"):
        train(TrainConfig(), epoch=3)
    with pytest.raises(UserError, match=r"^train\(\): unknown keyword 'zzz'$"):
        train(zzz=1)
    with pytest.raises(UserError, match=r"^train\(\): option 'epochs' expects an integer "
                                        r"\(got '3'\)$"):
        train(epochs="3")
    with pytest.raises(UserError, match=r"option 'hidden' expects a list of integers"):
        train(hidden=("a",))
