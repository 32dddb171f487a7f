"""The one command-line vocabulary of the ``zaqbench`` sub-commands.

Every flag is defined once here (:data:`FLAGS`) and a command takes the ones it needs with
:func:`add_args` (the run family's shared flags with :func:`add_common_args`), so a word means
the same thing in every tool: singular for one value (``--task``, ``--model``, ``--device``),
plural for a comma list (``--tasks``, ``--methods``, ``--bits``, ``--seeds``), each list read by
:func:`zaqbench.run.lists.parse_list` (an empty item, a wrong kind or a repeat is an error).
``--method`` is accepted for ``--methods`` (``--method zaq`` names one method). Abbreviated
flags are refused, so a singular never silently stands for a plural.
"""
from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..data_identity import FINGERPRINTS
from ..options import Rule, check_value, is_int
from ..quant.qconfig import bit_width
from .lists import parse_list

MAX_SEED = 2**31 - 1  # numpy and every seed derived from it (seed + offsets) stay in range
seed_value = Rule(lambda v: is_int(v) and 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is the suite's one ``error:`` line (exit 2), not a usage dump,
    and a flag must be given in full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


#: flag name -> (its spellings, argparse keywords); a command overrides ``default`` or ``help``
FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "task": (("--task",), dict(required=True, help="task adapter name (e.g. cls, det, seg)")),
    "tasks": (("--tasks",), dict(default=None, help="comma-separated tasks")),
    "model": (("--model",), dict(default=None, help="config name under configs/<task>/ (default: the task's default)")),
    "config": (("--config",), dict(default=None, help="explicit config file (overrides --model lookup)")),
    "methods": (("--methods", "--method"), dict(
        default=None, metavar="METHODS", help="comma-separated methods (--method is the same flag)")),
    "bits": (("--bits",), dict(default=None, help="comma-separated WbAb widths, e.g. 8,6,4 (W8A8, W6A6, W4A4)")),
    "wbits": (("--wbits",), dict(type=int, default=None, help="weight bits (2-8, 16/32 = full precision)")),
    "abits": (("--abits",), dict(type=int, default=None, help="activation bits (2-8, 16/32 = full precision)")),
    "quant_preset": (("--quant-preset",), dict(default=None, help="quantization preset: default or zaq-code")),
    "seeds": (("--seeds",), dict(default="0", help="comma-separated seeds, e.g. 0,1,2 (default: 0)")),
    "device": (("--device",), dict(
        default="auto", help="auto (first CUDA device if any, else cpu), cpu, cuda or cuda:N; under torchrun "
                             "auto/cuda mean cuda:LOCAL_RANK")),
    "checkpoint": (("--checkpoint",), dict(
        default=None, help="full-precision weights to use instead of the cached teacher")),
    "trust_checkpoint": (("--trust-checkpoint",), dict(
        action="store_true", help="allow arbitrary unpickling of --checkpoint (only for files you trust)")),
    "data_root": (("--data-root",), dict(default=None, help="real data location (default: the embedded data)")),
    "fingerprint": (("--fingerprint",), dict(
        choices=FINGERPRINTS, default="sampled",
        help="how --data-root's content is identified: 'sampled' (file sizes plus the bytes of 64 files; fast) "
             "or 'full' (every byte; per-file hashes cached by size and mtime)")),
    "out": (("--out",), dict(default=None, help="results CSV (default: results/<task>.csv)")),
    "results": (("--results",), dict(default=None, help="the results folder (default: results/)")),
    "work_dir": (("--work-dir",), dict(default=None, help="run folders for checkpoints and loss curves "
                                                          "(default: work_dirs/)")),
    "cfg_options": (("--cfg-options",), dict(
        nargs="+", default=[], metavar="KEY=VALUE",
        help="override config fields, e.g. methods.zaq.iters=10 task.eval.max_samples=500")),
    "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bars: one line on stderr as each long step starts instead")),
    "resume": (("--resume",), dict(action="store_true", help="continue interrupted runs from their checkpoints")),
    "skip_existing": (("--skip-existing",), dict(
        action="store_true", help="skip runs whose rows (same config hash, method, bits, seed) are already in --out")),
    "dry_run": (("--dry-run",), dict(action="store_true", help="list the runs and whether --out already has them")),
}

#: what every command of the run family (run, curve, probes) takes: everything a plan is built from
COMMON = ("task", "model", "config", "methods", "bits", "wbits", "abits", "quant_preset", "seeds", "device",
          "checkpoint", "trust_checkpoint", "data_root", "fingerprint", "out", "work_dir", "cfg_options",
          "no_progress")


def add_args(parser: argparse.ArgumentParser, *names: str, **overrides: dict[str, Any]) -> argparse.ArgumentParser:
    """Add the flags ``names`` of :data:`FLAGS`; ``overrides[name]`` replaces some of a flag's
    keywords (its default or help) for this command."""
    for name in names:
        spellings, keywords = FLAGS[name]
        parser.add_argument(*spellings, dest=name, **{**keywords, **overrides.get(name, {})})
    return parser


def add_common_args(parser: argparse.ArgumentParser, **overrides: dict[str, Any]) -> argparse.ArgumentParser:
    """The flags a plan is built from (:data:`COMMON`), as every command of the run family takes them."""
    return add_args(parser, *COMMON, **overrides)


def parse_names(text: str, flag: str, example: str) -> list[str]:
    """``ptq,zaq`` -> ['ptq', 'zaq'] (task or method names)."""
    return parse_list(text, flag, str, example)


def parse_bits(text: str, flag: str = "--bits") -> list[int]:
    """``8,6,4`` -> [8, 6, 4]; each 2-8, or 16/32 for full precision."""
    return [check_value(bit_width, b, flag) for b in parse_list(text, flag, int, "8,6,4")]


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; each in numpy's seed range."""
    return [check_value(seed_value, s, flag) for s in parse_list(str(text), flag, int, "0,1,2")]
