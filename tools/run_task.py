#!/usr/bin/env python
"""Run zaqbench on one task and model: ``tools/run_task.py --task det --model retinanet``."""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("run"))
