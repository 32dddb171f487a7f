"""Test methods. ``block`` is ``ptq``, except that when ``ZAQBENCH_TEST_BLOCK`` names a file that
does not exist yet, it writes that file (with its process id) and then waits to be killed: a
process stopped at a known job, with no race; once the file exists it runs as ``ptq``. ``fail``
stops with a ``UserError`` when it runs, after every check of the plan: a job that fails on a worker."""
from __future__ import annotations

import os
import time
from pathlib import Path

from zaqbench.errors import UserError
from zaqbench.methods import MethodOutput, NoisePTQ, RunContext
from zaqbench.registry import METHODS


@METHODS.register_module(name="block")
class BlockOnce(NoisePTQ):
    name = "block"

    def run(self, ctx: RunContext) -> MethodOutput:
        marker = os.environ.get("ZAQBENCH_TEST_BLOCK")
        if marker and not Path(marker).exists():
            Path(marker).write_text(f"running {os.getpid()}\n")
            time.sleep(600)
        return super().run(ctx)


@METHODS.register_module(name="fail")
class FailOnRun(NoisePTQ):
    name = "fail"
    in_default_grid = False

    def run(self, ctx: RunContext) -> MethodOutput:
        raise UserError("the test method 'fail' stops here")
