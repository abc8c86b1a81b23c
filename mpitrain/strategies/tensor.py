"""Tensor parallelism for the MLP (``--tensor-parallel T``): the sync strategy's steps on a
2-D grid of ranks, ``T`` ranks per tensor-parallel group and ``P / T`` data-parallel
replicas.

Ranks ``g*T .. g*T + T - 1`` form tensor group ``g`` (neighbours, so a group shares a
node when it can); rank ``t`` of every group forms data-parallel communicator ``t``. Each
rank holds its blocks of the network (:class:`~.tensor_split.TensorSplit`: each hidden
layer pair split Megatron-style, the first matrix by columns and the second by rows) in
one flat buffer of its own, with the optimizer state for that buffer only.

Per step (the collectives between the kernels of :mod:`mpitrain.kernels.tensor` live
here):

1. every rank packs its rows of the global batch and its stop vote into one message; the
   group all-gathers the messages in one exchange, so the ``T`` ranks of a group work on
   the same rows;
2. forward: a column-split layer's block of the hidden activation stays local; a row-split
   layer's partial output is summed over the group (one group sum per pair), then its
   bias and activation are added; the head gives loss, correct count and output deltas;
3. backward: each rank's gradient blocks; a column-split layer above the first sums its
   partial input delta over the group (one group sum per pair; the first pair's input
   is the data, whose delta nobody needs);
4. the local gradient and the tail (loss, correct, rows, stop vote) are reduced over the
   data-parallel communicator (the persistent allreduce of the sync strategy; nothing to
   send with one replica), and each rank applies the update to its blocks.

When the group shares a node (and shared memory is allowed) the exchange and the group
sums go through one slot-sum window (:mod:`mpitrain.collectives.slot_sum`: a barrier on
shared counters, ~4 us, where MPI's small collectives take 15-50 us and, on a busy
machine, a wait for the partner rank at each of them); sums larger than ``auto``'s
slot-sum limit, and groups across nodes, use MPI (``Allgather`` of fixed-size messages,
``Allreduce``).

Exact: the same sums as ``--tensor-parallel 1`` up to float rounding order (the group sum
of partial products, the row grouping), 1e-9 in float64. The full model (``params``) is
assembled from the blocks (an ``Allgatherv`` in the group) for evaluation, checkpoints and
the final ``model.npz``; checkpoints are sharded in the full model's layout (each rank
writes its 1/P slice), so ``--resume`` re-shards onto any rank count or ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import Allreducer, allgather
from mpitrain.collectives.args import MPI_TYPES
from mpitrain.collectives.context import state_of
from mpitrain.collectives.select import shm_threshold
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.errors import UserError, agree
from mpitrain.kernels.tensor import (
    tp_backprop,
    tp_bias_act,
    tp_head,
    tp_input_delta,
    tp_layer_grad,
    tp_linear,
    tp_matmul,
    tp_pack,
    tp_relu_backward,
    tp_unpack,
)
from mpitrain.models import BoundModel, Layout
from mpitrain.models.dense import MLP, MODELS

from .base import StopRequested, Unit
from .shards import Slice
from .sync import TAIL, SyncStrategy
from .tensor_split import COLUMNS, ROWS, TensorSplit

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig
    from mpitrain.data import Dataset


def validate_tensor_parallel(config: TrainConfig) -> None:
    """Options ``--tensor-parallel T > 1`` cannot run with (no MPI)."""
    shown = f"--tensor-parallel {config.tensor_parallel}"
    if config.model in MODELS and config.model != "mlp":  # (model objects: at build)
        raise UserError(f"{shown} splits the hidden layers of --model mlp, but --model "
                        f"{config.model} has no hidden layer to split; use --model mlp or "
                        "--tensor-parallel 1")
    for name, value in (("overlap", config.overlap), ("compress", config.compress),
                        ("shard", config.shard)):
        if value not in (False, "none"):
            other = f"--{name}" + ("" if value is True else f" {value}")
            raise UserError(f"{shown} cannot be combined with {other}; drop one of them")


@dataclass(kw_only=True)
class TensorParallelStrategy(SyncStrategy):
    """:class:`SyncStrategy` with each hidden layer pair split over a tensor group."""

    split: TensorSplit
    tensor_comm: MPI.Comm  # the T ranks sharing this rank's layers
    replica_comm: MPI.Comm  # this tensor rank of every replica (the data-parallel reduction)
    local: np.ndarray  # this rank's blocks, flat (its own layout)
    loss_kind: int = 2
    _tensor_rank: int = field(init=False)
    _kinds: tuple[str, ...] = field(init=False)
    _local_layout: Layout = field(init=False)
    _weights: list[np.ndarray] = field(init=False)
    _biases: list[np.ndarray] = field(init=False)
    _acts: list[np.ndarray] = field(init=False)
    _labels: np.ndarray = field(init=False)
    _scratch: np.ndarray = field(init=False)
    _outbox: np.ndarray = field(init=False)  # this rank's message of the row gather (MPI)
    _inbox: np.ndarray = field(init=False)  # the group's messages, (T, 1, length) (MPI)
    _slots: SharedMemoryAllreduce | None = field(init=False, default=None)
    _slot_messages: np.ndarray | None = field(init=False, default=None)
    _slot_limit: int = field(init=False, default=0)  # largest group sum through the slots
    _grads: dict[int, list[np.ndarray]] = field(init=False)
    _views: dict[int, tuple[Any, ...]] = field(init=False)
    _mpi_type: Any = field(init=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def build(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
              dataset: Dataset, comm: MPI.Comm) -> TensorParallelStrategy:
        ranks, tensor = comm.Get_size(), config.tensor_parallel
        agree(comm, None if ranks % tensor == 0 else
              f"--tensor-parallel {tensor} must divide the number of ranks ({ranks}): "
              f"the ranks form groups of {tensor}; use {_divisors(ranks)}")
        agree(comm, None if type(model.model) is MLP else
              f"--tensor-parallel {tensor} splits the hidden layers of the built-in mlp; "
              f"{model.name} has none to split")
        split = TensorSplit(tuple(model.model.dims(**model.counts)), tensor)
        agree(comm, None if split.smallest_hidden() >= tensor else
              f"--tensor-parallel {tensor} gives every rank of a group a block of each split "
              f"hidden layer, but --hidden has a layer of {split.smallest_hidden()} units; "
              f"use hidden layers of at least {tensor} units")
        rank = comm.Get_rank()
        tensor_comm = comm.Split(rank // tensor, rank)
        replica_comm = comm.Split(rank % tensor, rank)
        layout = split.layout(tensor_comm.Get_rank())
        local = np.zeros(layout.size, dtype=params.dtype)
        split.take(tensor_comm.Get_rank(), model.layout.views(params), layout.views(local))
        return cls(**cls.fields(config, model=model, params=params, dataset=dataset,
                                comm=comm, owned=local),
                   split=split, tensor_comm=tensor_comm, replica_comm=replica_comm,
                   local=local, loss_kind=int(model.spec[0]))

    def __post_init__(self) -> None:
        split, t = self.split, self.tensor_comm.Get_rank()
        self._tensor_rank = t
        self._kinds = split.kinds
        self._local_layout = layout = split.layout(t)
        self._n = layout.size
        self._owned = self.local
        views = layout.views(self.local)
        layers = len(split.kinds)
        self._weights = [views[f"W{layer}"] for layer in range(layers)]
        self._biases = [views[f"b{layer}"] for layer in range(layers)]
        dtype = self.params.dtype
        d = split.dims[0]
        rows = max(1, min(self.batch_size, self.gradient.max_rows * split.ranks))
        mine = max(1, self.gradient.max_rows)
        # activations: the input block, then each layer's (local) output
        widths = [d] + [w.shape[1] for w in self._weights]
        self._acts = [np.zeros((rows, width), dtype=dtype) for width in widths]
        self._labels = np.zeros(rows, dtype=dtype)
        self._scratch = np.zeros(rows * max(w.shape[0] for w in self._weights), dtype=dtype)
        length = 2 + mine * (d + 1)  # a rank's message of the row gather (tp_pack)
        self._outbox = np.zeros(length, dtype=dtype)
        self._inbox = np.zeros((split.ranks, 1, length), dtype=dtype)
        self._build_slots(length, rows)
        self._grads = {}
        self._views = {}
        self._mpi_type = MPI_TYPES[np.dtype(dtype)]
        self._reducer = Allreducer(self._n + TAIL, dtype, self.replica_comm,
                                   algorithm=self.reduce_algorithm,
                                   shared_memory=self.shared_memory, compress="none",
                                   exact_tail=TAIL, batch_size=self.batch_size,
                                   tune=self.tune)
        self._result = self._reducer.buffer()

    def _build_slots(self, length: int, rows: int) -> None:
        """Collective in the group: when its ranks share a node (and shared memory is
        allowed), the slot sum's window (:mod:`mpitrain.collectives.slot_sum`) for the
        row gather (its allgather) and the group sums up to ``auto``'s slot-sum limit:
        a barrier through shared counters instead of MPI calls, ~4 us against ~15-50."""
        tcomm, itemsize = self.tensor_comm, self.params.itemsize
        if not self.shared_memory or not state_of(tcomm).one_node():
            return
        widths = [w.shape[1] if kind == ROWS else w.shape[0]  # what each layer sums
                  for layer, (w, kind) in enumerate(zip(self._weights, self._kinds,
                                                        strict=True))
                  if kind == ROWS or (kind == COLUMNS and layer > 0)]
        sums = [rows * w for w in widths if rows * w * itemsize <= shm_threshold(tcomm.size)]
        slots = SharedMemoryAllreduce(tcomm, n=max([length, *sums]), dtype=self.params.dtype)
        if not slots.contiguous:  # (the same on every rank) the gather needs one span
            slots.close()
            return
        self._slots, self._slot_limit = slots, max(sums, default=0)

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        message = self._reducer.buffer()
        n, vote = self._gather_batch(self._rows(unit), stop_requested())
        size = self._n
        message[size + 3] = vote
        if n == 0:  # (the same on every rank of the group)
            message[:size + 3] = 0
            return
        loss, correct = self._forward_backward(n, message)
        message[size] = loss
        message[size + 1] = correct
        message[size + 2] = n

    def _gather_batch(self, rows: np.ndarray, vote: bool) -> tuple[int, float]:
        """Collective in the group: its rows into the input block, the group's vote."""
        train, slots = self.train, self._slots
        # one message per rank: (rows, vote, the rows), gathered in one exchange
        outbox = self._outbox if slots is None else slots.next_slot()
        tp_pack(train.X, train.y, rows, 1.0 if vote else 0.0, outbox)
        if slots is None:
            mpi_type = self._mpi_type
            self.tensor_comm.Allgather([self._outbox, mpi_type], [self._inbox, mpi_type])
            messages, b = self._inbox, 0
        else:
            span, b = slots.exchange()
            messages = self._slot_messages
            if messages is None:  # (the same span every call)
                messages = self._slot_messages = span.view(self.params.dtype).reshape(
                    slots.size, 2, -1)
        n, voted = tp_unpack(messages, b, self._acts[0], self._labels)
        return n, voted

    def _batch(self, n: int) -> tuple[np.ndarray, ...]:
        """Views of the blocks for a batch of ``n`` rows (made once per ``n``): the
        labels, each layer's output, each layer's input delta, and the flat views of
        each layer's group sum (its output or its input delta)."""
        views = self._views.get(n)
        if views is None:
            deltas = tuple(self._scratch[:n * w.shape[0]].reshape(n, w.shape[0])
                           for w in self._weights)
            acts = tuple(a[:n] for a in self._acts)
            flat = tuple((acts[layer + 1] if kind == ROWS else deltas[layer]).reshape(-1)
                         for layer, kind in enumerate(self._kinds))
            views = self._views[n] = (self._labels[:n], acts, deltas, flat)
        return views

    def _group_sum(self, flat: np.ndarray) -> None:
        """Collective in the group: ``flat`` <- its sum over the group (the slot sum when
        the group has one, up to its limit; else MPI)."""
        if self._slots is not None and flat.size <= self._slot_limit:
            self._slots(flat)
        else:
            self.tensor_comm.Allreduce(MPI.IN_PLACE, [flat, self._mpi_type], op=MPI.SUM)

    def _gradient_views(self, message: np.ndarray) -> list[np.ndarray]:
        """Views W0, b0, W1, ... of the local gradient in ``message`` (made once per
        buffer: the reducer may hand out a few)."""
        key = id(message)
        views = self._grads.get(key)
        if views is None:
            views = self._grads[key] = list(self._local_layout.views(message).values())
        return views

    def _forward_backward(self, n: int, message: np.ndarray) -> tuple[float, float]:
        """This rank's gradient blocks of the group's ``n`` rows into ``message``."""
        labels, acts, deltas, sums = self._batch(n)
        weights, biases, kinds = self._weights, self._biases, self._kinds
        last = len(kinds) - 1
        group_sum = self._group_sum
        for layer, kind in enumerate(kinds):
            A, Z = acts[layer], acts[layer + 1]
            if kind == ROWS:
                tp_matmul(A, weights[layer], Z)
                group_sum(sums[layer])
                tp_bias_act(Z, biases[layer], layer < last)
            else:
                tp_linear(A, weights[layer], biases[layer], Z, layer < last)
        loss, correct = tp_head(acts[-1], labels, self.loss_kind, True)
        grads = self._gradient_views(message)
        for layer in range(last, -1, -1):
            A, D = acts[layer], acts[layer + 1]
            tp_layer_grad(A, D, grads[2 * layer], grads[2 * layer + 1])
            if layer == 0:
                break
            delta = deltas[layer]
            if kinds[layer] == COLUMNS:  # partial input deltas: summed over the group
                tp_input_delta(D, weights[layer], delta)
                group_sum(sums[layer])
                tp_relu_backward(delta, A)
            else:
                tp_backprop(D, weights[layer], delta, A)
        return float(loss), float(correct)

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        self.assemble()
        return super().evaluate(unit)

    def close(self) -> None:
        """Collective: the full model into ``params`` (the final model.npz), then release
        the communicators."""
        self.assemble()
        super().close()
        if self._slots is not None:
            self._slots.close()
            self._slots = self._slot_messages = None
        self.tensor_comm.Free()
        self.replica_comm.Free()

    # -- the full model ----------------------------------------------------------------------
    def assemble(self) -> None:
        """Collective in the group: ``params`` <- every group rank's blocks."""
        self._assemble(self.local, self.params)

    def _assemble(self, local: np.ndarray, full: np.ndarray) -> None:
        """``full`` (the model's layout) <- the blocks of ``local`` of every group rank."""
        split, tcomm = self.split, self.tensor_comm
        sizes = np.array([split.layout(t).size for t in range(split.ranks)], dtype=np.int64)
        displs = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        gathered = np.empty(int(sizes.sum()), dtype=local.dtype)
        tcomm.Allgatherv([local, self._mpi_type], [gathered, sizes, displs, self._mpi_type])
        views = self.layout.views(full)
        for t in range(split.ranks):
            piece = gathered[displs[t]:displs[t] + sizes[t]]
            split.put(t, split.layout(t).views(piece), views)

    # -- checkpoints and outputs -------------------------------------------------------------
    @property
    def checkpoint_slice(self) -> tuple[int, int]:
        """This rank's 1/P slice of the full model's layout (any rank count resumes it)."""
        part = Slice(self.layout.size, self.comm.Get_size(), self.comm.Get_rank())
        return part.start, part.stop

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Collective (every rank calls it at the same point): the full-layout slice of the
        parameters and of the optimizer state, assembled from the group's blocks."""
        start, stop = self.checkpoint_slice
        full = np.empty(self.layout.size, dtype=self.params.dtype)
        arrays = {}
        for name, local in (("params", self.local),
                            *((f"optimizer.{k}", v) for k, v in self.optimizer.state.items())):
            self._assemble(local, full)
            arrays[name] = full[start:stop].copy()
        return arrays, {"optimizer_steps": self.optimizer.steps, "epoch_sums": self._sums}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Collective: every rank's slice gathered into the full layout, then this rank's
        blocks taken from it."""
        start, stop = self.checkpoint_slice
        t = self._tensor_rank
        full = np.empty(self.layout.size, dtype=self.params.dtype)
        for name, local in (("params", self.local),
                            *((f"optimizer.{k}", v) for k, v in self.optimizer.state.items())):
            full[start:stop] = arrays[name]
            allgather(full, self.comm, algorithm="mpi")
            self.split.take(t, self.layout.views(full), self._local_layout.views(local))
            if name == "params":
                self.params[...] = full
        self.optimizer.steps = int(meta["optimizer_steps"])
        self._sums = [float(v) for v in meta["epoch_sums"]]

    def summary(self) -> dict[str, Any]:
        """Collective: the sync memory section plus the parameter bytes a rank holds."""
        out = super().summary()
        held, total = self.split.split_elements(self._tensor_rank)
        local = np.array([self.local.nbytes, held * self.local.itemsize], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.MAX)
        itemsize = self.params.itemsize
        out["memory"].update(
            tensor_parallel=self.split.ranks,
            data_parallel_replicas=self.comm.Get_size() // self.split.ranks,
            parameter_bytes_per_rank=int(local[0]),
            split_layer_bytes=total * itemsize,
            split_layer_bytes_per_rank=int(local[1]),
            split_layer_fraction=int(local[1]) / (total * itemsize))
        return out


def _divisors(ranks: int) -> str:
    """``1, 2 or 4``: the values of T that ``ranks`` ranks can form groups of."""
    values = [str(t) for t in range(1, ranks + 1) if ranks % t == 0]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
