"""How close a P-rank job comes to P independent 1-rank runs on the per-rank shares (issue
17: "2 ranks >= 90% of the two-independent-runs ceiling").

    python benchmarks/sparse/ceiling.py --data wide.svm --ranks 2 --batch-size 64 \\
        --repeat 5 --json ceiling.json -- --model logistic --sparse on --epochs 4 --seed 1

The data file is cut into ``--ranks`` shares of consecutive lines (the rows the ranks of the
job hold, up to the holdout), written next to a scratch copy. Each repeat runs, one after
the other (their order alternating between repeats):

- the job: ``mpiexec -n P python -m mpitrain train --data FILE --batch-size B ...``;
- the ceiling: P runs ``python -m mpitrain train --data SHARE_r --batch-size B/P ...``
  started together, each on one share (what P ranks would do with no communication).

A run's time is the median of its epochs' ``seconds`` (metrics.jsonl) after the first
``--skip`` epochs (start-up and the first epoch's kernel loads are not the steady state).
The repeat's ratio is the independent runs' mean time over the job's: 1.0 means the job
loses nothing to communicating. The same ratio of the fastest epochs is printed too. On
a machine other work shares both move with that work (a job whose ranks meet every step
loses more to being descheduled than lone runs do): quote them with the load average.
Prints one line per repeat, then the median ratios and the load average before and after
(the machine's other work shows in both); ``--json`` writes the same. Options after
``--`` go to every run (OMP_NUM_THREADS=1 and MPITRAIN_TUNE=off are set unless already in
the environment). Exit 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def split_lines(path: Path, parts: int, directory: Path) -> list[Path]:
    """``path`` cut into ``parts`` files of consecutive lines (sizes differ by at most 1)."""
    lines = path.read_bytes().splitlines(keepends=True)
    shares = []
    for r in range(parts):
        share = directory / f"share{r}{path.suffix}"
        share.write_bytes(b"".join(lines[r * len(lines) // parts:
                                         (r + 1) * len(lines) // parts]))
        shares.append(share)
    return shares


def epoch_seconds(out: Path, skip: int) -> tuple[float, float]:
    """Median and fastest ``seconds`` of the epochs of run ``out`` after the first ``skip``."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    seconds = [row["seconds"] for row in rows if row["epoch"] > skip]
    if not seconds:
        raise SystemExit(f"ceiling: {out} has no epoch after the first {skip}; "
                         "give more --epochs or a smaller --skip")
    return float(median(seconds)), float(min(seconds))


def train_command(data: Path, batch: int, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "mpitrain", "train", "--data", str(data), "--batch-size",
            str(batch), *extra, "--quiet", "--overwrite", "--out", str(out)]


def check(done: subprocess.CompletedProcess | subprocess.Popen, what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(f"ceiling: the {what} failed (exit {done.returncode})")


def run_job(args: argparse.Namespace, out: Path, env: dict[str, str]) -> tuple[float, float]:
    """The P-rank job's seconds per epoch (median, fastest)."""
    mpiexec = Path(sys.executable).with_name("mpiexec")
    launcher = str(mpiexec) if mpiexec.exists() else (shutil.which("mpiexec") or "mpiexec")
    command = [launcher, "-n", str(args.ranks),
               *train_command(args.data, args.batch_size, out, args.train)]
    check(subprocess.run(command, env=env, stdout=subprocess.DEVNULL), f"{args.ranks}-rank job")
    return epoch_seconds(out, args.skip)


def run_independent(args: argparse.Namespace, shares: list[Path], out: Path,
                    env: dict[str, str]) -> list[tuple[float, float]]:
    """Each share's 1-rank run, all started together; their seconds per epoch (median,
    fastest)."""
    batch = max(1, args.batch_size // args.ranks)
    runs = [subprocess.Popen(train_command(share, batch, out / f"r{i}", args.train), env=env,
                             stdout=subprocess.DEVNULL) for i, share in enumerate(shares)]
    for run in runs:
        run.wait()
    for run in runs:
        check(run, "independent 1-rank run")
    return [epoch_seconds(out / f"r{i}", args.skip) for i in range(len(shares))]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the job's data file")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the job's global batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", type=int, default=1, help="leading epochs not timed")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("train", nargs="*", help="options for every run (after --)")
    args = parser.parse_args(argv)
    if args.ranks < 2 or args.repeat < 1 or args.batch_size < args.ranks:
        parser.error("need --ranks >= 2, --repeat >= 1 and --batch-size >= --ranks")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    env = {"OMP_NUM_THREADS": "1", "MPITRAIN_TUNE": "off", **os.environ}
    load_before = load_average()
    repeats = []
    with tempfile.TemporaryDirectory(prefix="mpitrain-ceiling-") as scratch:
        work = Path(scratch)
        shares = split_lines(args.data, args.ranks, work)
        for i in range(args.repeat):
            if i % 2 == 0:
                job = run_job(args, work / "job", env)
                alone = run_independent(args, shares, work / "alone", env)
            else:
                alone = run_independent(args, shares, work / "alone", env)
                job = run_job(args, work / "job", env)
            mean = sum(t for t, _ in alone) / len(alone)
            fastest = sum(t for _, t in alone) / len(alone)
            repeat = {"job_seconds": job[0], "independent_seconds": [t for t, _ in alone],
                      "ratio": mean / job[0], "job_fastest_seconds": job[1],
                      "independent_fastest_seconds": [t for _, t in alone],
                      "ratio_fastest": fastest / job[1]}
            repeats.append(repeat)
            print(f"repeat {i + 1}: {args.ranks} ranks {job[0]:.4f} s/epoch; {args.ranks} "
                  f"independent 1-rank runs {mean:.4f} s/epoch (slowest "
                  f"{max(t for t, _ in alone):.4f}); ratio {repeat['ratio']:.3f} (fastest "
                  f"epochs: {job[1]:.4f} and {fastest:.4f}, {repeat['ratio_fastest']:.3f})",
                  flush=True)
    result = {"ranks": args.ranks, "batch_size": args.batch_size, "train": args.train,
              "repeats": repeats, "ratio": median(r["ratio"] for r in repeats),
              "ratio_fastest": median(r["ratio_fastest"] for r in repeats),
              "load_average": [load_before, load_average()]}
    print(f"ceiling ratio (median of {args.repeat}): {result['ratio']:.3f}; of the fastest "
          f"epochs: {result['ratio_fastest']:.3f}  [load average {load_before:.1f} before, "
          f"{result['load_average'][1]:.1f} after]")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
