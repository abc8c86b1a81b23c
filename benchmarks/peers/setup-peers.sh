#!/usr/bin/env bash
# Build a separate venv with the peers of benchmarks/peers: PyTorch (CPU) and Horovod.
#
#     bash benchmarks/peers/setup-peers.sh /tmp/peers      # ~15 min on 2 cores
#     python benchmarks/peers/compare.py --ranks 2 --repeats 3 --peer-python /tmp/peers/bin/python
#
# Not a dependency of mpitrain, and not run by the tests (it downloads ~200 MB and compiles
# Horovod). Horovod 0.28.1 (its last release) builds its PyTorch extension as C++14, which
# PyTorch >= 2.1 headers reject ("C++17 or later compatible compiler is required"); the
# script patches the sdist's CMake files to C++17 and builds it against the MPICH wheel's
# compiler wrappers (MPI operations on the CPU, no Gloo, no TensorFlow/MXNet).
set -euo pipefail

venv=${1:?usage: setup-peers.sh VENV_DIR}
torch_version=${TORCH_VERSION:-2.13.0}
horovod_version=0.28.1

python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip setuptools wheel
# mpitrain's core dependencies: its data loader (the peers' rows) imports them
"$venv/bin/pip" install -q "torch==$torch_version" mpich mpi4py numpy numba scipy threadpoolctl cmake
# Horovod's own build requirements, since it is built without isolation (to see torch)
"$venv/bin/pip" install -q cloudpickle psutil pyyaml packaging cffi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/pip" download -q --no-deps --no-binary :all: "horovod==$horovod_version" -d "$work"
tar -xzf "$work/horovod-$horovod_version.tar.gz" -C "$work"
src="$work/horovod-$horovod_version"
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"

PATH="$venv/bin:$PATH" \
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_CPU_OPERATIONS=MPI \
HOROVOD_WITHOUT_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    "$venv/bin/pip" install -q --no-build-isolation "$src"

"$venv/bin/python" -c "import horovod.torch as hvd, torch; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '$horovod_version', 'torch', torch.__version__)"
