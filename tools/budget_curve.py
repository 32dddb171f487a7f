#!/usr/bin/env python
"""Budget curves: evaluate ZAQ runs at chosen iterations from their snapshots.

    tools/budget_curve.py --task cls --model resnet20 --methods zaq --bits 4 --seeds 0,1,2 \
        --points 0,10,20,40,100,200,400

Writes ``results/curves/<task>_<model>.csv`` (protocol columns + iteration) and a plot beside it.
Takes every option of ``tools/run_task.py`` (``--cfg-options``, ``--resume``, ``--work-dir``...).
"""
import sys

from zaqbench.run.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("curve"))
