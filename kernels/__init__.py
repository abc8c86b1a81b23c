"""numba kernels for mpitrain: pure functions on arrays, no MPI inside."""
