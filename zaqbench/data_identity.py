"""Which data a run used: a location and a cheap content fingerprint.

The teacher cache key, each job's config hash and each row's ``dataset`` cell carry
it, so a teacher trained on one ``--data-root`` is never reused for another and rows
of different data cannot be mistaken for each other (or skipped as done).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLED_FILES = 64  # files whose bytes enter the fingerprint (spread over the sorted list)
SAMPLED_BYTES = 1 << 16  # from the head and the tail of each sampled file


def data_location(data_root: str | None) -> Path | None:
    """The user's data: ``--data-root``, else ``$ZAQBENCH_DATA`` (the suite-wide override
    of the embedded Fashion-MNIST), else None (the embedded default)."""
    location = data_root or os.environ.get("ZAQBENCH_DATA")
    return Path(location).expanduser().resolve() if location else None


def fingerprint(root: Path) -> str:
    """sha256 (16 hex) of every file's relative path and size plus the head and tail bytes of
    up to ``SAMPLED_FILES`` files: one directory walk with a stat per file plus at most 64 small
    reads (not measured on a full ImageNet tree here), and it changes when files are
    added, removed, resized or (for the sampled ones) rewritten."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    sizes = {}
    for path in files:
        try:
            sizes[path] = path.stat().st_size
        except OSError:  # vanished or unreadable: its absence is part of the identity
            continue
        digest.update(f"{path.relative_to(root) if path != root else path.name}\0{sizes[path]}\n".encode())
    listed = [p for p in files if p in sizes]
    step = max(1, len(listed) // SAMPLED_FILES)
    for path in listed[::step][:SAMPLED_FILES]:
        try:
            with open(path, "rb") as f:
                digest.update(f.read(SAMPLED_BYTES))
                if sizes[path] > 2 * SAMPLED_BYTES:
                    f.seek(-SAMPLED_BYTES, os.SEEK_END)
                    digest.update(f.read(SAMPLED_BYTES))
        except OSError:
            continue
    return digest.hexdigest()[:16]


def data_identity(data_root: str | None) -> dict[str, str]:
    """{} for the embedded default data, else {'root': absolute path, 'fingerprint': ...}."""
    location = data_location(data_root)
    if location is None:
        return {}
    return {"root": str(location), "fingerprint": fingerprint(location) if location.exists() else "missing"}


def describe(dataset_name: str, identity: dict[str, str]) -> str:
    """The row's ``dataset`` cell: the name, and for user data its location and fingerprint."""
    if not identity:
        return dataset_name
    return f"{dataset_name}@{identity['root']}#{identity['fingerprint'][:8]}"
