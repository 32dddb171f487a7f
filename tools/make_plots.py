#!/usr/bin/env python
"""Plots for ``results/``: metric vs bit width per method, images from the trained ZAQ generator,
and the ZAQ loss curves of each task's default run (``zaqbench.run.plots`` says which run).

    python tools/make_plots.py [--tasks cls,det,seg] [--work-dir work_dirs]

Without --tasks: every task with a ``<results>/<task>.csv``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tasks  # noqa: F401 - registers the task adapters (the generator images build one)
from zaqbench.run.plots import make_plots
from zaqbench.runner import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task with a CSV)")
    p.add_argument("--results", default=str(REPO_ROOT / "results"))
    p.add_argument("--work-dir", default=str(REPO_ROOT / "work_dirs"))
    args = p.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t] if args.tasks else None
    return make_plots(Path(args.results), Path(args.work_dir), names)


if __name__ == "__main__":
    sys.exit(main())
