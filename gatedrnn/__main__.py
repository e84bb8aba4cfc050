"""``python -m gatedrnn``: the ``gatedrnn`` command (e.g. under ``torchrun -m gatedrnn train``)."""

import sys

from gatedrnn.cli import main

sys.exit(main())
