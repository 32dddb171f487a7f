"""The ``zaqbench`` command: one entry point with a sub-command per tool.

    zaqbench run --task det --model retinanet        (= tools/run_task.py)
    zaqbench curve | probes | grid | tables | plots | bench | bench-deploy ...
    python -m zaqbench ...                            (the same)

Each sub-command is the ``main(argv)`` of one module; ``tools/*.py`` call the same functions.
The built-in tasks and methods are registered first, and configs' ``custom_imports`` resolve
against the current folder, as modules given to ``python -m`` do.
"""
from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Sequence

from .wait_policy import choose_wait_policy

#: sub-command -> (module whose ``main(argv)`` runs it, one line for ``--help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("zaqbench.run.runner", "run methods on one task and model; one result row per run"),
    "curve": ("zaqbench.run.curves", "a method's metric against its iterations (budget curves)"),
    "probes": ("zaqbench.run.probes", "D_o on fixed generated probes for every snapshot of a curve run"),
    "grid": ("zaqbench.run.grid", "the standard grid: tasks x methods x bit widths x seeds, resumable"),
    "tables": ("zaqbench.run.tables", "render the result CSVs into results/README.md"),
    "plots": ("zaqbench.run.plots", "the plots of results/"),
    "bench": ("zaqbench.run.bench", "throughput and memory of the ZAQ loop, fake quantization on and off"),
    "bench-deploy": ("zaqbench.run.bench_deploy", "onnxruntime latency of the FP32 and the exported W8A8 graph"),
    "contention": ("zaqbench.run.contention", "time per step of the teacher and ZAQ, quiet and beside a busy process"),
    "speed": ("zaqbench.run.speed", "the ZAQ loop against the official ZAQ code on the same math, interleaved"),
}
#: the packages that register the built-in task adapters and methods when imported
BUILTINS = ("tasks", "zaqbench.methods")


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Run sub-command ``name`` with ``argv`` (default: this process's arguments)."""
    if "torch" not in sys.modules:  # before torch starts its thread pool
        choose_wait_policy()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for package in BUILTINS:
        import_module(package)
    module, _ = COMMANDS[name]
    return import_module(module).main(list(sys.argv[1:] if argv is None else argv))


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: zaqbench <command> [options]   (zaqbench <command> --help for its options)\n\ncommands:\n" + \
        "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        sys.stderr.write(f"error: unknown command '{argv[0]}'; commands: {', '.join(COMMANDS)}\n")
        return 2
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
