"""``losses.jsonl``: one JSON object per ZAQ iteration, appended as the loop runs.

A process killed mid-write leaves a torn last line; readers skip any line that is
not a whole JSON object with an ``iter`` field, so ``--resume`` and the plots
never fail on it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError


def read_loss_log(path: Path) -> list[dict[str, Any]]:
    """The whole, parseable entries of ``path`` (an empty list if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for raw in path.read_bytes().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:  # torn or garbled line (includes invalid UTF-8)
            continue
        if isinstance(entry, dict) and isinstance(entry.get("iter"), int):
            entries.append(entry)
    return entries


def append_loss_entry(path: Path, entry: dict[str, Any]) -> None:
    """One line more; a failed write (a full disk) is one error line, and the torn line it may
    leave is what the readers already skip."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as err:
        raise UserError(f"cannot append to the loss log {path} ({err.strerror}); free space or pass "
                        "another --work-dir, then rerun with --resume") from None


def truncate_loss_log(path: Path, last_iteration: int) -> None:
    """After a resume: keep the entries up to the checkpoint's iteration, drop torn lines."""
    if Path(path).exists():
        kept = [e for e in read_loss_log(path) if e["iter"] <= last_iteration]
        Path(path).write_text("".join(json.dumps(e) + "\n" for e in kept))
