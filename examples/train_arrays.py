"""Train on arrays already in memory: ``mpirun -n 2 python examples/train_arrays.py``.

Rank 0 has all rows, with class names as labels, and the other ranks pass None: mpitrain
scatters the rows (each rank could instead pass its own rows). The model is the same on
any number of ranks. Rank 0 prints the result.
"""

import numpy as np
from mpi4py import MPI

from mpitrain import train

if MPI.COMM_WORLD.Get_rank() == 0:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    y = np.array(["cat", "dog", "owl"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
else:
    X = y = None

result = train(X=X, y=y, model="softmax", epochs=5, batch_size=64, lr=0.5, quiet=True)
if MPI.COMM_WORLD.Get_rank() == 0:
    final = result.history[-1]
    print(f"test accuracy {final['test_accuracy']:.3f} after {final['epoch']} epochs")
    print("classes:", result.summary["data"]["class_names"])
