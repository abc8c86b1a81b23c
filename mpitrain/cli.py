"""Command line: ``python -m mpitrain train|bench|plan ...`` under mpirun/mpiexec/srun.

Flags are generated from :class:`mpitrain.config.TrainConfig`; ``--config FILE.toml`` takes
the same options and flags override it. Errors in the input end the job with one message from
rank 0 and exit status 2; an unexpected exception on any rank aborts the whole job (MPI
Abort) with that rank named, so no rank is left waiting.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

from mpi4py import MPI

from mpitrain.runtime.direct_output import bypass_launcher_output
from mpitrain.runtime.launch import MPIWiringError
from mpitrain.runtime.preemption import EXIT_INTERRUPTED, install_stop_handlers, stop_status
from mpitrain.runtime.watchdog import DRAIN_SECONDS, wait_until_read

from . import __version__
from .config import (
    FIELDS,
    TrainConfig,
    did_you_mean,
    field_kind,
    flag,
    parse_ints,
    read_toml,
    resolve,
)
from .errors import EXIT_USER_ERROR, UserError, checked

# Every command, in the order --help lists them: the module that implements it (with
# add_arguments(parser) and run(args, comm); None: built here) and its help text.
COMMANDS: dict[str, tuple[str | None, str]] = {
    "train": (None, "train a model"),
    "predict": ("mpitrain.report.predict", "predictions of a saved model for a data file"),
    "show": ("mpitrain.report.show", "one-screen summary of a run directory"),
    "plot": ("mpitrain.report.plot", "learning curves of one or more runs, as an image"),
    "tensorboard": ("mpitrain.report.tensorboard", "metrics of runs as TensorBoard event files"),
    "checkpoint": (None, "work with checkpoints (consolidate a sharded one)"),
    "tune": ("mpitrain.bench.tune", "measure which reduction --reduce auto runs on this "
             "machine, per message size (cached; docs/tuning.md)"),
    "plan": ("mpitrain.bench.plan", "predict step time and scaling on N nodes from a cost "
             "model (docs/multinode.md)"),
    "bench": (None, "benchmarks"),
}

BENCHMARKS = {
    "allreduce": ("mpitrain.bench.allreduce", "latency and bandwidth of every allreduce"),
    "train": ("mpitrain.bench.train", "training throughput, compute/communication split, "
              "weak scaling, kernel, start-up and memory checks"),
    "async": ("mpitrain.bench.asynchronous", "time to accuracy of sync and the asynchronous "
              "modes, with and without a straggler"),
    "trees": ("mpitrain.bench.trees", "fit time of gbdt/forest/kmeans on P ranks vs one rank "
              "and scikit-learn/LightGBM"),
    "data": ("mpitrain.bench.data", "libsvm read time and peak memory per rank"),
    "matrix": ("mpitrain.bench.matrix", "the issue-13 workload matrix: default vs every "
               "explicit --reduce/--overlap/--compress, the machine's ceiling, the BLAS limit"),
}


class Parser(argparse.ArgumentParser):
    """ArgumentParser that raises UserError instead of exiting, and prints on rank 0 only."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse, plus a hint for a misspelt flag (``--epoch`` → ``--epochs``) and the
        usage when no command is given."""
        known, extra = self.parse_known_args(args, namespace)
        if extra:
            flags = getattr(known, "known_flags", self._option_string_actions)
            first = next((word.split("=")[0] for word in extra if word.startswith("--")), "")
            self.error(f"unrecognized arguments: {' '.join(extra)}"
                       f"{did_you_mean(first, flags, quote=False) if first else ''}")
        if getattr(known, "command", "") is None:
            self.print_usage(sys.stderr)
            self.error("no command given: choose one of "
                       f"{', '.join(COMMANDS)} (python -m mpitrain COMMAND --help)")
        return known

    def _print_message(self, message: str, file: Any = None) -> None:
        if MPI.COMM_WORLD.Get_rank() == 0 and message:
            (file or sys.stdout).write(message)


def build_parser() -> Parser:
    """The whole CLI: train and bench subcommands."""
    parser = Parser(prog="mpitrain", allow_abbrev=False,
                    description="Data-parallel and federated training over MPI. Run under "
                    "mpirun/mpiexec/srun, e.g. 'mpirun -n 4 python -m mpitrain train "
                    "--data digits --model mlp --hidden 64 --epochs 20 --out runs/digits'.")
    parser.add_argument("--version", action="version", version=f"mpitrain {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train = commands.add_parser("train", help=COMMANDS["train"][1], allow_abbrev=False,
                                description="Train a model with every rank; flags override "
                                "--config. Rank 0 writes --out.")
    add_train_arguments(train)
    train.set_defaults(handler=run_train)
    for name, (module, text) in COMMANDS.items():
        if module is None:
            continue
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(handler=_runner(module))
    add_checkpoint_commands(commands)
    bench = commands.add_parser("bench", help=COMMANDS["bench"][1], allow_abbrev=False)
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True,
                                 parser_class=Parser)
    for name, (module, text) in BENCHMARKS.items():
        sub = kinds.add_parser(name, help=text, description=text, allow_abbrev=False)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(handler=_runner(module))
    for sub in (train, *commands.choices.values(), *kinds.choices.values()):
        sub.set_defaults(known_flags=tuple(sub._option_string_actions))
    return parser


def add_checkpoint_commands(commands: argparse._SubParsersAction) -> None:
    """``checkpoint consolidate RUN [--output FILE]``."""
    checkpoint = commands.add_parser("checkpoint", help=COMMANDS["checkpoint"][1],
                                     allow_abbrev=False)
    actions = checkpoint.add_subparsers(dest="action", metavar="ACTION", required=True,
                                        parser_class=Parser)
    consolidate = actions.add_parser(
        "consolidate", allow_abbrev=False,
        help="write a sharded checkpoint (--shard) as one ordinary checkpoint file",
        description="Read the newest good checkpoint of RUN (a run directory, its "
        "checkpoints/ directory or a ckpt-*.npz manifest), verify every shard, and write "
        "the whole state as one ordinary checkpoint file, which --resume and np.load read.")
    consolidate.add_argument("run", metavar="RUN")
    consolidate.add_argument("--output", metavar="FILE", default=None,
                             help="file to write (default: RUN/consolidated-ckpt-N.npz)")
    consolidate.set_defaults(handler=run_consolidate)


def run_consolidate(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """``mpitrain checkpoint consolidate``: rank 0 does the work, every rank agrees."""
    from .checkpoint.policy import consolidate_run

    def work() -> None:
        if comm.Get_rank() == 0:
            source, written = consolidate_run(args.run, args.output)
            print(f"mpitrain: consolidated {source} into {written}", flush=True)

    checked(comm, work)
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, plus --config; unspecified flags stay None."""
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read options from a TOML file (keys as the flags, with _ or -)")
    add_config_arguments(parser, FIELDS)


def add_config_arguments(parser: argparse.ArgumentParser, names: Iterable[str], *,
                         defaults: Mapping[str, Any] | None = None) -> None:
    """A flag for each named TrainConfig field, in one argument group per field group, so
    every command spells, parses and restricts an option exactly as the config declares it.

    Without ``defaults`` a flag not given stays None (a lower layer such as --config shows
    through) and --help shows the field's default. With ``defaults`` (a command's own
    defaults for some of the fields, e.g. a benchmark's workload) a flag not given holds
    the command's default: that mapping's value, else the field's.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in names:
        field = FIELDS[name]
        title = field.metadata["group"]
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        default = field.default if defaults is None else defaults.get(name, field.default)
        _add_config_flag(groups[title], name, shown=default,
                         value=None if defaults is None else default)


def _add_config_flag(group: argparse._ArgumentGroup, name: str, *, shown: Any,
                     value: Any) -> None:
    """The flag of field ``name``: its type, choices and help; ``value`` when not given,
    ``shown`` as the default in the help."""
    meta = FIELDS[name].metadata
    kind = field_kind(name)
    if kind == "bool":
        group.add_argument(f"--{flag(name)}", dest=name, default=value,
                           action=argparse.BooleanOptionalAction,
                           help=f"{meta['help']} (default: {str(shown).lower()})")
        return
    converter = {"int": int, "float": float, "str": str, "optional str": str,
                 "ints": lambda text: parse_ints(text, name=name)}[kind]
    optional = {"nargs": "?", "const": meta["const"]} if meta["const"] else {}
    text = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
    group.add_argument(f"--{flag(name)}", dest=name, default=value, type=converter,
                       choices=meta["choices"], **optional,
                       metavar=meta["metavar"] or (None if meta["choices"] else name.upper()),
                       help=f"{meta['help']} (default: {text})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve defaults < --config file < flags."""
    file_options = read_toml(args.config) if args.config else {}
    flags = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    return resolve(file_options, flags)


def run_train(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """``mpitrain train``."""
    from .training import train

    config = checked(comm, config_from_args, args)
    stop = install_stop_handlers()
    result = train(config, comm=comm, stop_requested=stop)
    if result.status != "stopped":
        return 0
    # Rank 0 has written the checkpoint and summary.json once every rank is here: nobody
    # exits before, which 'srun --kill-on-bad-exit' would answer by killing the others.
    status, signals = stop_status(stop, comm)
    if comm.Get_rank() == 0:
        saved = (f"wrote a checkpoint to {config.out}/checkpoints; continue with --resume"
                 if config.out else "no --out, so nothing was saved")
        print(f"mpitrain: stopped on {signals}: {saved} (exit status {status})",
              file=sys.stderr, flush=True)
    return status


def _runner(module: str):
    def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
        return importlib.import_module(module).run(args, comm)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mpitrain`` and the ``mpitrain`` script."""
    comm = MPI.COMM_WORLD
    if argv is None and comm.Get_rank() == 0:  # the process's own command line
        bypass_launcher_output()  # `mpiexec ... | head` must not kill the job
    try:
        args = checked(comm, build_parser().parse_args, argv)
        return int(args.handler(args, comm) or 0)
    except MPIWiringError as exc:  # every process is its own world: print from task 0
        if exc.task in (None, 0):
            print(f"mpitrain: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except UserError as exc:
        if exc.agreed:
            if comm.Get_rank() == 0:
                print(f"mpitrain: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        _abort(comm, f"error: {exc}", EXIT_USER_ERROR)
    except KeyboardInterrupt:  # Ctrl-C outside training (whose handler stops cleanly)
        if comm.Get_rank() == 0:
            print("mpitrain: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BaseException:
        _abort(comm, "unexpected error:\n" + traceback.format_exc(), 1)
    return 1  # not reached: _abort does not return


def _abort(comm: MPI.Comm, text: str, code: int) -> NoReturn:
    """Print with the rank named and take the whole job down."""
    print(f"mpitrain: rank {comm.Get_rank()} of {comm.Get_size()}: {text}",
          file=sys.stderr, flush=True)
    wait_until_read(sys.stderr, DRAIN_SECONDS)  # else the abort can overtake the message
    comm.Abort(code)
    raise SystemExit(code)  # Abort does not return; keeps type checkers honest
