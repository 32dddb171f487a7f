#!/usr/bin/env python
"""Regenerate the standard result grid: each task's default model x methods x {W8A8, W6A6, W4A4}
x seeds, appended to ``results/<task>.csv``; resumable, and several jobs at once with ``--jobs N``
(CPU processes), ``--devices cuda:0,cuda:1`` or ``--ray [ADDRESS]`` (Ray tasks; docs/ray.md).

    python tools/regenerate.py [--tasks cls,det,seg] [--methods ...] [--bits 8,6,4] [--seeds 0]
                               [--jobs N | --devices cuda:0,cuda:1 | --ray [ADDRESS]]

Other flags go to every ``tools/run_task.py`` call.
"""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("grid"))
