"""A test method that is ``ptq``, except that while ``ZAQBENCH_TEST_BLOCK`` names a file it writes
that file and then waits to be killed: a child process stopped at a known job, with no race."""
from __future__ import annotations

import os
import time
from pathlib import Path

from zaqbench.methods import MethodOutput, NoisePTQ, RunContext
from zaqbench.registry import METHODS


@METHODS.register_module(name="block")
class BlockOnce(NoisePTQ):
    name = "block"

    def run(self, ctx: RunContext) -> MethodOutput:
        marker = os.environ.get("ZAQBENCH_TEST_BLOCK")
        if marker:
            Path(marker).write_text("running\n")
            time.sleep(600)
        return super().run(ctx)
