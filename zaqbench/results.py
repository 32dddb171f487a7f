"""Result rows: one flat CSV row per (task, model, method, bits, seed) run.

Appends are safe when several runs write the same file: a lock file
serialises writers, and each append rewrites the whole file to a temp file
that replaces the original atomically, so a reader never sees a torn row.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import UserError

COLUMNS = [
    "task", "model", "dataset", "method", "wbits", "abits", "metric", "value", "fp_value",
    "extra_metrics", "iters", "seed", "seconds",
    "w_granularity", "w_symmetric", "a_symmetric", "a_range", "first_last_fp", "bn_folded", "calib_data",
    "quant_preset", "config_hash", "device", "commit", "date",
]


def git_commit(repo: Path | None = None) -> str:
    """Short commit of the code that produced a row; '-dirty' (as git describe) if tracked files differ.

    Changes under ``results/`` do not count: a regeneration appends to the committed CSVs, and
    marking every row after the first as dirty would say the *code* was uncommitted when it was not.
    """
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=repo, capture_output=True, text=True,
                               check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def format_extra_metrics(metrics: dict[str, float]) -> str:
    """``k=v;k=v``: no commas, so the CSV stays readable by plain ``cut -d,`` tools."""
    return ";".join(f"{k}={round(v, 4)}" for k, v in sorted(metrics.items()))


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def check_writable(path: Path, columns: list[str] = COLUMNS) -> None:
    """Fail before any work if the results file cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of --out '{path}': {err.strerror}") from None
    if path.is_dir():
        raise UserError(f"--out '{path}' is a directory; give a CSV file path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--out '{path}' is not writable; choose another path with --out")
    if path.exists() and path.stat().st_size:
        read_header(path, columns)


def read_header(path: Path, columns: list[str] = COLUMNS) -> list[str]:
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != columns:
        raise UserError(f"{path} has a header that does not match the results schema; "
                        "move it away or pass another --out")
    return header


def append_rows(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> None:
    """Append ``rows`` (dicts with exactly ``columns``) to ``path`` under a lock, atomically:
    all of them or, if anything fails, none."""
    path = Path(path)
    for row in rows:
        if set(row) != set(columns):
            raise ValueError(f"row keys differ from the schema: {sorted(set(row) ^ set(columns))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        existing = ""
        if path.exists() and path.stat().st_size:
            read_header(path, columns)
            existing = path.read_text()
            if not existing.endswith("\n"):
                existing += "\n"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        if not existing:
            writer.writeheader()
        writer.writerows(rows)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(existing + buf.getvalue())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
