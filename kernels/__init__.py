"""numba kernels for mpitrain, imported as ``mpitrain.kernels``: pure functions on arrays,
no MPI inside. This folder sits at the repository root and ships inside the mpitrain
package (pyproject.toml maps it); its modules import each other relatively.

- :mod:`.network`: one generic dense network (fused forward + backward, loss, predict);
- :mod:`.backward`: the fused step that also writes the message tail, and the split
  forward / per-layer backward used by ``--overlap``;
- :mod:`.optimizers`: in-place updates of the flat parameter buffer (sgd, momentum, adam,
  FedProx);
- :mod:`.compress`: 16-bit codecs of ``--compress``;
- :mod:`.reduce`: element-wise helpers of the allreduce algorithms;
- :mod:`.shared`: the sum over shared-memory slots;
- :mod:`.sparse`, :mod:`.sparse_mlp`, :mod:`.sparse_reduce`: models on CSR rows and the
  sparse row reduction's helpers; :mod:`.prefetch`: cache hints for their shuffled rows;
- :mod:`.trees`: binning, gradient histograms, tree traversal, k-means assignment and
  keyed uniform draws (``--model gbdt|forest|kmeans``);
- :mod:`.kmeans`: the fused Lloyd pass of ``--model kmeans`` (distances, nearest center,
  fixed-point sums, counts and inertia of several runs in one pass over the rows);
- :mod:`.reference`: plain numpy references (tests and benchmarks);
- :mod:`.warmup`: compile or load the kernels a run needs before training.
"""
