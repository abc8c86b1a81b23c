"""Checkpoints: the on-disk format (:mod:`.store`: atomic, self-checking ``.npz`` files, no
MPI, no CLI wording; :mod:`.sharded`: sharded checkpoints read back slice by slice and
consolidated) and the run policy (:mod:`.policy`: when to write, what a strategy
saves, whether a checkpoint fits the run that resumes from it).

:mod:`.store` may import only numpy and the standard library; :mod:`.sharded` that and
:mod:`.store`; :mod:`.policy` may import the
config, errors, runtime services and the strategy interface.
"""
