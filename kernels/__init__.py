"""numba kernels for mpitrain: pure functions on arrays, no MPI inside.

- :mod:`kernels.network`: one generic dense network (fused forward + backward);
- :mod:`kernels.optimizers`: in-place updates of the flat parameter buffer;
- :mod:`kernels.reference`: plain numpy references (tests and benchmarks);
- :mod:`kernels.warmup`: compile or load every kernel before training.
"""
