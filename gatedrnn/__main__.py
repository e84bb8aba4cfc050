"""``python -m gatedrnn``: the ``gatedrnn`` command (e.g. under ``torchrun -m gatedrnn train``).
Under torchrun, ``record`` hands an uncaught error to torchrun, whose failure summary then
shows it."""

import sys

from gatedrnn.cli import main
from gatedrnn.distributed import under_torchrun

if under_torchrun():
    from torch.distributed.elastic.multiprocessing.errors import record

    main = record(main)
sys.exit(main())
