"""Progress of the long steps (calibration, ZeroQ's distillation, the ZAQ loop): a tqdm bar, or,
where the command line said ``--no-progress``, one line on stderr as each step starts.

Three settings, as callers pass them: ``bar`` (tqdm, the default of the commands), ``lines``
(``--no-progress``: logs stay readable, no carriage returns) and neither (the Python API's
default: silent). Only rank 0 shows anything under torchrun.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, TypeVar

from tqdm import tqdm

from . import distributed

T = TypeVar("T")


def step_line(message: str, show: bool = True) -> None:
    """``[zaqbench] <message>`` on stderr (rank 0), when ``show``."""
    if show and distributed.is_main():
        print(f"[zaqbench] {message}", file=sys.stderr)


def progress_bar(total: int, desc: str, bar: bool, lines: bool = False, what: str = "iterations",
                 initial: int = 0, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``total`` steps when ``bar``; otherwise a disabled one (``update`` and
    ``set_postfix`` do nothing), and with ``lines`` the line ``<desc> (<what>: <n>)`` for the
    ``total - initial`` steps left."""
    step_line(f"{desc} ({what}: {total - initial})", lines and not bar)
    return tqdm(total=total, initial=initial, desc=desc, disable=not (bar and distributed.is_main()),
                dynamic_ncols=True, leave=False, **kwargs)


def track(items: Iterable[T], total: int, desc: str, bar: bool, lines: bool = False,
          what: str = "batches") -> Iterator[T]:
    """``items``, advancing a :func:`progress_bar` of ``total`` steps as each is taken."""
    progress = progress_bar(total, desc, bar, lines, what)
    try:
        for item in items:
            yield item
            progress.update(1)
    finally:
        progress.close()
