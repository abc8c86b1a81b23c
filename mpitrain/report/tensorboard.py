"""``mpitrain tensorboard RUN [RUN ...] --logdir DIR``: a run's metrics as TensorBoard event
files, for ``tensorboard --logdir DIR``, with no dependency.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data,
masked CRC-32C of the data) each holding one ``tensorflow.Event`` protocol buffer; the
few fields needed here (wall time, step, file version, scalar summaries) are encoded by
hand. One scalar per metric and period (epoch or round): ``loss/train``, ``loss/test``,
``accuracy/…``, ``r2/…``, and the others under ``run/`` (``run/epsilon``,
``run/samples_per_second``, ...). Wall times count from the run's start (when it wrote
``config.toml``) by the periods' ``seconds``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from mpi4py import MPI

from mpitrain.errors import UserError, checked
from mpitrain.report.record import RunRecord, read_run

# keys of a metrics line that are not scalars to plot
_SKIP = {"epoch", "round", "step"}


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecords."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord holding ``data``."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", _masked(crc32c(length))) + data
            + struct.pack("<I", _masked(crc32c(data))))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, file_version: str | None = None,
          scalars: dict[str, float] | None = None) -> bytes:
    """An encoded ``Event{wall_time=1, step=2, file_version=3, summary=5}``; the summary
    holds ``Value{tag=1, simple_value=2}`` per scalar."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items())
        out += _field(5, values)
    return out


def tag_of(key: str) -> str:
    """``train_loss`` → ``loss/train``; ``epsilon`` → ``run/epsilon``."""
    split, _, metric = key.partition("_")
    if split in ("train", "test") and metric:
        return f"{metric}/{split}"
    return f"run/{key}"


def scalars_of(line: dict[str, Any]) -> dict[str, float]:
    return {tag_of(key): float(value) for key, value in line.items()
            if key not in _SKIP and isinstance(value, int | float)
            and not isinstance(value, bool)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+",
                        help="run directories (--out of mpitrain train)")
    parser.add_argument("--logdir", required=True, metavar="DIR",
                        help="TensorBoard log directory: one subdirectory per run")


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Rank 0 writes one event file per run."""
    checked(comm, lambda: _export(args) if comm.Get_rank() == 0 else None)
    return 0


def _export(args: argparse.Namespace) -> None:
    records = [read_run(path, command="tensorboard") for path in args.runs]
    names = [r.path.resolve().name for r in records]
    if len(set(names)) != len(names):
        names = [str(r.path).strip("/").replace("/", "_") for r in records]
    for record_, name in zip(records, names, strict=True):
        path = write_events(record_, Path(args.logdir) / name)
        print(f"mpitrain: wrote {path}", file=sys.stderr, flush=True)


def write_events(run_record: RunRecord, directory: Path) -> Path:
    """Write the event file of one run into ``directory``; returns its path."""
    config = run_record.path / "config.toml"
    start = config.stat().st_mtime if config.exists() else 0.0
    host = socket.gethostname()
    data = [record(event(start, 0, file_version="brain.Event:2"))]
    for number, (line, elapsed) in enumerate(
            zip(run_record.metrics, run_record.elapsed(), strict=True), 1):
        step = int(line.get(run_record.period, number))
        data.append(record(event(start + elapsed, step, scalars=scalars_of(line))))
    path = directory / f"events.out.tfevents.{int(start)}.{host}.mpitrain"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(data))
    except OSError as exc:
        raise UserError(f"tensorboard --logdir: cannot write {path}: {exc.strerror}") from None
    return path
