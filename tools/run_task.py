#!/usr/bin/env python
"""Run zaqbench on one task and model: ``tools/run_task.py --task det --model retinanet``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks  # noqa: E402,F401  - registers the task adapters
from zaqbench import methods  # noqa: E402,F401  - registers the methods
from zaqbench.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
