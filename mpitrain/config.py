"""The resolved training configuration: one frozen dataclass, read from flags and TOML.

Every option is a field of :class:`TrainConfig` whose metadata carries its help text and
allowed values; the CLI flags, the TOML keys and the written ``config.toml`` are all derived
from those fields, so an option is declared exactly once. Choice lists are owned by the
modules that implement them (models, optimizers, schedules, collectives, strategies, the
federated parts) and read from there. Checks of single values live here; combinations
that only make sense for one ``--mode`` are the strategy's (``Strategy.validate``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .asynchronous.straggler import parse_stragglers
from .collectives import NONBLOCKING_ALGORITHMS, STEP_ALGORITHMS
from .collectives.compressed import COMPRESSIONS
from .collectives.tuning import TUNE_ENV, TUNE_MODES, default_tune
from .data.batches import SHUFFLES
from .data.dataset import SPARSE
from .data.hashing import check_hashing
from .data.sources import ZERO_BASED
from .errors import UserError
from .federated.partition import PARTITIONS
from .federated.robust import AGGREGATES
from .federated.server import SERVER_OPTIMIZERS
from .kernels.network import DTYPES
from .models import MODELS, is_model_path
from .optimizers import OPTIMIZERS, SCHEDULES
from .strategies import ESTIMATORS, MODES, STRATEGIES, strategy_class, strategy_for
from .strategies.shards import SHARDS

# Options only some modes honour: a strategy lists those it does in ``Strategy.options``;
# any other mode rejects a value other than the default.
MODE_ONLY = ("compress", "overlap", "shard", "servers", "staleness", "sync_every",
             "local_after", "straggler", "simulate_schedule", "tensor_parallel",
             "sparse_reduce")


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
           group: str = "training", metavar: str | None = None,
           const: str | None = None) -> Any:
    """Declare a config field with its CLI help text (dataclass field with metadata).

    ``const`` makes the flag's value optional: ``--resume`` alone means ``const``.
    """
    meta = {"help": help, "choices": choices, "group": group, "metavar": metavar,
            "const": const}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every option of ``mpitrain train``; field names are the TOML keys."""

    # data
    data: str = option("synthetic", "training data: 'synthetic', 'digits', 'iris' (built-in unless "
                       "a file or directory of that name exists here), or a path: a .npz/"
                       ".csv/.svm/.libsvm/.h5/.hdf5/.parquet file, a directory holding X.npy "
                       "and y.npy, or a directory of .parquet parts", group="data")
    test_data: str | None = option(None, "separate test data (same kinds as --data); "
                                   "default: hold out --test-fraction of --data", group="data")
    test_fraction: float = option(0.2, "fraction of rows held out as the test set", group="data")
    zero_based: str = option("auto", "libsvm feature indices start at 0 (true), at 1 "
                             "(false), or auto: at 0 if any index is 0 (scikit-learn's "
                             "convention)", choices=ZERO_BASED, group="data")
    hash_bits: int = option(0, "libsvm: hash feature names (tokens name:value or name; "
                            "numbers are names too) into 2^B signed columns with MurmurHash3, "
                            "as scikit-learn's FeatureHasher; 0: off", group="data",
                            metavar="B")
    hash_seed: int = option(0, "--hash-bits: seed of the hash (0: scikit-learn's "
                            "FeatureHasher); not --seed, so a model's features never depend "
                            "on its training seed", group="data")
    h5_x: str = option("X", "HDF5: name of the features dataset (rows, features)",
                       group="data", metavar="NAME")
    h5_y: str = option("y", "HDF5: name of the labels dataset (rows,)", group="data",
                       metavar="NAME")
    label_column: str | None = option(None, "Parquet, or CSV with a header: the label "
                                      "column; none: the last column", group="data",
                                      metavar="NAME")
    feature_columns: str | None = option(None, "Parquet, or CSV with a header: comma-"
                                         "separated feature columns; none: every column but "
                                         "the label (and pandas index columns)",
                                         group="data", metavar="A,B,...")
    sparse: str = option("off", "libsvm rows held as CSR, never dense (linear, logistic, "
                         "softmax, mlp's first layer; sync mode; not standardised): on, "
                         "off, or auto: on when at most a tenth of the values are non-zero "
                         "and the model can",
                         choices=SPARSE, group="data")
    standardize: bool = option(True, "scale features to zero mean and unit variance "
                               "(global statistics over the training rows)", group="data")
    dtype: str = option("float32", "floating-point type of data and parameters",
                        choices=DTYPES, group="data")
    samples: int = option(10000, "synthetic data: number of rows", group="data")
    features: int = option(20, "synthetic data: number of features", group="data")
    classes: int = option(2, "synthetic data: number of classes", group="data")
    noise: float = option(1.0, "synthetic data: noise standard deviation", group="data")
    clusters_per_class: int = option(1, "synthetic data: Gaussian clusters per class (> 1: "
                                     "classes are not linearly separable)", group="data")
    # model
    model: str = option("mlp", f"model to train: {', '.join(MODELS)}; "
                        + "; ".join(f"{name}: {text}" for name, (_, text) in ESTIMATORS.items())
                        + "; or your own class "
                        "(a subclass of mpitrain.models.Model) as package.module:Class or "
                        "path/to/file.py:Class", group="model", metavar="NAME")
    model_options: str | None = option(None, "constructor options of --model as JSON or "
                                       "TOML, e.g. '{\"rank\": 8}' or '{rank = 8}'",
                                       group="model", metavar="OPTIONS")
    hidden: tuple[int, ...] = option((128,), "mlp hidden layer sizes, e.g. 128,64",
                                     group="model", metavar="N[,N...]")
    weight_decay: float = option(0.0, "L2 penalty added to the gradient", group="model")
    seed: int = option(0, "seed of every random stream (init, shuffling, data)", group="model")
    # optimisation
    optimizer: str = option("momentum", "update rule (momentum: heavy ball, --momentum 0.9; "
                            "reaches MLPClassifier's accuracy on digits with the defaults)",
                            choices=OPTIMIZERS)
    lr: float = option(0.1, "learning rate")
    lr_schedule: str = option("constant", "learning-rate schedule",
                              choices=SCHEDULES)
    lr_step_epochs: int = option(10, "step schedule: epochs between decays")
    lr_gamma: float = option(0.1, "step schedule: decay factor")
    momentum: float = option(0.9, "momentum factor (--optimizer momentum)")
    nesterov: bool = option(False, "Nesterov momentum (--optimizer momentum)")
    beta1: float = option(0.9, "Adam beta1")
    beta2: float = option(0.999, "Adam beta2")
    eps: float = option(1e-8, "Adam epsilon")
    epochs: int = option(10, "passes over the training data")
    batch_size: int = option(64, "GLOBAL batch size (rows per step over all ranks)")
    shuffle: str = option("global", "global: one seeded permutation of all rows (same model "
                          "for any number of ranks); local: each rank shuffles its block and "
                          "takes an equal share of each batch; none: file order",
                          choices=SHUFFLES)
    reduce: str = option("auto", "how messages are summed over the ranks: ring allreduce, "
                         "shm (every rank's message in shared memory, summed by all; one "
                         "node), hierarchical (reduce-scatter in each node, one ring per "
                         "slice across nodes, allgather in each node), MPI's Allreduce, "
                         "Reduce+Bcast through rank 0, shared-update (--mode sync on one "
                         "node: one copy of the parameters and optimizer state per node in "
                         "shared memory, each rank sums and updates 1/P of them), or auto: "
                         "chosen by message size, rank count and node layout as measured in "
                         "mpitrain/collectives/select.py",
                         choices=STEP_ALGORITHMS, group="parallel")
    # federated
    mode: str = option("sync", "; ".join(f"{name}: {text}"
                                         for name, (_, text) in STRATEGIES.items()),
                       choices=MODES, group="federated")
    clients: int = option(100, "number of simulated clients K (K >= number of ranks)",
                          group="federated")
    partition: str = option("iid", "how training rows are split into clients: iid, "
                            "dirichlet (label proportions ~ Dir(--alpha)), shards (sort by "
                            "label, 2K shards, two per client), labels (--labels-per-client "
                            "classes each), kmeans (one client per k-means cluster of the "
                            "features)", choices=PARTITIONS,
                            group="federated")
    alpha: float = option(0.5, "Dirichlet concentration for --partition dirichlet (small: "
                          "skewed)", group="federated")
    labels_per_client: int = option(2, "classes per client for --partition labels",
                                    group="federated")
    client_fraction: float = option(0.1, "fraction C of clients sampled each round: "
                                    "max(1, round(C*K)) clients", group="federated")
    local_epochs: int = option(5, "local epochs E each sampled client runs per round",
                               group="federated")
    local_batch: int = option(10, "local batch size B; 0: full batch (FedSGD with E=1)",
                              group="federated")
    local_lr: float = option(0.05, "learning rate of the clients' local SGD", group="federated")
    rounds: int = option(100, "federated rounds R", group="federated")
    eval_every: int = option(1, "evaluate the global model every N rounds (and at the end)",
                             group="federated")
    server_opt: str = option("fedavg", "server update rule applied to the averaged client "
                             "update (Reddi et al. 2021)",
                             choices=SERVER_OPTIMIZERS,
                             group="federated")
    server_lr: float = option(0.0, "server learning rate; 0: the rule's default (1 for "
                              "fedavg/fedavgm, 0.01 for fedadam/fedyogi, 0.1 for fedadagrad)",
                              group="federated")
    server_momentum: float = option(0.9, "server momentum (--server-opt fedavgm)",
                                    group="federated")
    server_beta1: float = option(0.9, "first-moment decay of fedadam/fedyogi/fedadagrad",
                                 group="federated")
    server_beta2: float = option(0.99, "second-moment decay of fedadam/fedyogi",
                                 group="federated")
    server_tau: float = option(1e-3, "adaptivity tau of fedadam/fedyogi/fedadagrad",
                               group="federated")
    prox_mu: float = option(0.0, "FedProx proximal weight mu (0: plain FedAvg local SGD)",
                            group="federated")
    aggregate: str = option("mean", "how client updates are combined: example-weighted mean "
                            "(one allreduce) or a robust rule over individual updates",
                            choices=AGGREGATES,
                            group="federated")
    trim_fraction: float = option(0.1, "fraction trimmed at each end by --aggregate "
                                  "trimmed-mean", group="federated")
    byzantine: int = option(0, "Byzantine clients f that --aggregate krum tolerates",
                            group="federated")
    secure_agg: bool = option(False, "secure aggregation: clipped, fixed-point, pairwise-"
                              "masked updates (needs --dp-clip and the [secure] extra)",
                              group="federated")
    dp_clip: float = option(0.0, "clip each client update to this L2 norm; 0: no clipping",
                            group="federated")
    dp_noise: float = option(0.0, "DP-FedAvg noise multiplier z: Gaussian noise of std "
                             "z*dp_clip on the sum of updates; 0: no DP", group="federated")
    dp_delta: float = option(1e-5, "delta at which epsilon is reported", group="federated")
    # asynchronous (docs/async.md)
    servers: int = option(1, "async-ps: ranks that hold the parameters and optimizer state "
                          "(sharded by contiguous ranges); the other ranks are workers",
                          group="asynchronous")
    staleness: int = option(1, "ssp: steps a rank may run ahead of the slowest (0: exactly "
                            "--mode sync)", group="asynchronous")
    sync_every: int = option(4, "local-sgd: local steps between parameter averages (1: "
                             "--mode sync for plain SGD)", group="asynchronous")
    local_after: int = option(0, "local-sgd: epochs of synchronous SGD before local steps "
                              "begin (post-local SGD)", group="asynchronous")
    straggler: str = option("", "slow ranks down for experiments: RANK:FACTOR[:JITTER],... "
                            "(each step sleeps (FACTOR-1) x its measured compute time, times "
                            "1 + JITTER x a seeded uniform number in [-1, 1])",
                            group="asynchronous", metavar="RANK:FACTOR[:JITTER]")
    simulate_schedule: bool = option(False, "async-ps: apply the workers' pushes in a seeded, "
                                     "fixed order (reproducible from --seed; for tests)",
                                     group="asynchronous")
    # performance
    compress: str = option("none", "transport of the step's gradient message: none (its own "
                           "precision), fp16 or bf16 (16-bit words, sums in float32, counts "
                           "exact; needs --dtype float32)", choices=COMPRESSIONS,
                           group="parallel")
    sparse_reduce: str = option("auto", "--sparse models: auto reduces only the rows of the "
                                "first weight matrix the step's batches touched when that "
                                "costs less than the whole gradient; dense always reduces "
                                "the whole gradient; the same result either way",
                                choices=("auto", "dense"), group="parallel")
    overlap: bool = option(False, "start each layer's gradient allreduce (nonblocking) while "
                           "the layers below are still being computed; same result",
                           group="parallel")
    shard: str = option("none", "sharded data parallelism (ZeRO): optimizer: each rank "
                        "keeps the optimizer state of its 1/P slice of the parameters "
                        "(gradients reduce-scattered, the slice updated, parameters "
                        "all-gathered; the same model); gradients: also keeps only its "
                        "slice of the reduced gradient", choices=SHARDS, group="parallel")
    tensor_parallel: int = option(1, "tensor parallelism for --model mlp (Megatron-style): "
                                  "T ranks share each hidden layer pair, the first "
                                  "weight matrix split by columns, the second by rows; "
                                  "P/T data-parallel replicas; the same model",
                                  group="parallel", metavar="T")
    shared_memory: bool = option(True, "when every rank is on one node, let reductions go "
                                 "through MPI shared-memory windows (--reduce shm, and the "
                                 "ring's transport); off, and always under "
                                 "--stall-timeout (whose watchdog watches MPI calls): MPI "
                                 "messages only", group="parallel")
    tune: str = option(default_tune(), "how --reduce auto picks the step's reduction (--mode sync, "
                       "without --overlap/--compress/--shard): auto: the choice measured on "
                       "this machine for this message size and communicator shape, from the "
                       "tuning cache ('mpitrain tune'; measured now and cached on a miss); "
                       "cache: the cached choice, else the built-in table; force: measure "
                       "now; off: the table (default: $MPITRAIN_TUNE, else auto)",
                       choices=TUNE_MODES, group="parallel")
    # trees and k-means (--model gbdt, --model kmeans)
    trees: int = option(100, "gbdt: boosting rounds (one tree per class and round); "
                        "forest: trees",
                        group="trees")
    max_depth: int = option(6, "gbdt, forest: levels of splits per tree (0: no limit, "
                            "with --max-leaves)", group="trees")
    max_leaves: int = option(0, "gbdt, forest: most leaves per tree, grown best-first "
                             "(leaf-wise, as LightGBM); 0: grow level-wise to --max-depth",
                             group="trees")
    l2: float = option(0.0, "gbdt: L2 regularisation of the leaf values", group="trees")
    min_child_weight: float = option(1e-3, "gbdt: least hessian sum in a leaf",
                                     group="trees")
    min_samples_leaf: int = option(20, "gbdt, forest: least rows in a leaf", group="trees")
    max_bins: int = option(255, "gbdt, forest: bins per feature (2..255), edges from quantiles "
                           "agreed over the ranks", group="trees")
    loss: str = option("auto", "gbdt loss: auto (logistic for two classes, softmax for "
                       "more), logistic, softmax, squared (regression); forest: squared "
                       "makes a regressor",
                       choices=("auto", "logistic", "softmax", "squared"), group="trees")
    early_stopping: int = option(0, "gbdt: stop when the test loss has not improved for "
                                 "N rounds and keep the best round's trees; 0: off",
                                 group="trees")
    max_features: str = option("auto", "forest: features each node may split on: auto "
                               "(sqrt for a classifier, all for a regressor), sqrt, log2, "
                               "all", choices=("auto", "sqrt", "log2", "all"), group="trees")
    clusters: int = option(8, "kmeans: number of clusters K", group="trees", metavar="K")
    n_init: int = option(1, "kmeans: initialisations (k-means||, each seeded by (--seed, "
                         "run)) iterated together; the run of lowest inertia is kept "
                         "(scikit-learn's n_init)", group="trees", metavar="N")
    oob_score: bool = option(False, "forest: score each training row by the trees whose "
                             "bootstrap left it out (accuracy, or R² for a regressor)",
                             group="trees")
    tol: float = option(1e-4, "kmeans: stop when the centers move less than this times "
                        "the mean feature variance (squared distance)", group="trees")
    max_iter: int = option(300, "kmeans: most Lloyd iterations", group="trees")
    # checkpoints and reliability
    checkpoint_every: int = option(0, "write a checkpoint every N steps (sync) or rounds "
                                   "(federated) or epochs (async-ps), and at the end; 0: "
                                   "only at the end",
                                   group="checkpoints")
    keep: int = option(3, "checkpoints to keep in OUT/checkpoints", group="checkpoints")
    resume: str | None = option(None, "continue from a checkpoint file or run directory; "
                                "alone: the latest checkpoint in --out (a fresh start when "
                                "there is none)", group="checkpoints", metavar="PATH",
                                const="latest")
    stall_timeout: float = option(0.0, "abort with a report of the missing ranks when a "
                                  "collective waits longer than this many seconds; 0: off",
                                  group="checkpoints")
    # outputs
    out: str | None = option(None, "output directory written by rank 0", group="output")
    overwrite: bool = option(False, "replace a finished run in --out", group="output")
    quiet: bool = option(False, "no per-epoch progress lines", group="output")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every option (tuples become lists) for JSON/TOML output."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# options that describe this invocation, not the training: not written to config.toml
RUN_ONLY = ("overwrite", "quiet", "resume")


def field_kind(name: str) -> str:
    """'bool', 'int', 'float', 'str', 'ints' or 'optional str' for a config field."""
    return {
        "bool": "bool", "int": "int", "float": "float", "str": "str",
        "tuple[int, ...]": "ints", "str | None": "optional str",
    }[str(FIELDS[name].type)]


def parse_ints(text: str, *, name: str) -> tuple[int, ...]:
    """Parse '128,64' into (128, 64)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--{flag(name)} expects comma-separated integers like 128,64 "
                        f"(got {text!r})") from None
    return values


def flag(name: str) -> str:
    """CLI spelling of a field name."""
    return name.replace("_", "-")


def coerce(name: str, value: Any, *, source: str) -> Any:
    """Check a TOML value's type against the field and convert it (int→float, list→tuple)."""
    if name not in FIELDS:
        raise UserError(f"{source}: unknown option {name!r}{did_you_mean(name, FIELDS)}")
    kind = field_kind(name)
    bad = UserError(f"{source}: option {name!r} expects {_kind_text(kind)} (got {value!r})")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        value = float(value)
    elif kind in ("str", "optional str"):
        if name == "model_options" and isinstance(value, dict):  # a TOML table
            value = json.dumps(value)
        if not isinstance(value, str):
            raise bad
    elif kind == "ints":
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        elif isinstance(value, str):
            value = parse_ints(value, name=name)
        elif isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            value = tuple(value)
        else:
            raise bad
    return value


def did_you_mean(name: str, known: Iterable[str], *, quote: bool = True) -> str:
    """`` (did you mean 'hidden'?)`` for the closest of ``known``, or '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    return f" (did you mean {close[0]!r}?)" if quote else f" (did you mean {close[0]}?)"


def _kind_text(kind: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number",
            "str": "a string", "optional str": "a string",
            "ints": "a list of integers like [128, 64]"}[kind]


def read_toml(path: str) -> dict[str, Any]:
    """Options from a TOML file (flat keys, or any tables flattened: [train] etc.)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--config: file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config: cannot read {path!r}: {exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config: {path!r} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in table.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for name, item in items:
            name = name.replace("-", "_")
            flat[name] = coerce(name, item, source=f"--config {path}")
    return flat


def resolve(file_options: Mapping[str, Any], flag_options: Mapping[str, Any]) -> TrainConfig:
    """Defaults, overridden by the config file, overridden by flags; then validated."""
    merged = {**file_options, **flag_options}
    config = TrainConfig(**merged)
    validate(config)
    return config


def check_names(options: Mapping[str, Any], *, source: str) -> None:
    """Raise UserError for the first key of ``options`` that is no option, with a hint."""
    for name in options:
        if name not in FIELDS:
            raise UserError(f"{source}: unknown keyword {name!r}{did_you_mean(name, FIELDS)}")


def coerce_keywords(options: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Python keywords as options: names checked (with a hint), values checked and converted
    like TOML values (numpy scalars and tuples accepted too; None where the option allows)."""
    check_names(options, source=source)
    out = {}
    for name, value in options.items():
        if value is None and field_kind(name) == "optional str":
            out[name] = None
            continue
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()  # numpy scalar
        if isinstance(value, tuple):
            value = list(value)
        out[name] = coerce(name, value, source=source)
    return out


def validate(config: TrainConfig) -> None:
    """Raise UserError naming the first option whose value is out of range."""
    if default_tune() not in TUNE_MODES:
        raise UserError(f"{TUNE_ENV} must be one of {', '.join(TUNE_MODES)} "
                        f"(got {default_tune()!r})")
    for name in FIELDS:
        choices = FIELDS[name].metadata.get("choices")
        value = getattr(config, name)
        if choices and value not in choices:
            raise UserError(f"--{flag(name)} must be one of {', '.join(choices)} "
                            f"(got {value!r})")
    if (config.model not in MODELS and config.model not in ESTIMATORS
            and not is_model_path(config.model)):
        raise UserError(f"--model must be one of {', '.join((*MODELS, *ESTIMATORS))} or "
                        f"your own class as package.module:Class (got {config.model!r})")
    checks = [
        (config.epochs >= 1, "epochs", ">= 1"),
        (config.batch_size >= 1, "batch_size", ">= 1"),
        (config.tensor_parallel >= 1, "tensor_parallel", ">= 1"),
        (_positive(config.lr), "lr", "a positive number"),
        (0.0 <= config.test_fraction < 1.0, "test_fraction", "in [0, 1)"),
        (config.weight_decay >= 0.0, "weight_decay", ">= 0"),
        (0.0 <= config.momentum < 1.0, "momentum", "in [0, 1)"),
        (0.0 <= config.beta1 < 1.0, "beta1", "in [0, 1)"),
        (0.0 <= config.beta2 < 1.0, "beta2", "in [0, 1)"),
        (_positive(config.eps), "eps", "a positive number"),
        (config.lr_step_epochs >= 1, "lr_step_epochs", ">= 1"),
        (config.checkpoint_every >= 0, "checkpoint_every", ">= 0"),
        (config.keep >= 1, "keep", ">= 1"),
        (config.stall_timeout >= 0.0, "stall_timeout", ">= 0 seconds"),
        (_positive(config.lr_gamma), "lr_gamma", "a positive number"),
        (config.samples >= 2, "samples", ">= 2"),
        (config.features >= 1, "features", ">= 1"),
        (config.classes >= 2, "classes", ">= 2"),
        (config.noise >= 0.0 and math.isfinite(config.noise), "noise", ">= 0"),
        (config.clusters_per_class >= 1, "clusters_per_class", ">= 1"),
        (config.trees >= 1, "trees", ">= 1"),
        (config.max_depth >= 1 or (config.max_depth == 0 and config.max_leaves > 0),
         "max_depth", ">= 1 (0: no limit, with --max-leaves)"),
        (config.max_leaves == 0 or config.max_leaves >= 2, "max_leaves",
         ">= 2 (0: level-wise growth)"),
        (config.l2 >= 0.0 and math.isfinite(config.l2), "l2", ">= 0"),
        (config.min_child_weight >= 0.0 and math.isfinite(config.min_child_weight),
         "min_child_weight", ">= 0"),
        (config.min_samples_leaf >= 1, "min_samples_leaf", ">= 1"),
        (2 <= config.max_bins <= 255, "max_bins", "in 2..255"),
        (config.early_stopping >= 0, "early_stopping", ">= 0 (0: off)"),
        (config.clusters >= 1, "clusters", ">= 1"),
        (config.n_init >= 1, "n_init", ">= 1"),
        (config.tol >= 0.0 and math.isfinite(config.tol), "tol", ">= 0"),
        (config.max_iter >= 1, "max_iter", ">= 1"),
        (bool(config.h5_x), "h5_x", "a dataset name"),
        (bool(config.h5_y), "h5_y", "a dataset name"),
        (config.label_column != "", "label_column", "a column name"),
        (config.feature_columns is None or all(feature_columns(config)), "feature_columns",
         "comma-separated column names like a,b,c"),
        (len(config.hidden) >= 1 or config.model != "mlp", "hidden",
         "at least one layer size for --model mlp"),
        (all(h >= 1 for h in config.hidden), "hidden", "positive layer sizes"),
        (config.servers >= 1, "servers", ">= 1"),
        (config.staleness >= 0, "staleness", ">= 0"),
        (config.sync_every >= 1, "sync_every", ">= 1"),
        (config.local_after >= 0, "local_after", ">= 0"),
    ]
    for ok, name, expected in checks:
        if not ok:
            value = getattr(config, name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise UserError(f"--{flag(name)} must be {expected} (got {shown})")
    hashing = check_hashing(config.hash_bits, config.hash_seed)
    if hashing:
        raise UserError(hashing)
    if config.hash_bits and config.model in ESTIMATORS:
        raise UserError(f"--hash-bits trains the gradient models (e.g. logistic), not "
                        f"--model {config.model}")
    if config.clusters != FIELDS["clusters"].default and config.model != "kmeans":
        raise UserError(f"--clusters {config.clusters} is the number of k-means clusters "
                        f"(--model kmeans, got --model {config.model}); Gaussian clusters "
                        "per class of the synthetic data are --clusters-per-class")
    _validate_performance(config)
    parse_stragglers(config.straggler)
    # federated
    federated = [
        (config.clients >= 1, "clients", ">= 1"),
        (0.0 < config.client_fraction <= 1.0, "client_fraction", "in (0, 1]"),
        (_positive(config.alpha), "alpha", "a positive number"),
        (config.labels_per_client >= 1, "labels_per_client", ">= 1"),
        (config.local_epochs >= 1, "local_epochs", ">= 1"),
        (config.local_batch >= 0, "local_batch", ">= 0 (0: full batch)"),
        (_positive(config.local_lr), "local_lr", "a positive number"),
        (config.rounds >= 1, "rounds", ">= 1"),
        (config.eval_every >= 1, "eval_every", ">= 1"),
        (config.server_lr >= 0.0 and math.isfinite(config.server_lr), "server_lr",
         ">= 0 (0: the rule's default)"),
        (0.0 <= config.server_momentum < 1.0, "server_momentum", "in [0, 1)"),
        (0.0 <= config.server_beta1 < 1.0, "server_beta1", "in [0, 1)"),
        (0.0 <= config.server_beta2 < 1.0, "server_beta2", "in [0, 1)"),
        (_positive(config.server_tau), "server_tau", "a positive number"),
        (config.prox_mu >= 0.0 and math.isfinite(config.prox_mu), "prox_mu", ">= 0"),
        (0.0 <= config.trim_fraction < 0.5, "trim_fraction", "in [0, 0.5)"),
        (config.byzantine >= 0, "byzantine", ">= 0"),
        (config.dp_clip >= 0.0 and math.isfinite(config.dp_clip), "dp_clip", ">= 0"),
        (config.dp_noise >= 0.0 and math.isfinite(config.dp_noise), "dp_noise", ">= 0"),
        (0.0 < config.dp_delta < 1.0, "dp_delta", "in (0, 1)"),
    ]
    for ok, name, expected in federated:
        if not ok:
            raise UserError(f"--{flag(name)} must be {expected} (got {getattr(config, name)})")
    strategy_for(config.model, config.mode).validate(config)


def _validate_performance(config: TrainConfig) -> None:
    """--compress / --overlap: only modes that honour them, float32 for 16-bit transport,
    not both."""
    for name in MODE_ONLY:
        value = getattr(config, name)
        if value != FIELDS[name].default and name not in strategy_class(config.mode).options:
            shown = f"--{flag(name)}" + ("" if isinstance(value, bool) else f" {value}")
            modes = ", ".join(mode for mode in MODES if name in strategy_class(mode).options)
            raise UserError(f"{shown} applies to --mode {modes} (got --mode {config.mode})")
    problems = [
        (config.compress != "none" and config.dtype != "float32",
         f"--compress {config.compress} needs --dtype float32 (got {config.dtype})"),
        (config.compress != "none" and config.overlap,
         f"--compress {config.compress} sends the whole message at once, so it cannot be "
         "combined with --overlap; drop one of them"),
        (config.compress != "none" and config.reduce != "auto",
         f"--compress {config.compress} is its own transport (16-bit words over MPI), so it "
         f"takes --reduce auto (got --reduce {config.reduce})"),
        (config.overlap and config.reduce not in NONBLOCKING_ALGORITHMS,
         f"--overlap starts nonblocking reductions, which --reduce {config.reduce} does not "
         f"have; use --reduce {' or '.join(NONBLOCKING_ALGORITHMS)}"),
        (config.reduce == "shared-update" and (config.mode != "sync"
                                               or config.model in ESTIMATORS),
         f"--reduce shared-update is a step of --mode sync with a gradient model (got "
         f"--mode {config.mode} --model {config.model}); use another --reduce"),
        (config.reduce == "shm" and not shared_memory_allowed(config),
         "--reduce shm sums in shared memory, which --no-shared-memory and --stall-timeout "
         "rule out (the watchdog watches MPI calls); use another --reduce"),
    ]
    for bad, message in problems:
        if bad:
            raise UserError(message)


def feature_columns(config: TrainConfig) -> tuple[str, ...]:
    """``--feature-columns a,b,c`` as ``("a", "b", "c")``; () for the default."""
    if config.feature_columns is None:
        return ()
    return tuple(name.strip() for name in config.feature_columns.split(","))


def shared_memory_allowed(config: TrainConfig) -> bool:
    """May the reductions of this run wait in shared memory instead of inside MPI calls?
    (--shared-memory, but never under --stall-timeout: its watchdog watches MPI calls.)"""
    return config.shared_memory and config.stall_timeout <= 0


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0.0


def to_toml(config: TrainConfig) -> str:
    """The resolved config as TOML that ``--config`` reads back."""
    lines = ["# mpitrain resolved configuration", ""]
    for name, value in config.to_dict().items():
        if name in RUN_ONLY or value is None:
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
