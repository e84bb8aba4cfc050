"""``python -m gatedrnn`` with one rank made to fail, for tests/test_distributed.py (run by
torchrun in place of ``-m gatedrnn``): the rank ``FAIL_RANK`` raises when it computes the
loss of its ``FAIL_AFTER + 1``-th step of this process."""

import os
import runpy

from gatedrnn import train

real, calls = train._batch_loss, [0]


def failing(*args):
    calls[0] += 1
    if os.environ["RANK"] == os.environ["FAIL_RANK"] and calls[0] > int(os.environ["FAIL_AFTER"]):
        raise RuntimeError(f"rank {os.environ['RANK']} fails on purpose after {os.environ['FAIL_AFTER']} steps")
    return real(*args)


train._batch_loss = failing
runpy.run_module("gatedrnn", run_name="__main__", alter_sys=True)
