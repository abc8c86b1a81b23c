"""Checkpoints: the on-disk format (:mod:`.store`: atomic, self-checking ``.npz`` files, no
MPI, no CLI wording) and the run policy (:mod:`.policy`: when to write, what a strategy
saves, whether a checkpoint fits the run that resumes from it).

:mod:`.store` may import only numpy and the standard library; :mod:`.policy` may import the
config, errors, runtime services and the strategy interface.
"""
