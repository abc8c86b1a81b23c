"""Run-time services around the training pipeline, not part of it: launch checks and thread
limits (:mod:`.launch`), loading the numba kernels without cache races (:mod:`.compile`),
stop signals and preemption (:mod:`.preemption`), the stall watchdog (:mod:`.watchdog`),
progress lines (:mod:`.progress`), the run directory (:mod:`.outputs`) and rank 0's
direct output into a local ``mpiexec``'s pipe (:mod:`.direct_output`).

May import :mod:`mpitrain.errors` and :mod:`mpitrain.kernels`; nothing of the pipeline
(data, models, collectives, optimizers, strategies). Kept empty so that importing
:mod:`.launch` loads neither numpy nor numba (its thread limits must come first).
"""
