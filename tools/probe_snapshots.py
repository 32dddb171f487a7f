#!/usr/bin/env python
"""D_o against P on fixed generated probes, beside the metric, for every snapshot of a budget-curve
run: would a data-free choice of the returned iterate work? Give the options of the
tools/budget_curve.py command that trained the run:

    tools/probe_snapshots.py --task seg --model deeplabv3 --methods zaq --bits 6 --seeds 0 \
        --points 0,10,20,40,100

Writes ``results/curves/probes_<task>_<model>.csv`` and prints, per run, the rank correlation of
-D_o with the metric and the iterate each probe set would pick. Never trains.
"""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("probes"))
