"""``python -m zaqbench <command>``: the ``zaqbench`` command."""
import sys

from .run.cli import main

sys.exit(main())
