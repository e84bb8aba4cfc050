"""``python -m gatedrnn``: the ``gatedrnn`` command (e.g. under ``torchrun -m gatedrnn train``).
Under torchrun, ``record`` hands an uncaught error to torchrun, whose failure summary then
shows it; and a process whose command returned, with success or with an exit code of its own
(a signal's 128 + n after saving), leaves with ``os._exit`` and that code once its output is
flushed. Its work is done by then (every file written atomically and closed), but the
interpreter's teardown of torch's native threads aborted a finished rank now and then on a
loaded machine ("terminate called without an active exception", then SIGSEGV or SIGABRT: a
succeeding rank twice in four full test runs, never in twelve jobs run alone; a rank stopped
by SIGTERM once in a clean clone's CI, which then saw exit code -6 where the rank had returned
143), and torchrun then reports the wrong failure or fails a finished job."""

import os
import sys

from gatedrnn.cli import main
from gatedrnn.torchrun import under_torchrun

if under_torchrun():
    from torch.distributed.elastic.multiprocessing.errors import record

    code = record(main)()
    if code is None or isinstance(code, int):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)
sys.exit(main())
