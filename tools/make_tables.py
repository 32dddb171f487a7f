#!/usr/bin/env python
"""Render the result CSVs of a folder into its ``README.md``: one section per task (registered
tasks by their adapter's title; any other ``<task>.csv`` by its key), then the sub-folders'
tables, the budget curves and the probe checks. Bad lines are reported and skipped.

    python tools/make_tables.py [--results results] [--out results/README.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tasks  # noqa: F401 - registers the task adapters (their titles)
from zaqbench import methods  # noqa: F401 - registers the methods (their display order and notes)
from zaqbench.run.tables import write_tables
from zaqbench.runner import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(REPO_ROOT / "results"))
    p.add_argument("--out", default=None, help="default: <results>/README.md; '-' prints")
    args = p.parse_args(argv)
    return write_tables(Path(args.results), args.out)


if __name__ == "__main__":
    sys.exit(main())
