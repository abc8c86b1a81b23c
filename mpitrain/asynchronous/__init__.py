"""Asynchronous training: the parts the modes ``async-ps``, ``ssp``, ``local-sgd`` and
``gossip`` (:mod:`mpitrain.strategies`) are built from.

One job per module: :mod:`.straggler` (``--straggler``: slowing a rank down in proportion to
its measured compute, to show the effect of slow machines on one node), :mod:`.staleness`
(how stale the applied gradients were, per epoch), :mod:`.schedule` (seeded gossip pairings
and the fixed push order of ``--simulate-schedule``), :mod:`.votes` (stop votes read a few
steps late, so ranks need not meet every step), :mod:`.reshard` (moving the training
rows of the server ranks to the workers), :mod:`.parameter_server` (the server progress loop
and the worker's push/pull over nonblocking point-to-point messages). These modules may
import numpy, mpi4py, data, models, kernels, collectives, optimizers and errors, never a
strategy, the loop or the run-time services. Nothing is imported here.
"""
