"""The full-precision model P: a user checkpoint, or a teacher the suite trains once and caches."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

from ..adapter import TaskAdapter
from ..checkpoint import SaveError, atomic_save, describe_key_mismatch, extract_state_dict, load_file
from ..devices import pinned_threads
from ..errors import UserError


def teacher_cache_path(adapter: TaskAdapter, cache_dir: Path, task: str) -> Path:
    key_fields = adapter.teacher_key()
    if adapter.data_identity():  # user data: part of the key whatever the adapter's teacher_key says
        key_fields = {**key_fields, "data_identity": adapter.data_identity()}
    key = json.dumps(key_fields, sort_keys=True, default=str)
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
            threads = adapter.teacher_threads if adapter.device.type == "cpu" else None  # a CPU setting
            if threads is not None:
                print(f"[zaqbench] training the teacher with {threads} CPU thread(s) (task.teacher.threads; "
                      f"this process has {torch.get_num_threads()}), so it is the same teacher on any machine",
                      file=sys.stderr)
            with pinned_threads(threads):
                adapter.train_teacher(model)
            try:
                atomic_save(model.state_dict(), path)
            except SaveError as err:  # the trained teacher still serves this run
                print(f"warning: the trained teacher was not cached: {err}", file=sys.stderr)
        source = str(path)
    return model.eval(), source
