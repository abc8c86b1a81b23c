"""Seeing a run (issue 11, "See a run"), end to end: ``mpitrain show RUN``,
``mpitrain plot RUN ... --out FILE`` and ``mpitrain predict`` under mpiexec."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi, run_train
from test_reliability import error_lines

from mpitrain.models import load_model
from mpitrain.models.predict import predict
from mpitrain.report.plot import _rows
from mpitrain.report.record import read_run
from mpitrain.report.show import duration
from mpitrain.runtime.progress import progress_line

pytestmark = pytest.mark.timeout(300)

SMALL = ["--data", "synthetic", "--samples", "600", "--features", "8", "--classes", "3",
         "--model", "mlp", "--hidden", "16", "--epochs", "3", "--batch-size", "64",
         "--quiet"]
FEDERATED = ["--data", "synthetic", "--samples", "600", "--features", "8", "--classes", "3",
             "--model", "softmax", "--mode", "fedavg", "--clients", "6",
             "--client-fraction", "0.5", "--rounds", "3", "--local-epochs", "1",
             "--dp-clip", "1.0", "--dp-noise", "0.5", "--quiet"]
REGRESSION = ["--data", "synthetic", "--samples", "400", "--features", "5", "--model", "linear",
              "--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sync classifier, a DP federated run and a regression, each trained on 2 ranks."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, args in (("mlp", SMALL), ("fed", FEDERATED), ("linear", REGRESSION)):
        done = run_train([*args, "--out", str(root / name)], ranks=2)
        assert done.returncode == 0, done.stderr
        made[name] = root / name
    return made


def mpitrain(*args: str, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    return run_mpi(["-m", "mpitrain", *args], ranks=ranks, timeout=120)


# ---------------------------------------------------------------- show


def test_show_summarises_a_run_on_one_screen(runs):
    done = mpitrain("show", str(runs["mlp"]), ranks=2)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 24  # one screen
    metrics = [json.loads(line) for line in (runs["mlp"] / "metrics.jsonl").read_text()
               .splitlines()]
    text = dict(line.split(None, 1) for line in lines)
    assert text["run"] == str(runs["mlp"]) and text["status"] == "finished"
    assert text["launched"].startswith("mpitrain 0.1.0, 2 ranks, MPICH")
    assert text["data"].startswith("synthetic") and "480 train rows, 120 test rows" in text["data"]
    assert text["model"].startswith("mlp 8-16-3 (")
    # the options that differ from the defaults, as flags
    assert text["options"] == ("--mode sync --samples 600 --features 8 --classes 3 "
                               "--hidden 16 --epochs 3")
    assert text["last"] == progress_line(metrics[-1], unit="epoch", total=3)
    best = max(metrics, key=lambda m: m["test_accuracy"])
    assert text["best"] == f"test accuracy {best['test_accuracy']:.4f} at epoch {best['epoch']}"
    assert text["throughput"].endswith("of step time")
    assert text["checkpoints"].startswith(f"1 in {runs['mlp']}/checkpoints (newest ckpt-")
    assert text["saved"] == f"{runs['mlp']}/model.npz"
    assert done.stderr == ""


def test_show_federated_and_failed_runs(runs, tmp_path):
    done = mpitrain("show", str(runs["fed"]))
    assert done.returncode == 0, done.stderr
    assert "progress    round 3/3 in " in done.stdout and " ε " in done.stdout
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps(
        {"status": "failed", "error": "cannot write a checkpoint: No space left on device",
         "config": {"mode": "sync", "epochs": 5}}))
    done = mpitrain("show", str(failed))
    assert done.returncode == 0, done.stderr
    assert ("status      failed: cannot write a checkpoint: No space left on device"
            in done.stdout)
    assert "progress    no epoch recorded yet" in done.stdout


def test_show_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    for path, message in ((tmp_path / "nope", f"show: run directory '{tmp_path / 'nope'}' "
                                              "does not exist"),
                          (tmp_path, f"show: '{tmp_path}' is not a run directory (it holds "
                                     "neither summary.json nor metrics.jsonl)"),
                          (tmp_path / "file", f"show: '{tmp_path / 'file'}' is not a "
                                              "directory")):
        done = mpitrain("show", str(path), ranks=2)
        assert done.returncode == 2
        assert error_lines(done)[0].startswith(f"mpitrain: error: {message}"), done.stderr
        assert len(error_lines(done)) == 1


def test_a_metrics_line_cut_short_by_a_killed_job_is_skipped(runs, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    text = (runs["mlp"] / "metrics.jsonl").read_text()
    (cut / "metrics.jsonl").write_text(text + '{"epoch": 4, "train_lo')
    assert len(read_run(cut, command="show").metrics) == 3


def test_durations_read_well():
    assert [duration(s) for s in (0.0284, 5.0, 12.34, 252.9, 7500.0)] == [
        "0.0284 s", "5 s", "12.3 s", "4 min 12 s", "2 h 05 min"]


# ---------------------------------------------------------------- plot


def test_plot_overlays_runs_and_has_a_row_per_quantity(runs, tmp_path):
    image = tmp_path / "figs" / "curves.png"
    done = mpitrain("plot", *(str(p) for p in runs.values()), "--out", str(image),
                    "--labels", "mlp,fedavg dp,linear", ranks=2)
    assert done.returncode == 0, done.stderr
    assert error_lines(done) == [f"mpitrain: wrote {image}"]
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(image).shape
    assert width > 800 and height > 4 * 300  # four rows: loss, accuracy, R², epsilon
    records = [read_run(p, command="plot") for p in runs.values()]
    assert [name for name, _ in _rows(records)] == ["loss", "accuracy", "r2", "epsilon"]
    assert [name for name, _ in _rows(records[:1])] == ["loss", "accuracy"]
    assert records[1].period == "round" and records[0].period == "epoch"


def test_plot_errors(runs, tmp_path):
    cases = [
        (["plot", str(runs["mlp"]), "--out", str(tmp_path / "a.png"), "--labels", "x,y"],
         "plot --labels: 2 labels for 1 runs"),
        (["plot", str(runs["mlp"]), "--out", str(tmp_path / "a.txt")],
         f"plot --out {tmp_path / 'a.txt'}: unknown image type"),
        (["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "a.png")],
         f"plot: run directory '{tmp_path / 'nope'}' does not exist"),
        (["plot", "--out", str(tmp_path / "a.png")],
         "the following arguments are required: RUN"),
    ]
    for argv, message in cases:
        done = mpitrain(*argv, ranks=2)
        assert done.returncode == 2, (argv, done.stderr)
        lines = error_lines(done)
        assert len(lines) == 1 and lines[0].startswith("mpitrain: error: "), lines
        assert message in lines[0], (argv, lines)


def test_plot_without_matplotlib_is_a_clear_error(runs, tmp_path):
    code = ("import sys\nsys.modules['matplotlib'] = None\n"
            "from mpitrain.cli import main\n"
            f"sys.exit(main(['plot', {str(runs['mlp'])!r}, '--out', "
            f"{str(tmp_path / 'a.png')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert error_lines(done) == [
        "mpitrain: error: plot needs matplotlib, which is not installed: pip install "
        "'mpitrain[plot]' (or, from a checkout, pip install '.[plot]')"]


# ---------------------------------------------------------------- predict


def _rows_file(tmp_path, n: int = 1001, d: int = 8):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, 3, n)
    labelled = tmp_path / "labelled.csv"
    np.savetxt(labelled, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    features = tmp_path / "features.csv"
    np.savetxt(features, X, delimiter=",", fmt="%.17g",
               header=",".join(f"x{i}" for i in range(d)), comments="")
    archive = tmp_path / "rows.npz"
    np.savez(archive, X=X, y=y)
    return X, [labelled, features, archive]


@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_predict_writes_every_row_in_order_for_any_number_of_ranks(runs, tmp_path, model):
    d = 8 if model == "mlp" else 5
    X, files = _rows_file(tmp_path, d=d)
    saved = runs[model] / "model.npz"
    want = predict(load_model(saved), X)
    outputs = []
    for ranks in (1, 3):
        for source in files:
            out = tmp_path / f"p-{ranks}-{source.stem}.csv"
            done = mpitrain("predict", "--model", str(saved), "--data", str(source),
                            "--out", str(out), ranks=ranks)
            assert done.returncode == 0, done.stderr
            assert error_lines(done) == [f"mpitrain: wrote 1,001 predictions to {out}"]
            lines = out.read_text().splitlines()
            assert lines[0] == "prediction" and len(lines) == 1 + len(X)
            got = np.array(lines[1:], dtype=want.dtype)
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(got, want)
            outputs.append(out.read_bytes())
            assert not list(tmp_path.glob(".*.tmp"))
    assert all(output == outputs[0] for output in outputs)  # same bytes for 1 and 3 ranks


def test_predict_proba_columns(runs, tmp_path):
    from mpitrain.models.predict import predict_proba
    from mpitrain.report.predict import _texts

    X, (labelled, *_) = _rows_file(tmp_path)
    saved = runs["mlp"] / "model.npz"
    out = tmp_path / "p.csv"
    done = mpitrain("predict", "--model", str(saved), "--data", str(labelled), "--out",
                    str(out), "--proba", ranks=3)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,proba_0,proba_1,proba_2"
    table = np.array([line.split(",") for line in lines[1:]], dtype=np.float64)
    np.testing.assert_array_equal(table[:, 0], predict(load_model(saved), X))
    np.testing.assert_allclose(table[:, 1:], predict_proba(load_model(saved), X), rtol=1e-6)
    np.testing.assert_allclose(table[:, 1:].sum(axis=1), 1.0, rtol=1e-5)
    # class names are written as CSV fields
    assert _texts(np.array(["cat", "a,b", 'say "hi"'])) == ["cat", '"a,b"', '"say ""hi"""']
    done = mpitrain("predict", "--model", str(runs["linear"] / "model.npz"), "--data",
                    str(labelled), "--out", str(out), "--proba", ranks=2)
    assert done.returncode == 2
    assert error_lines(done) == [
        f"mpitrain: error: --proba needs a classifier, but '{runs['linear']}/model.npz' is a "
        "regression model"]


def test_predict_reads_files_as_train_does(runs, tmp_path):
    """--label-column (and the other reading flags of train) apply to predict's --data."""
    X, _ = _rows_file(tmp_path, n=50)
    table = tmp_path / "first.csv"
    np.savetxt(table, np.column_stack([np.arange(50) % 3, X]), delimiter=",", fmt="%.17g",
               header=",".join(["label", *(f"x{i}" for i in range(8))]), comments="")
    saved = runs["mlp"] / "model.npz"
    out = tmp_path / "p.csv"
    done = mpitrain("predict", "--model", str(saved), "--data", str(table), "--out", str(out),
                    "--label-column", "label", ranks=2)
    assert done.returncode == 0, done.stderr
    got = np.array(out.read_text().splitlines()[1:], dtype=np.int64)
    np.testing.assert_array_equal(got, predict(load_model(saved), X))


def test_predict_errors(runs, tmp_path):
    _, (labelled, *_) = _rows_file(tmp_path, n=20, d=4)
    saved = str(runs["mlp"] / "model.npz")
    cases = [
        (["--model", str(tmp_path / "none.npz"), "--data", str(labelled)],
         f"--model: file '{tmp_path / 'none.npz'}' does not exist"),
        (["--model", str(labelled), "--data", str(labelled)], "is not a model written by"),
        (["--model", saved, "--data", str(labelled)],
         f"--data: '{labelled}' has 4 features but the model '{saved}' was trained on 8"),
        (["--model", saved, "--data", str(tmp_path / "nope.csv")], "does not exist"),
    ]
    (tmp_path / "rows.csv").write_text("\n".join(",".join(["1"] * 9) for _ in range(5)))
    no_dir = tmp_path / "no" / "p.csv"
    done = mpitrain("predict", "--model", saved, "--data", str(tmp_path / "rows.csv"),
                    "--out", str(no_dir), ranks=2)
    assert done.returncode == 2
    assert error_lines(done) == [f"mpitrain: error: --out: cannot write '{no_dir}': No such "
                                 "file or directory"]
    for argv, message in cases:
        done = mpitrain("predict", *argv, "--out", str(tmp_path / "p.csv"), ranks=2)
        assert done.returncode == 2, (argv, done.stderr)
        lines = error_lines(done)
        assert len(lines) == 1 and lines[0].startswith("mpitrain: error: "), lines
        assert message in lines[0], (argv, lines)
    assert not (tmp_path / "p.csv").exists()


# ---------------------------------------------------------------- tensorboard


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a protobuf message: ints, floats/doubles or bytes."""
    import struct

    out, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = struct.unpack_from("<d", data, at)[0], at + 8
        elif wire == 5:
            value, at = struct.unpack_from("<f", data, at)[0], at + 4
        else:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        out.append((number, value))
    return out


def _events(path) -> list[dict[str, object]]:
    """Decode an event file: every record's CRCs checked, each event as a dict."""
    import struct

    from mpitrain.report.tensorboard import _masked, crc32c

    data, at, events = path.read_bytes(), 0, []
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack_from("<I", data, at + 8)[0] == _masked(crc32c(header))
        body = data[at + 12:at + 12 + length]
        assert struct.unpack_from("<I", data, at + 12 + length)[0] == _masked(crc32c(body))
        at += 16 + length
        event = dict(_fields(body))
        if 5 in event:
            values = [dict(_fields(value)) for _, value in _fields(event[5])]
            event[5] = {v[1].decode(): v[2] for v in values}
        events.append(event)
    return events


def test_crc32c_known_value():
    from mpitrain.report.tensorboard import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0


def test_tensorboard_event_files_hold_every_metric_of_every_period(runs, tmp_path):
    logdir = tmp_path / "tb"
    done = mpitrain("tensorboard", str(runs["mlp"]), str(runs["fed"]), "--logdir",
                    str(logdir), ranks=2)
    assert done.returncode == 0, done.stderr
    for name in ("mlp", "fed"):
        files = list((logdir / name).glob("events.out.tfevents.*"))
        assert len(files) == 1 and f"mpitrain: wrote {files[0]}" in done.stderr
        events = _events(files[0])
        assert events[0][3] == b"brain.Event:2"
        metrics = [json.loads(line) for line in
                   (runs[name] / "metrics.jsonl").read_text().splitlines()]
        unit = "epoch" if name == "mlp" else "round"
        assert [e[2] for e in events[1:]] == [m[unit] for m in metrics]
        times = [e[1] for e in events]
        assert times == sorted(times)
        for event, line in zip(events[1:], metrics, strict=True):
            assert event[5]["loss/test"] == pytest.approx(line["test_loss"], rel=1e-6)
            assert event[5]["accuracy/train"] == pytest.approx(line["train_accuracy"],
                                                               rel=1e-6)
            if name == "fed":
                assert event[5]["run/epsilon"] == pytest.approx(line["epsilon"], rel=1e-6)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return  # the hand decoder above has checked the files
    accumulator = EventAccumulator(str(logdir / "mlp"))
    accumulator.Reload()
    assert "loss/test" in accumulator.Tags()["scalars"]
