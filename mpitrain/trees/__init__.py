"""Histogram tree learning over MPI collectives (``--model gbdt``, ``--model forest``):
:mod:`.binning` (edges agreed from a sample that is the same for any number of ranks,
uint8 codes) and :mod:`.grow` (level-wise growth, fixed-point histograms reduce-scattered by
feature and best splits agreed per level, histogram subtraction, several outputs per
tree). The boosting rounds and the
forest's trees are the strategies :mod:`mpitrain.strategies.boosting` and
:mod:`mpitrain.strategies.forest`. May import data, kernels, collectives, errors and
mpi4py; never a strategy, the CLI or the loop.
"""
