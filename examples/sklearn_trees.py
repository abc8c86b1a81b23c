"""Tree ensembles and k-means as scikit-learn estimators over MPI:
``mpirun -n 2 python examples/sklearn_trees.py``.

Every rank holds its own rows of the digits data. ``GridSearchCV`` tunes gradient-boosted
trees on every rank with the same grid: each fit is collective (the ranks grow the same
trees together, the trees one process would grow on all rows) and each score is over all
ranks' rows, so every rank picks the same parameters. Then a random forest and k-means fit
the same rows; ``predict`` and ``transform`` are local (each rank its own rows).
"""

import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from mpitrain.sklearn import MPIGradientBoostingClassifier, MPIKMeans, MPIRandomForestClassifier

comm = MPI.COMM_WORLD
X, y = load_digits(return_X_y=True)
mine = np.array_split(np.random.default_rng(0).permutation(len(y)), comm.Get_size())
rows = mine[comm.Get_rank()]  # in practice: the rows this rank read
X, y = X[rows], y[rows]

gbdt = MPIGradientBoostingClassifier(n_estimators=20, comm=comm)
search = GridSearchCV(gbdt, {"max_depth": [2, 4], "learning_rate": [0.1, 0.3]}, cv=3)
search.fit(X, y)
best = comm.allgather(search.best_params_)
assert all(params == best[0] for params in best)  # the same choice on every rank

forest = MPIRandomForestClassifier(n_estimators=30, comm=comm).fit(X, y)
forest_accuracy = forest.score(X, y)  # collective: over every rank's rows

kmeans = MPIKMeans(n_clusters=10, comm=comm).fit(X)
distances = kmeans.transform(X[:3])  # local: this rank's rows, one column per center
if comm.Get_rank() == 0:
    print(f"gbdt best parameters {search.best_params_}, "
          f"cross-validated accuracy {search.best_score_:.3f}")
    print(f"forest training accuracy {forest_accuracy:.3f}, "
          f"most used feature {int(np.argmax(forest.feature_importances_))}")
    print(f"kmeans inertia {kmeans.inertia_:.1f} after {kmeans.n_iter_} iterations, "
          f"distances {distances.shape}")
