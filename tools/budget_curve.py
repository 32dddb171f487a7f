#!/usr/bin/env python
"""Budget curves: evaluate ZAQ runs at chosen iterations from their snapshots.

    tools/budget_curve.py --task cls --model resnet20 --method zaq --bits 4 --seeds 0,1,2 \
        --points 0,10,20,40,100,200,400

Writes ``results/curves/<task>_<model>.csv`` (protocol columns + iteration) and a plot beside it.
Takes every option of ``tools/run_task.py`` (``--cfg-options``, ``--resume``, ``--work-dir``...).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks  # noqa: E402,F401  - registers the task adapters
from zaqbench import methods  # noqa: E402,F401  - registers the methods
from zaqbench.curves import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
