"""Looking at runs after the fact, from the command line: ``mpitrain show RUN`` (a one-screen
summary of a run directory, :mod:`.show`), ``mpitrain plot RUN ...`` (learning curves as an
image, :mod:`.plot`, with matplotlib from the ``[plot]`` extra), ``mpitrain tensorboard``
(the metrics as TensorBoard event files, :mod:`.tensorboard`) and ``mpitrain predict``
(predictions of a saved model for a data file, each rank its block of rows,
:mod:`.predict`). :mod:`.record` reads what a run left in ``--out``.

Sits on top of the pipeline, like the CLI: may import :mod:`mpitrain.config`,
:mod:`mpitrain.data`, :mod:`mpitrain.models`, :mod:`mpitrain.runtime`,
:mod:`mpitrain.training` (how ``train`` reads files), :mod:`mpitrain.errors` and mpi4py;
nothing imports it but :mod:`mpitrain.cli`.
"""
