"""``python -m mowe ...`` runs the ``mowe`` command line (see :mod:`mowe.cli`)."""

import sys

from mowe.cli import main

sys.exit(main())
