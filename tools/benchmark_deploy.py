#!/usr/bin/env python
"""onnxruntime latency of the FP32 and the exported W8A8 graph (``zaqbench bench-deploy``)."""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("bench-deploy"))
