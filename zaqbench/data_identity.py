"""Which data a run used: a location and a cheap content fingerprint.

The teacher cache key, each job's config hash and each row's ``dataset`` cell carry
it, so a teacher trained on one ``--data-root`` is never reused for another and rows
of different data cannot be mistaken for each other (or skipped as done).
"""
from __future__ import annotations

import hashlib
import json
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


def full_fingerprint(root: Path, cache_file: Path | None = None) -> str:
    """sha256 (16 hex) of every file's relative path and whole content: any edit changes it,
    including an in-place rewrite of a file the sampled fingerprint does not read. Each file's
    hash is kept in ``cache_file`` keyed by its path, size and modification time, so a second
    run re-reads only the files that changed."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    try:
        known = json.loads(cache_file.read_text()) if cache_file and cache_file.exists() else {}
    except (OSError, ValueError):
        known = {}
    seen: dict[str, list] = {}
    digest = hashlib.sha256()
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns]
        entry = known.get(key)
        if entry is None or entry[:2] != stamp:
            file_digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    file_digest.update(chunk)
            entry = [*stamp, file_digest.hexdigest()]
        seen[key] = entry
        digest.update(f"{path.relative_to(root) if path != root else path.name}\0{entry[2]}\n".encode())
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**known, **seen}))
            tmp.replace(cache_file)
        except OSError:  # an unwritable cache costs a re-read next time, nothing else
            pass
    return digest.hexdigest()[:16]


#: the fingerprints a run can take of user data: 'sampled' (sizes plus the bytes of 64 files,
#: the default) or 'full' (every byte, with per-file hashes cached)
FINGERPRINTS = ("sampled", "full")


def data_identity(data_root: str | None, kind: str = "sampled", cache_dir: Path | None = None) -> dict[str, str]:
    """{} for the embedded default data, else {'root': absolute path, 'fingerprint': ...}; a full
    fingerprint says so (``fingerprint_kind``), a sampled one keeps the identity it always had."""
    location = data_location(data_root)
    if location is None:
        return {}
    if not location.exists():
        return {"root": str(location), "fingerprint": "missing"}
    if kind == "full":
        cache_file = Path(cache_dir) / "file_hashes.json" if cache_dir is not None else None
        return {"root": str(location), "fingerprint": full_fingerprint(location, cache_file), "fingerprint_kind": "full"}
    return {"root": str(location), "fingerprint": fingerprint(location)}


def describe(dataset_name: str, identity: dict[str, str]) -> str:
    """The row's ``dataset`` cell: the name, and for user data its location and fingerprint
    (``#full:`` before a full one)."""
    if not identity:
        return dataset_name
    kind = "full:" if identity.get("fingerprint_kind") == "full" else ""
    return f"{dataset_name}@{identity['root']}#{kind}{identity['fingerprint'][:8]}"
