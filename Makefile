# One-command set-up: `make run` (demo training) and `make test` (whole suite) both create
# .venv and install mpitrain with MPICH from PyPI, numba, scikit-learn and the test tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
EXTRAS ?= mpich,datasets,plot,secure,hdf5,parquet,test
STAMP := $(VENV)/.installed-$(EXTRAS)
# Per-test timeout for MPI runs, and a hard cap on each mpiexec so a deadlock fails fast.
MPI_TEST_TIMEOUT ?= 600
PYTEST_MPI := -q --with-mpi -m mpi --timeout=240

.PHONY: install run test test-serial test-mpi test-slurm test-multinode lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: install
	$(MPIEXEC) -n 4 $(PY) -m mpitrain train --data digits --model mlp --hidden 64 \
	    --epochs 20 --out runs/digits --overwrite

lint: install
	$(VENV)/bin/ruff check .

test: install lint test-serial test-mpi test-slurm test-multinode

test-serial: install
	$(PY) -m pytest -q -m "not mpi and not slurm and not multinode" --durations=25

test-mpi: install
	for n in 2 3 4; do \
	    echo "== MPI tests on $$n ranks"; \
	    timeout -k 10 $(MPI_TEST_TIMEOUT) $(MPIEXEC) -n $$n $(PY) -m pytest $(PYTEST_MPI) tests \
	        || exit 1; \
	done

# Starts a single-node Slurm from Debian packages when root (tests skip with a reason if not).
test-slurm: install
	bash .ci/slurm-setup
	timeout -k 10 900 $(PY) -m pytest -q -m slurm tests/slurm

# The MPI and CLI tests again on emulated nodes (2x2, 3x1, 2+1; tests/cluster.py): adds the
# node names to /etc/hosts when root, skips with the reason otherwise; and the allreduce
# over the rate-limited cluster of tests/multinode/shaped-cluster (root only).
test-multinode: install
	timeout -k 10 1800 $(PY) -m pytest -q -m multinode tests/test_multinode.py \
	    tests/test_shaped_cluster.py

bench: install
	$(MPIEXEC) -n 2 $(PY) -m mpitrain bench allreduce --json bench-results/allreduce.json

clean:
	rm -rf $(VENV) runs bench-results
