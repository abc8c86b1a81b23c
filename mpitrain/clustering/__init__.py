"""Distributed k-means pieces (``--model kmeans``): :mod:`.init` is k-means||
initialisation, the same centers for any number of ranks (keyed draws by global row,
exact fixed-point sums). The Lloyd iterations themselves are the strategy
:mod:`mpitrain.strategies.kmeans`. May import data, kernels, collectives, errors and
mpi4py; never a strategy, the CLI or the loop.
"""
