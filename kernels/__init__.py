"""numba kernels for mpitrain: pure functions on arrays, no MPI inside.

- :mod:`mpitrain.kernels.network`: one generic dense network (fused forward + backward);
- :mod:`mpitrain.kernels.optimizers`: in-place updates of the flat parameter buffer;
- :mod:`mpitrain.kernels.reference`: plain numpy references (tests and benchmarks);
- :mod:`mpitrain.kernels.warmup`: compile or load every kernel before training.
"""
