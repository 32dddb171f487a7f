#!/usr/bin/env python
"""Regenerate the standard result grid: each task's default model x methods x {W8A8, W6A6, W4A4}
x seeds, appended to ``results/<task>.csv``; resumable, and several jobs at once with ``--jobs N``
(CPU processes) or ``--devices cuda:0,cuda:1`` (``zaqbench.run.grid`` says how).

    python tools/regenerate.py [--task cls,det,seg] [--methods ...] [--bits 8,6,4] [--seeds 0]
                               [--jobs N | --devices cuda:0,cuda:1]

Other flags go to every ``tools/run_task.py`` call.
"""
import argparse
import sys

import tasks  # noqa: F401 - registers the task adapters (the default --task)
from zaqbench import methods  # noqa: F401 - registers the methods (the default --methods)
from zaqbench.run.grid import regenerate
from zaqbench.runner import REPO_ROOT


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --device (passed through) is not --devices
    p.add_argument("--task", default=None, help="comma-separated tasks (default: every task with a default model)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the registered grid methods)")
    p.add_argument("--bits", default="8,6,4")
    p.add_argument("--seeds", default="0")
    p.add_argument("--results", default=str(REPO_ROOT / "results"))
    p.add_argument("--configs", default=str(REPO_ROOT / "configs"), help="config root holding <task>/DEFAULT")
    p.add_argument("--jobs", type=int, default=1, help="grid jobs run at once as CPU processes")
    p.add_argument("--devices", default=None, help="comma-separated devices, one job on each at a time")
    p.add_argument("--dry-run", action="store_true", help="only print what would run")
    p.add_argument("--no-tables", action="store_true", help="do not rerender results/README.md afterwards")
    return regenerate(*p.parse_known_args())


if __name__ == "__main__":
    sys.exit(main())
