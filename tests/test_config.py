"""Config: TOML and flags resolve to the same options; bad values give clear messages."""

import pytest

from mpitrain.config import TrainConfig, read_toml, resolve, to_toml
from mpitrain.errors import UserError


def test_toml_round_trip(tmp_path):
    config = resolve({}, {"model": "mlp", "hidden": (32, 16), "lr": 0.05, "nesterov": True,
                          "test_data": None, "data": 'we"ird\\path'})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert resolve(read_toml(str(path)), {}) == config


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epochs = 3\nlr = 1\n[train]\nbatch-size = 8\nhidden = "64,32"\n')
    config = resolve(read_toml(str(path)), {"epochs": 5})
    assert (config.epochs, config.lr, config.batch_size, config.hidden) == (5, 1.0, 8, (64, 32))


@pytest.mark.parametrize("text,message", [
    ("epoch = 3\n", "unknown option 'epoch' (did you mean 'epochs'?)"),
    ("epochs = 'three'\n", "option 'epochs' expects an integer (got 'three')"),
    ("standardize = 1\n", "option 'standardize' expects true or false (got 1)"),
    ("epochs = \n", "is not valid TOML"),
])
def test_bad_toml(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        read_toml(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match=r"--config: file '.*nope.toml' does not exist"):
        read_toml(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize("options,message", [
    ({"batch_size": 0}, "--batch-size must be >= 1 (got 0)"),
    ({"lr": -0.1}, "--lr must be a positive number (got -0.1)"),
    ({"lr": 0.0}, "--lr must be a positive number (got 0.0)"),
    ({"epochs": 0}, "--epochs must be >= 1 (got 0)"),
    ({"model": "cnn"}, "--model must be one of linear, logistic, softmax, mlp, gbdt, forest, "
     "kmeans or your own class as package.module:Class (got 'cnn')"),
    ({"test_fraction": 1.0}, "--test-fraction must be in [0, 1) (got 1.0)"),
    ({"hidden": (64, 0)}, "--hidden must be positive layer sizes (got 64,0)"),
    ({"clusters_per_class": 0}, "--clusters-per-class must be >= 1 (got 0)"),
    ({"compress": "fp16", "reduce": "ring"},
     "--compress fp16 is its own transport (16-bit words over MPI), so it takes --reduce "
     "auto (got --reduce ring)"),
    ({"overlap": True, "reduce": "shm"},
     "--overlap starts nonblocking reductions, which --reduce shm does not have; use "
     "--reduce auto or ring or mpi or root"),
    ({"reduce": "shm", "stall_timeout": 5.0},
     "--reduce shm sums in shared memory, which --no-shared-memory and --stall-timeout rule "
     "out (the watchdog watches MPI calls); use another --reduce"),
    ({"reduce": "shm", "shared_memory": False},
     "--reduce shm sums in shared memory, which --no-shared-memory and --stall-timeout rule "
     "out (the watchdog watches MPI calls); use another --reduce"),
    ({"mode": "fedavg", "overlap": True}, "--overlap applies to --mode sync (got --mode fedavg)"),
    ({"mode": "fedavg", "compress": "bf16"},
     "--compress bf16 applies to --mode sync (got --mode fedavg)"),
])
def test_bad_values(options, message):
    with pytest.raises(UserError) as info:
        resolve({}, options)
    assert str(info.value) == message


def test_defaults_are_valid():
    assert resolve({}, {}) == TrainConfig()
