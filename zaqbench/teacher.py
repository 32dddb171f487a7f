"""The full-precision model P: a user checkpoint, or a teacher the suite trains once and caches."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from .adapter import TaskAdapter
from .checkpoint import atomic_save, describe_key_mismatch, extract_state_dict, load_file
from .errors import UserError


def teacher_cache_path(adapter: TaskAdapter, cache_dir: Path, task: str) -> Path:
    key = json.dumps(adapter.teacher_key(), sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / "teachers" / f"{task}-{adapter.model_name}-{digest}.pth"


def load_weights(adapter: TaskAdapter, model: nn.Module, path: str | Path, trust: bool) -> None:
    state = extract_state_dict(load_file(path, trust=trust), path)
    problem = describe_key_mismatch(set(model.state_dict()), set(state), path)
    if problem:
        raise UserError(problem)
    try:
        adapter.load_state_dict(model, state)
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
        raise UserError(f"checkpoint '{path}' does not match the model: {detail}") from None


def get_teacher(adapter: TaskAdapter, task: str, cache_dir: Path, checkpoint: str | None = None,
                trust: bool = False) -> tuple[nn.Module, str]:
    """Return (P in eval mode, where its weights came from)."""
    model = adapter.build_model()
    if checkpoint:
        load_weights(adapter, model, checkpoint, trust)
        source = str(checkpoint)
    else:
        path = teacher_cache_path(adapter, cache_dir, task)
        if path.exists():
            load_weights(adapter, model, path, trust=False)
        else:
            adapter.train_teacher(model)
            atomic_save(model.state_dict(), path)
        source = str(path)
    return model.eval(), source
