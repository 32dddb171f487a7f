#!/usr/bin/env python
"""Plots for ``results/``: metric vs bit width per method, images from the trained ZAQ generator,
and the ZAQ loss curves of each task's default run (``zaqbench.run.plots`` says which run).

    python tools/make_plots.py [--tasks cls,det,seg] [--work-dir work_dirs]

Without --tasks: every task with a ``<results>/<task>.csv``.
"""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("plots"))
