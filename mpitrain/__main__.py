"""``python -m mpitrain``: see :mod:`mpitrain.cli`."""

import sys

from mpitrain.runtime.launch import configure_threads

configure_threads()  # before numpy/numba load: one BLAS/numba thread per rank by default

from .cli import main  # noqa: E402

sys.exit(main())
