"""scikit-learn model selection over MPI: ``mpirun -n 2 python examples/sklearn_digits.py``.

Every rank holds its own rows of the digits data. ``GridSearchCV`` runs on every rank with
the same grid: each fit is collective (the ranks train one model together) and each score
is the score over all ranks' rows, so every rank picks the same parameters. Rank 0 prints
the result; ``predict`` is local (each rank predicts its own rows).
"""

import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from mpitrain.sklearn import MPIClassifier

comm = MPI.COMM_WORLD
X, y = load_digits(return_X_y=True)
names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine"])
mine = np.array_split(np.random.default_rng(0).permutation(len(y)), comm.Get_size())
rows = mine[comm.Get_rank()]  # in practice: the rows this rank read
X, y = X[rows], names[y[rows]]

pipeline = make_pipeline(MinMaxScaler(), MPIClassifier(model="mlp", epochs=5, comm=comm))
search = GridSearchCV(pipeline, {"mpiclassifier__hidden": [(8,), (64,)],
                                 "mpiclassifier__lr": [0.01, 0.1]}, cv=3)
search.fit(X, y)
best = comm.allgather(search.best_params_)
assert all(params == best[0] for params in best)  # the same choice on every rank
accuracy = search.score(X, y)  # collective: over every rank's rows
if comm.Get_rank() == 0:
    print(f"best parameters {search.best_params_}")
    print(f"cross-validated accuracy {search.best_score_:.3f}, training accuracy {accuracy:.3f}")
    print(f"rank 0 predicts {search.predict(X[:5]).tolist()} for {y[:5].tolist()}")
