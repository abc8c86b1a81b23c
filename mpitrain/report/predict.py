"""``mpitrain predict --model MODEL.npz --data FILE --out predictions.csv``: every rank
predicts its block of the file's rows and writes them at their place in the output.

The file is read by the training data readers (any ``--data`` format; a label column is
ignored, and a CSV may also hold the features only). Rows are split in contiguous blocks
like training data, so a rank reads and holds only its rows (in chunks of
:data:`CHUNK_ROWS`; libsvm rows stay CSR); the numbers come from
:func:`mpitrain.models.predict.predict`. Each
rank formats its lines, an exclusive scan of their byte counts gives every rank its offset,
and the ranks write in parallel into a temporary file that rank 0 renames into place once
all are done: the CSV has a header line ``prediction`` and one line per input row, in the
input's order, for any number of ranks. ``--proba`` adds a column per class with
:func:`mpitrain.models.predict.predict_proba`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mpi4py import MPI

from mpitrain.config import FIELDS, flag, resolve
from mpitrain.data.base import Block, Source
from mpitrain.data.csr import Csr
from mpitrain.data.libsvm import LibsvmSource
from mpitrain.data.sharding import block_range
from mpitrain.data.sources import open_source
from mpitrain.data.synthetic import SyntheticSpec
from mpitrain.data.text import CsvSource
from mpitrain.data.values import features, sparse_features
from mpitrain.errors import UserError, agree, checked
from mpitrain.models import ModelError, SavedModel, load_model
from mpitrain.models.estimators import SavedEstimator
from mpitrain.models.predict import predict, predict_proba

CHUNK_ROWS = 65536
# TrainConfig fields that say how a data file is read
READ_OPTIONS = ("zero_based", "h5_x", "h5_y", "label_column", "feature_columns")
HEADER = "prediction"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL.npz",
                        help="a saved model (model.npz of a run directory)")
    parser.add_argument("--data", required=True, metavar="FILE",
                        help="rows to predict, in any --data format of mpitrain train (a "
                        "label column is ignored; a CSV may hold the features only)")
    parser.add_argument("--out", required=True, metavar="FILE.csv",
                        help="CSV to write: a header line, then one prediction per row")
    parser.add_argument("--proba", action="store_true",
                        help="classifiers: add one column of probabilities per class")
    for name in READ_OPTIONS:  # how files are read: the same flags as mpitrain train
        meta = FIELDS[name].metadata
        parser.add_argument(f"--{flag(name)}", dest=name, choices=meta["choices"],
                            metavar=meta["metavar"] or (None if meta["choices"] else
                                                        name.upper()),
                            help=f"{meta['help']} (default: {FIELDS[name].default})")


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: predict every row of ``args.data`` and write ``args.out``."""
    from mpitrain.training import read_options  # not at import: --help stays light

    saved, task = checked(comm, _load, args.model, args.proba)
    config = checked(comm, resolve, {}, {**{name: getattr(args, name) for name in READ_OPTIONS
                                            if getattr(args, name) is not None},
                                         **_hashing(saved)})
    source = checked(comm, open_source, args.data, option="--data", task=task, seed=0,
                     synthetic=SyntheticSpec(), read=read_options(config))
    agree(comm, _unhashable(source, saved))
    agree(comm, _width_mismatch(source, saved, args))
    start, stop = block_range(source.n_rows, comm.Get_size(), comm.Get_rank())
    text = checked(comm, _predict_block, source, saved, start, stop, args.proba)
    out = Path(args.out)
    temp = out.with_name(f".{out.name}.tmp")
    header = (_header(saved, args.proba) + "\n").encode()
    length = np.array([len(text)], dtype=np.int64)
    offset = np.zeros(1, dtype=np.int64)
    comm.Exscan(length, offset, op=MPI.SUM)
    rank0 = comm.Get_rank() == 0

    def create() -> None:  # rank 0: the file, with its header, before anybody writes
        if rank0:
            _output_error(out, lambda: temp.write_bytes(header))

    def publish() -> None:  # rank 0: once every rank has written its lines
        if rank0:
            _output_error(out, lambda: os.replace(temp, out))

    start_at = len(header) + (0 if rank0 else int(offset[0]))
    try:
        checked(comm, create)
        checked(comm, _output_error, out, lambda: _write_at(temp, text, start_at))
        checked(comm, publish)
    except UserError:
        if rank0:  # no partial output left behind (where the file system lets us)
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        raise
    if rank0:
        print(f"mpitrain: wrote {source.n_rows:,} predictions to {out}", file=sys.stderr,
              flush=True)
    return 0


def _load(path: str, proba: bool) -> tuple[SavedModel, str]:
    """The saved model and its task ("classification" or "regression")."""
    if not Path(path).is_file():
        raise UserError(f"--model: file {path!r} does not exist")
    try:
        saved = load_model(path)
        task = saved.task if isinstance(saved, SavedEstimator) else saved.build().task
    except ModelError as exc:
        raise UserError(f"--model: {path!r}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--model: {path!r} is not a model written by mpitrain train "
                        f"({exc})") from None
    if proba and task == "regression":
        raise UserError(f"--proba needs a classifier, but {path!r} is a regression model")
    return saved, task


def _hashing(saved: SavedModel | SavedEstimator) -> dict[str, int]:
    """The model's feature hashing as read options (none if it was not trained on hashed
    feature names)."""
    bits = getattr(saved, "hash_bits", 0)
    return {"hash_bits": bits, "hash_seed": saved.hash_seed} if bits else {}


def _unhashable(source: Source, saved: SavedModel | SavedEstimator) -> str | None:
    if getattr(saved, "hash_bits", 0) and not isinstance(source, LibsvmSource):
        return (f"--data: the model hashes feature names (--hash-bits {saved.hash_bits}), "
                f"so its rows must be libsvm text (.svm, .libsvm), not {source.quoted}")
    return None


def _header(saved: SavedModel, proba: bool) -> str:
    """``prediction``, then with ``proba`` one ``proba_CLASS`` column per class."""
    if not proba:
        return HEADER
    names = (saved.classes if saved.classes is not None else
             range(max(2, saved.n_classes)))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(
        [HEADER, *(f"proba_{name}" for name in names)])
    return buffer.getvalue()


def _features_only(source: Source, saved: SavedModel) -> bool:
    """A CSV without a label column: its last column is the model's last feature."""
    return isinstance(source, CsvSource) and source.n_features == saved.n_features - 1


def _width_mismatch(source: Source, saved: SavedModel, args: argparse.Namespace) -> str | None:
    width = saved.n_features
    if source.n_features is None or source.n_features == width:
        return None
    if _features_only(source, saved):
        return None
    return (f"--data: {source.quoted} has {source.n_features} features but the model "
            f"{args.model!r} was trained on {width}")


def _predict_block(source: Source, saved: SavedModel, start: int, stop: int,
                   proba: bool) -> bytes:
    """This rank's rows, predicted chunk by chunk, as CSV lines."""
    width = saved.n_features
    buffer = io.StringIO()
    for first in range(start, stop, CHUNK_ROWS):
        rows = np.arange(first, min(stop, first + CHUNK_ROWS), dtype=np.int64)
        block = source.read(rows)
        if _features_only(source, saved):
            block = Block(X=np.column_stack([block.X, block.y]), y=block.y, rows=block.rows,
                          lines=block.lines)
        if block.X.shape[1] > width:  # sparse rows only show their width when read
            raise UserError(f"--data: {source.quoted} has rows with {block.X.shape[1]} "
                            f"features but the model was trained on {width}")
        X = (sparse_features(block, source, width, saved.dtype) if isinstance(block.X, Csr)
             else features(block, source, width, saved.dtype,
                           missing=getattr(saved, "missing_values", False)))
        try:
            columns = [_texts(predict(saved, X))]
            if proba:
                columns += [_texts(column) for column in predict_proba(saved, X).T]
        except ModelError as exc:
            raise UserError(f"--model: {exc}") from None
        buffer.writelines(",".join(row) + "\n" for row in zip(*columns, strict=True))
    return buffer.getvalue().encode()


def _texts(values: np.ndarray) -> list[str]:
    """CSV fields of one column: integers, floats to 9 digits, names quoted where CSV
    needs it."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return [str(int(v)) for v in values]
    if values.dtype.kind == "f":
        return [f"{float(v):.9g}" for v in values]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    out = []
    for value in values:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([str(value)])
        out.append(buffer.getvalue()[:-1])
    return out


def _output_error(out: Path, action: Callable[[], object]) -> None:
    """Run ``action``; an OSError becomes the user's error about ``--out``."""
    try:
        action()
    except OSError as exc:
        raise UserError(f"--out: cannot write {str(out)!r}: {exc.strerror}") from None


def _write_at(path: Path, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    finally:
        os.close(fd)
