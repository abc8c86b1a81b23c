"""Distributed k-means pieces: :mod:`.init` is k-means|| initialisation, :mod:`.lloyd` one
Lloyd iteration as a message and an update, and a whole run that labels rows (for
``--partition kmeans``); the same centers for any number of ranks (keyed draws by global
row, exact fixed-point sums). ``--model kmeans`` is the strategy
:mod:`mpitrain.strategies.kmeans`. May import data, kernels, collectives, errors and
mpi4py; never a strategy, the CLI or the loop.
"""
