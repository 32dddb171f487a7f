"""What the OpenMMLab stack prints, hidden under ``--no-progress``.

mmengine logs at INFO level (environment and config dumps, the hook table, one
``Epoch(train) [i/n] eta ...`` line per logging interval, per-class metric tables)
and pycocotools prints straight to stdout while it loads annotations and
evaluates. None of it is a result (the runner prints those), so ``--no-progress``
hides it along with the progress bars; warnings and errors still show.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator


def runner_log_level(progress: bool, configured: str = "INFO") -> str:
    """``log_level`` for an mmengine ``Runner``: the config's, or WARNING under ``--no-progress``."""
    return configured if progress else "WARNING"


@contextlib.contextmanager
def quiet_unless(progress: bool) -> Iterator[None]:
    """Within the block, without ``progress``: the current mmengine logger shows only warnings
    and errors, and stdout (pycocotools' prints) is dropped. Both are restored on exit."""
    if progress:
        yield
        return
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
