"""One process per run folder: two identical commands must not interleave their
checkpoints, loss logs and rows. The lock files sit beside the run folders
(``.<run folder>.lock``) and are held from the plan's first check to the last row."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator

from filelock import FileLock, Timeout

from ..errors import UserError


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def hold_run_folders(run_dirs: Iterable[Path]) -> Iterator[None]:
    """Lock every folder or none: a second run of the same jobs fails at once, naming the folder."""
    with contextlib.ExitStack() as stack:
        for run_dir in run_dirs:
            path = lock_path(run_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path), timeout=0)
            try:
                stack.enter_context(lock)
            except Timeout:
                raise UserError(f"another run is using '{run_dir}' (lock {path}); wait for it to finish, "
                                "or run with another --work-dir") from None
            except OSError as err:  # e.g. a lock file another user owns in a shared work dir
                raise UserError(f"cannot take the lock {path} ({err.strerror}); run with a --work-dir of "
                                "your own") from None
        yield
