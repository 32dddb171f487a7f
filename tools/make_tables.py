#!/usr/bin/env python
"""Render the result CSVs of a folder into its ``README.md``: one section per task (registered
tasks by their adapter's title; any other ``<task>.csv`` by its key), then the sub-folders'
tables, the budget curves and the probe checks. Bad lines are reported and skipped.

    python tools/make_tables.py [--results results] [--out results/README.md]
"""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("tables"))
