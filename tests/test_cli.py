"""End-to-end: the CLI under mpiexec, as users run it — output files, exit codes, errors."""

import dataclasses
import json
import re
import tomllib

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi, run_train

from mpitrain.config import TrainConfig

pytestmark = pytest.mark.timeout(300)

SMALL = ["--data", "synthetic", "--samples", "600", "--features", "8", "--classes", "3",
         "--model", "mlp", "--hidden", "16", "--epochs", "3", "--batch-size", "64"]


def test_train_writes_outputs(tmp_path):
    out = tmp_path / "run"
    done = run_train([*SMALL, "--reduce", "ring", "--out", str(out)], ranks=3)
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(progress) == 3, done.stdout  # one line per epoch, printed once
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for key in ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                "seconds", "samples_per_second", "compute_seconds", "comm_seconds"):
        assert key in lines[-1]
    assert lines[-1]["step"] == 3 * 8  # 480 training rows / 64 → 8 steps per epoch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["ranks"] == 3
    assert summary["final"] == lines[-1]
    assert summary["config"]["hidden"] == [16]
    with np.load(out / "model.npz", allow_pickle=False) as model:
        assert model["W0"].shape == (8, 16) and model["W1"].shape == (16, 3)
        assert str(model["meta_model"]) == "mlp"
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["reduce"] == "ring" and config["samples"] == 600


def test_config_file_and_flags_and_refusal_to_overwrite(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('data = "synthetic"\nsamples = 300\nmodel = "softmax"\nepochs = 5\n')
    out = tmp_path / "run"
    done = run_train(["--config", str(config), "--epochs", "2", "--quiet", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    again = run_train(["--config", str(config), "--out", str(out)])
    assert again.returncode == 2
    assert "holds a finished run; pass --overwrite" in again.stderr
    replaced = run_train(["--config", str(config), "--out", str(out), "--overwrite",
                          "--quiet"])
    assert replaced.returncode == 0, replaced.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5


def shown_default(value) -> str:
    """A default as --help shows it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def test_help_lists_every_option():
    """Every field of TrainConfig has its flag in --help (``--x, --no-x`` for a switch),
    with its choices, its help text and its default; and --help names no other flag."""
    done = run_mpi(["-m", "mpitrain", "train", "--help"], ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage:") == 1  # printed by rank 0 only
    usage, _, options = done.stdout.partition("\noptions:\n")
    assert options, done.stdout
    entries = {}  # flag -> its entry (the flag's lines up to the next flag), spaces removed
    for entry in re.split(r"\n(?=  -)", options):
        match = re.match(r"  (-[-\w]+)", entry)
        if match:
            entries[match.group(1)] = re.sub(r"\s+", "", entry)
    known = {"-h", "--config"}  # the entries --help must have
    negations = set()
    for field in dataclasses.fields(TrainConfig):
        option = "--" + field.name.replace("_", "-")
        assert option in entries, (field.name, sorted(entries))
        entry = entries[option]
        if isinstance(field.default, bool):
            assert entry.startswith(f"{option},--no-{option[2:]}"), (option, entry)
            negations.add(f"--no-{option[2:]}")
        choices = field.metadata.get("choices")
        if choices:
            assert entry.startswith(f"{option}{{{','.join(choices)}}}"), (option, entry)
            assert f"[{option} {{{','.join(choices)}}}]" in usage, option
        help_text = re.sub(r"\s+", "", field.metadata["help"])
        assert help_text in entry, (option, entry)
        assert f"(default:{shown_default(field.default)})" in entry, (option, entry)
        known.add(option)
    assert set(entries) == known, set(entries) ^ known
    unwrapped = re.sub(r"-\n\s+", "-", done.stdout)  # argparse may wrap after a hyphen
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][-a-z0-9]*", unwrapped))
    stale = mentioned - known - negations - {"--help"}
    assert not stale, stale  # e.g. a help text naming a flag that was renamed


def write_csv(path, X, y):
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.6g")
    return str(path)


def bad_inputs(tmp_path):
    """(argv, expected message fragment) for every user error the core must catch."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    good = write_csv(tmp_path / "good.csv", X, np.arange(40) % 2)
    wide = write_csv(tmp_path / "wide.csv", rng.normal(size=(10, 5)), np.arange(10) % 2)
    nan = X.copy()
    nan[33, 2] = np.nan
    with_nan = write_csv(tmp_path / "nan.csv", nan, np.arange(40) % 2)
    fractional = write_csv(tmp_path / "frac.csv", X, np.arange(40) % 2 + 0.5)
    negative = write_csv(tmp_path / "neg.csv", X, -(np.arange(40) % 2))
    tiny = write_csv(tmp_path / "tiny.csv", X[:2], np.array([0, 1]))
    return [
        (["--data", str(tmp_path / "missing.csv")], "does not exist"),
        (["--data", good, "--bogus", "1"], "unrecognized arguments: --bogus"),
        (["--data", good, "--reduce", "tree"], "invalid choice: 'tree'"),
        (["--data", good, "--epochs", "two"], "invalid int value: 'two'"),
        (["--data", good, "--test-data", wide], "features"),
        (["--data", with_nan], "non-finite"),
        (["--data", fractional], "label"),
        (["--data", negative], "label"),
        (["--data", tiny, "--test-fraction", "0"], "ranks but only 2 training rows"),
        (["--data", good, "--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
        (["--data", good, "--lr", "-1"], "--lr must be a positive number (got -1.0)"),
        (["--data", good, "--lr", "0"], "--lr must be a positive number (got 0.0)"),
        (["--data", good, "--epochs", "0"], "--epochs must be >= 1 (got 0)"),
        (["--data", good, "--model", "logistic", "--data", "digits"], "needs binary labels"),
    ]


def test_user_errors_exit_2_with_one_message(tmp_path):
    for argv, fragment in bad_inputs(tmp_path):
        done = run_train([*argv, "--quiet"], ranks=3, timeout=60)
        assert done.returncode == 2, (argv, done.returncode, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, done.stderr)  # once, by rank 0, no traceback
        assert lines[0].startswith("mpitrain: error: "), lines
        assert fragment in lines[0], (argv, lines[0])


def test_unexpected_exception_on_one_rank_aborts_the_job(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\n"
        "from mpi4py import MPI\n"
        "import mpitrain.strategies.sync as sync\n"
        "original = sync.SyncStrategy.contribute\n"
        "def contribute(self, unit, *args, **kwargs):\n"
        "    if MPI.COMM_WORLD.Get_rank() == 1 and unit.index == 3:\n"
        "        raise RuntimeError('boom on purpose')\n"
        "    original(self, unit, *args, **kwargs)\n"
        "sync.SyncStrategy.contribute = contribute\n"
        "from mpitrain.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    done = run_mpi([str(script), "train", *SMALL, "--quiet"], ranks=3, timeout=60)
    assert done.returncode == 1, done.stderr  # MPI_Abort(MPI_COMM_WORLD, 1): mpiexec's status
    assert "mpitrain: rank 1 of 3: unexpected error:" in done.stderr
    assert "boom on purpose" in done.stderr


@pytest.mark.parametrize("script,rest", [
    ("train_api.py", ["parameters: {'W0': (16, 3), 'b0': (3,)}"]),  # seeded: 0.814
    ("train_arrays.py", ["classes: ['cat', 'dog', 'owl']"]),  # seeded: 0.788
])
def test_python_api_example_runs(script, rest):
    done = run_mpi([str(ROOT / "examples" / script)], ranks=2)
    assert done.returncode == 0, done.stderr
    first, *others = done.stdout.splitlines()  # rank 0 only
    accuracy = re.fullmatch(r"test accuracy (\d\.\d{3}) after 5 epochs", first)
    assert accuracy, done.stdout
    assert float(accuracy.group(1)) > 0.6, first  # 3 classes (chance 1/3)
    assert others == rest, done.stdout


def test_example_config_runs(tmp_path):
    done = run_train(["--config", str(ROOT / "examples" / "digits_mlp.toml"), "--epochs", "2",
                      "--out", str(tmp_path / "digits")], ranks=4)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "digits" / "model.npz").exists()
