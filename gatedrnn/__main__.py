"""``python -m gatedrnn``: the ``gatedrnn`` command (e.g. under ``torchrun -m gatedrnn train``).
Under torchrun, ``record`` hands an uncaught error to torchrun, whose failure summary then
shows it; and a process whose command succeeded leaves with ``os._exit`` once its output is
flushed (a failing one exits as usual, so that torchrun sees the rank that failed first). Its
work is done by then (the process group destroyed, every file written atomically
and closed), but the interpreter's teardown of torch's native threads aborted a finished rank
now and then on a loaded machine ("terminate called without an active exception", then
SIGSEGV: twice in four full test runs, never in twelve jobs run alone), and torchrun then
reports the whole job as failed."""

import os
import sys

from gatedrnn.cli import main
from gatedrnn.torchrun import under_torchrun

if under_torchrun():
    from torch.distributed.elastic.multiprocessing.errors import record

    code = record(main)()
    if not code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)
sys.exit(main())
