"""``python -m gatedrnn``: the ``gatedrnn`` command (e.g. under ``torchrun -m gatedrnn train``).
Under torchrun, ``record`` hands an uncaught error to torchrun, whose failure summary then
shows it; and a process whose command has returned leaves with ``os._exit`` once its output is
flushed. Its work is done by then (the process group destroyed, every file written atomically
and closed), but the interpreter's teardown of torch's native threads aborted a finished rank
now and then on a loaded machine ("terminate called without an active exception", then
SIGSEGV: twice in four full test runs, never in twelve jobs run alone), and torchrun then
reports the whole job as failed."""

import os
import sys

from gatedrnn.cli import main
from gatedrnn.distributed import under_torchrun

if under_torchrun():
    from torch.distributed.elastic.multiprocessing.errors import record

    code = record(main)()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
sys.exit(main())
