"""Suite-wide settings: ``--reduce auto`` follows the built-in table, not this machine's
tuning cache (``$MPITRAIN_TUNE``, inherited by every subprocess), so a run's algorithm
does not depend on what an earlier run measured; tests/test_tune.py asks for tuning
explicitly. Set MPITRAIN_TUNE yourself to run the suite with another default."""

import os

os.environ.setdefault("MPITRAIN_TUNE", "off")
