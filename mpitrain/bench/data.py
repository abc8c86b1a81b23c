"""``python -m mpitrain bench data``: how fast each rank reads its share of a libsvm or
(``--format csv``) CSV file, and how much memory it takes doing so.

Every rank opens the file on its byte range, the ranks number the rows with one collective,
and each reads the rows of its block into CSR (as ``mpitrain train`` does before making
them dense or keeping them sparse). Reported per run: the slowest rank's time, the rate,
each rank's peak resident memory over its start (``VmHWM``, where Linux lets it be reset)
against its CSR share, and on rank 0 scikit-learn's ``load_svmlight_file`` on the same file
(``--sklearn``) as the reference. Without ``--file`` a file of ``--rows`` rows with
``--nnz`` random features among ``--features`` is written first (``--keep`` keeps it).

With ``--format csv`` each rank opens the CSV file and reads the rows of its block as
``mpitrain train`` does (pyarrow's parser when installed; ``--loadtxt`` forces the numpy
one), the file has ``--features`` 17-digit values and a label a row, and ``--pyarrow``
times ``pyarrow.csv.read_csv`` (one thread, rank 0, whole file) as the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from mpitrain.bench import output_file
from mpitrain.data.libsvm import LibsvmSource, share_scans
from mpitrain.data.pages import with_small_pages
from mpitrain.data.sharding import block_range
from mpitrain.data.text import CsvSource
from mpitrain.errors import UserError, agree, checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (also used by ``mpitrain bench data``)."""
    parser.add_argument("--format", choices=("libsvm", "csv"), default="libsvm",
                        help="file format (default: %(default)s)")
    parser.add_argument("--file", metavar="PATH", help="file to read (default: write one)")
    parser.add_argument("--rows", type=int, default=100_000, metavar="N",
                        help="rows of the written file (default: %(default)s)")
    parser.add_argument("--features", type=int, default=64, metavar="D",
                        help="feature count of the written file (default: %(default)s)")
    parser.add_argument("--nnz", type=int, default=64, metavar="K",
                        help="non-zero features per row of the written file (default: "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the written file")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="timed reads; the best is reported (default: %(default)s)")
    parser.add_argument("--sklearn", action="store_true",
                        help="also time scikit-learn's load_svmlight_file on rank 0")
    parser.add_argument("--pyarrow", action="store_true",
                        help="also time pyarrow.csv.read_csv, one thread, on rank 0 (csv)")
    parser.add_argument("--loadtxt", action="store_true",
                        help="read CSV with numpy.loadtxt even when pyarrow is installed")
    parser.add_argument("--keep", metavar="PATH", help="write the generated file here, keep it")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")


def write_libsvm(path: Path, *, rows: int, features: int, nnz: int, seed: int) -> None:
    """A random libsvm file: labels 0/1, ``nnz`` distinct sorted 1-based indices per row
    (a few fewer where a draw repeats among many features), values with 17 significant
    digits (as ``dump_svmlight_file`` writes)."""
    rng = np.random.default_rng(seed)
    with path.open("w") as fp:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            if 4 * nnz > features:  # dense-ish: distinct columns by a permutation per row
                cols = np.sort(rng.random((n, features)).argsort(axis=1)[:, :nnz], axis=1)
            else:
                cols = np.sort(rng.integers(0, features, (n, nnz)), axis=1)
            values = rng.standard_normal((n, nnz))
            labels = rng.integers(0, 2, n)
            fp.write("".join(_line(labels[i], cols[i], values[i]) for i in range(n)))


def write_csv(path: Path, *, rows: int, features: int, seed: int) -> None:
    """A random CSV file without header: ``features`` values with 17 significant digits
    and a label 0/1 a row."""
    rng = np.random.default_rng(seed)
    with path.open("w") as fp:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            values, labels = rng.standard_normal((n, features)).tolist(), rng.integers(0, 2, n)
            fp.write("".join(",".join(map(repr, row)) + f",{label}\n"
                             for row, label in zip(values, labels.tolist(), strict=True)))


def _line(label: int, cols: np.ndarray, values: np.ndarray) -> str:
    keep = np.r_[True, cols[1:] != cols[:-1]]
    return f"{label} " + " ".join(f"{c + 1}:{v!r}" for c, v in zip(
        cols[keep].tolist(), values[keep].tolist(), strict=True)) + "\n"


def memory_kb() -> dict[str, int]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS, where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@with_small_pages  # (as load_dataset reads)
def read_share(path: Path, comm: MPI.Comm) -> tuple[LibsvmSource, object]:
    """Collective: this rank's block of the file's rows, as ``mpitrain train`` reads them."""
    rank, size = comm.Get_rank(), comm.Get_size()
    source = checked(comm, LibsvmSource, path, option="--file", part=(rank, size))
    share_scans(comm, [source])
    start, stop = block_range(source.n_rows, size, rank)
    rows = np.arange(start, stop, dtype=np.int64)
    block = (source.exchange(comm, rows) if source.collective
             else checked(comm, source.read, rows))
    return source, block


@with_small_pages
def read_csv_share(path: Path, comm: MPI.Comm) -> tuple[CsvSource, object]:
    """Collective: this rank's block of the CSV file's rows, as ``mpitrain train`` reads them."""
    source = checked(comm, CsvSource, path, option="--file")
    start, stop = block_range(source.n_rows, comm.Get_size(), comm.Get_rank())
    block = checked(comm, source.read, np.arange(start, stop, dtype=np.int64))
    return source, block


def measure(path: Path, comm: MPI.Comm, repeat: int, read_share=read_share) -> dict:
    """Time ``repeat`` reads (the best counts) and the peak memory of the first."""
    read_share(path, comm)  # numba's cache loaded, the file in the page cache
    times, cpu, peak_kb, share = [], [], 0, 0
    for i in range(repeat):
        measured = i == 0 and reset_peak()
        before = memory_kb()
        comm.Barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        source, block = read_share(path, comm)
        cpu.append(comm.allreduce(time.process_time() - c0, op=MPI.MAX))
        elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        times.append(elapsed)
        if measured:
            peak_kb = memory_kb()["VmHWM"] - before["VmRSS"]
        share = block.X.nbytes + block.y.nbytes  # type: ignore[attr-defined]
        del block
    peaks = comm.allgather(peak_kb)
    shares = comm.allgather(share)
    return {"ranks": comm.Get_size(), "rows": source.n_rows, "file_MB": path.stat().st_size / 1e6,
            "seconds": min(times), "cpu_seconds": min(cpu),
            "rows_per_s": source.n_rows / min(times),
            "MB_per_s": path.stat().st_size / 1e6 / min(times),
            "peak_MB_per_rank": [p / 1024 for p in peaks],
            "share_MB_per_rank": [s / 2**20 for s in shares],
            "peak_over_share": max(p * 1024 / max(s, 1) for p, s in
                                   zip(peaks, shares, strict=True))}


def _pyarrow_cpu_seconds(path: Path) -> float | None:
    try:
        import pyarrow.csv as csv
    except ImportError:
        return None
    t0 = time.process_time()  # one thread: its CPU time, robust on a busy machine
    csv.read_csv(path, read_options=csv.ReadOptions(use_threads=False,
                                                    autogenerate_column_names=True))
    return time.process_time() - t0


def _sklearn_seconds(path: Path) -> float | None:
    try:
        from sklearn.datasets import load_svmlight_file
    except ImportError:
        return None
    t0 = time.perf_counter()
    load_svmlight_file(str(path))
    return time.perf_counter() - t0


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: write (or take) the file, measure, print a table and maybe JSON."""
    rank = comm.Get_rank()
    message = None
    for name in ("rows", "features", "nnz", "repeat"):
        if getattr(args, name) < 1:
            message = message or f"--{name} must be >= 1 (got {getattr(args, name)})"
    if args.format == "libsvm" and args.nnz > args.features:
        message = message or f"--nnz must be at most --features ({args.features}; got {args.nnz})"
    agree(comm, message)
    temporary = None
    if args.file:
        path = Path(args.file)
    else:
        temporary = None if args.keep else tempfile.mkdtemp(prefix="mpitrain-bench-")
        suffix = ".csv" if args.format == "csv" else ".svm"
        name = args.keep or str(Path(temporary, "bench" + suffix))  # type: ignore[arg-type]
        path = Path(comm.bcast(name))
        if rank == 0 and args.format == "csv":
            write_csv(path, rows=args.rows, features=args.features, seed=args.seed)
        elif rank == 0:
            write_libsvm(path, rows=args.rows, features=args.features, nnz=args.nnz,
                         seed=args.seed)
        comm.Barrier()
    try:
        CsvSource.fast = not args.loadtxt
        result = measure(path, comm, args.repeat,
                         read_csv_share if args.format == "csv" else read_share)
        result["format"] = args.format
        if args.sklearn and rank == 0:
            result["sklearn_seconds"] = _sklearn_seconds(path)
        if args.pyarrow and rank == 0:
            result["pyarrow_cpu_seconds"] = _pyarrow_cpu_seconds(path)
        if rank == 0:
            _print(result)
            if args.json:
                output_file(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        comm.Barrier()
        if temporary and rank == 0:
            path.unlink(missing_ok=True)
            Path(temporary).rmdir()
    return 0


def _print(result: dict) -> None:
    print(f"{result['format']} read: {result['rows']} rows, {result['file_MB']:.1f} MB, "
          f"{result['ranks']} rank(s)")
    print(f"  time {result['seconds']:.3f} s  ({result['rows_per_s']:.3g} rows/s, "
          f"{result['MB_per_s']:.1f} MB/s); CPU {result['cpu_seconds']:.3f} s (slowest rank)")
    share = "CSR share" if result["format"] == "libsvm" else "share"
    print(f"  peak memory per rank {max(result['peak_MB_per_rank']):.1f} MB for a {share} of "
          f"{max(result['share_MB_per_rank']):.1f} MB (x{result['peak_over_share']:.2f})")
    if result.get("sklearn_seconds") is not None:
        print(f"  scikit-learn load_svmlight_file (rank 0, whole file): "
              f"{result['sklearn_seconds']:.3f} s")
    if result.get("pyarrow_cpu_seconds") is not None:
        print(f"  pyarrow.csv.read_csv, 1 thread (rank 0, whole file): "
              f"{result['pyarrow_cpu_seconds']:.3f} s CPU")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mpitrain.bench.data", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(), MPI.COMM_WORLD)
    except UserError as exc:
        print(f"mpitrain: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
